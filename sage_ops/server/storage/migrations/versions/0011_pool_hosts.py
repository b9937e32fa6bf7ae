"""what the elastic pools remember of their hosts, for the next leader (issue 25)

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "poolhost",
        sa.Column("pool", _S(length=64), nullable=False),
        sa.Column("host", _S(length=320), nullable=False),
        sa.Column("state", _S(length=16), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("retry_at", sa.Float(), nullable=False),
        sa.Column("reason", _S(length=500), nullable=False),
        sa.Column("idle_since", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("pool", "host"),
    )


def downgrade() -> None:
    op.drop_table("poolhost")
