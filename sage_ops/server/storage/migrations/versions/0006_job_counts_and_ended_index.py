"""jobs counted per (tenant, status) as they change, and an index for "failed since" (issue 10)

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "jobcount",
        sa.Column("tenant", _S(length=64), nullable=False),
        sa.Column("status", _S(length=16), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "status"),
    )
    # the one count over every job, made once here; from now on the writes keep it
    op.execute("INSERT INTO jobcount (tenant, status, n) "
               "SELECT COALESCE(tenant, ''), status, COUNT(*) FROM job GROUP BY COALESCE(tenant, ''), status")
    op.create_index("ix_job_status_ended", "job", ["status", "ended_at"], if_not_exists=True)  # legacy: made already


def downgrade() -> None:
    op.drop_index("ix_job_status_ended", table_name="job")
    op.drop_table("jobcount")
