"""an attempt's CPU time and peak memory, as its runner measured them (issue 22)

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a database from before migrations was completed from today's models (database._complete_legacy):
    # it may have these columns already
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("attempt")}
    with op.batch_alter_table("attempt") as batch:
        if "cpu_seconds" not in have:
            batch.add_column(sa.Column("cpu_seconds", sa.Float(), nullable=True))
        if "max_rss_bytes" not in have:
            batch.add_column(sa.Column("max_rss_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempt") as batch:
        batch.drop_column("max_rss_bytes")
        batch.drop_column("cpu_seconds")
