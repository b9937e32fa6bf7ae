"""tenants, roles and quotas, local users, token lifecycle, the access audit (issue 5)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database made before migrations was completed from the current models (database.py):
    # it may have these already.
    insp = sa.inspect(op.get_bind())
    have = {c["name"] for c in insp.get_columns("token")}
    tables = set(insp.get_table_names())
    new_columns = [
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False, server_default="member"),
        sa.Column("rate_limit", sa.Float(), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.Column("last_used_at", sa.Float(), nullable=True),
    ]
    with op.batch_alter_table("token", schema=None) as batch_op:
        for col in new_columns:
            if col.name not in have:
                batch_op.add_column(col)
    op.execute("UPDATE token SET role = 'admin' WHERE admin")
    for name, *columns in _TABLES:
        if name not in tables:
            op.create_table(name, *columns)
    if "ix_auditevent_time" not in {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("auditevent")}:
        op.create_index("ix_auditevent_time", "auditevent", ["time"], unique=False)


_TABLES = [
    (
        "tenant",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("max_running", sa.Integer(), nullable=True),
        sa.Column("max_cpu", sa.Float(), nullable=True),
        sa.Column("max_gpu", sa.Float(), nullable=True),
        sa.Column("max_queued", sa.Integer(), nullable=True),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    ),
    (
        "peeruser",
        sa.Column("uid", sa.Integer(), nullable=False),
        sa.Column("tenant", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.PrimaryKeyConstraint("uid"),
    ),
    (
        "auditevent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("tenant", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("target", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    ),
]


def downgrade() -> None:
    op.drop_table("auditevent")
    op.drop_table("peeruser")
    op.drop_table("tenant")
    with op.batch_alter_table("token", schema=None) as batch_op:
        for col in ("last_used_at", "revoked_at", "expires_at", "rate_limit", "role"):
            batch_op.drop_column(col)
