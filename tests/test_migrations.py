"""Migrations: what `alembic upgrade head` creates is what the models describe."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from service import store
from service.store.base import SCHEMA_COMPARISON


def _differences(connection: Any) -> list[Any]:
    # Compared as autogenerate compares (the options say why server defaults are not).
    context = MigrationContext.configure(connection, opts=dict(SCHEMA_COMPARISON))
    return list(compare_metadata(context, store.Base.metadata))


async def test_migrated_schema_matches_the_models(engine):
    """The `engine` fixture ran `store.upgrade` (alembic upgrade head)."""
    async with engine.connect() as connection:
        differences = await connection.run_sync(_differences)

    assert differences == []
