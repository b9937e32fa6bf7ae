"""a waiting job may be held: kept from starting until released (issue 24)

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a database from before migrations was completed from today's models (database._complete_legacy):
    # it may have this column already
    if "held" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("job")}:
        with op.batch_alter_table("job") as batch:
            batch.add_column(sa.Column("held", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_column("held")
