"""Fixtures shared by every test: stores on real databases, services, a settable clock."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tidegate.lifecycle import JobType
from tidegate.model import NewJob
from tidegate.service.jobs import JobService
from tidegate.service.staging import Staging
from tidegate.store import Store

POSTGRES_URL = os.environ.get("TIDEGATE_TEST_POSTGRES_URL", "")


class Clock:
    """A clock that moves only when told (one microsecond per reading, so times differ)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(microseconds=1)
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _postgres_or_skip() -> str:
    if POSTGRES_URL:
        return POSTGRES_URL
    if os.environ.get("CI"):
        pytest.fail("TIDEGATE_TEST_POSTGRES_URL is not set: CI must test PostgreSQL (run scripts/test)")
    pytest.skip("no PostgreSQL: set TIDEGATE_TEST_POSTGRES_URL (scripts/ensure-postgres prints one)")


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[Callable[[str], Store]]:
    """A factory of fresh, empty stores: ``make_store("sqlite")`` or ``make_store("postgresql")``.

    Each PostgreSQL store lives in a schema of its own, dropped afterwards.
    """
    stores: list[Store] = []
    schemas: list[str] = []

    def make(dialect: str, migrate: bool = True) -> Store:
        if dialect == "sqlite":
            store = Store(f"sqlite:///{tmp_path / f'tidegate-{len(stores)}.db'}")
        else:
            base = _postgres_or_skip()
            schema = f"tg_test_{secrets.token_hex(6)}"
            import psycopg

            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")
            schemas.append(schema)
            separator = "&" if "?" in base else "?"
            store = Store(f"{base}{separator}options=-csearch_path%3D{schema}")
        if migrate:
            store.migrate()
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()
    if schemas:
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, make_store: Callable[[str], Store]) -> Store:
    """A fresh store, once on SQLite and once on PostgreSQL."""
    return make_store(request.param)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(store: Store, clock: Clock, tmp_path: Path) -> JobService:
    """A service over ``store`` that reads staged files from ``tmp_path`` (its one staging root)."""
    return JobService(store, clock=clock, staging=Staging([tmp_path]))


@pytest.fixture
def new_job() -> Callable[..., NewJob]:
    """A factory of create requests with sensible defaults."""
    counter = iter(range(1_000_000))

    def make(**fields: object) -> NewJob:
        values: dict[str, object] = {
            "project_id": "proj",
            "location": "us-central1",
            "name": f"job-{next(counter)}",
            "type": JobType.JOB_TYPE_BATCH,
            "spec": b"",
        }
        values.update(fields)
        return NewJob(**values)  # type: ignore[arg-type]

    return make
