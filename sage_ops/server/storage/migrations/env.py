"""Alembic environment: the store hands over its own connection (see store.upgrade)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from sage_ops.server.storage import tables  # noqa: F401 - registers the tables on SQLModel.metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
