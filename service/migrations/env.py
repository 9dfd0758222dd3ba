"""Alembic environment: runs on the connection `store.upgrade` hands in; the models'
metadata is the target autogenerate compares the migrated database with."""

from alembic import context

from service.store import Base
from service.store.base import SCHEMA_COMPARISON

target_metadata = Base.metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=True,
    **SCHEMA_COMPARISON,
)
with context.begin_transaction():
    context.run_migrations()
