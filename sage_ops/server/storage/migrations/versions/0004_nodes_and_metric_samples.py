"""nodes added over SSH, and the metrics series (issue 6)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "node",
        sa.Column("name", _S(length=64), nullable=False),
        sa.Column("backend", _S(length=16), nullable=False),
        sa.Column("host", _S(length=255), nullable=False),
        sa.Column("user", _S(length=64), nullable=True),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("key_file", _S(length=1024), nullable=True),
        sa.Column("status", _S(length=16), nullable=False),
        sa.Column("detail", _S(length=500), nullable=True),
        sa.Column("ray_node_id", _S(length=64), nullable=True),
        sa.Column("options", _S(), nullable=False),
        sa.Column("added_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "metricsample",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("data", _S(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_metricsample_level_time", "metricsample", ["level", "time"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_metricsample_level_time", table_name="metricsample")
    op.drop_table("metricsample")
    op.drop_table("node")
