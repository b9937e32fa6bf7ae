"""job arrays: a task row knows its array and index (issue 24)

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a database from before migrations was completed from today's models (database._complete_legacy)
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("job")}
    if "array_id" not in have:
        with op.batch_alter_table("job") as batch:
            batch.add_column(sa.Column("array_id", sa.String(length=32), nullable=True))
            batch.add_column(sa.Column("array_index", sa.BigInteger(), nullable=True))
    indexes = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("job")}
    if "ix_job_array_seq" not in indexes:
        op.create_index("ix_job_array_seq", "job", ["array_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_job_array_seq", table_name="job")
    with op.batch_alter_table("job") as batch:
        batch.drop_column("array_index")
        batch.drop_column("array_id")
