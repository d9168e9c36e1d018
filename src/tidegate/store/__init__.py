"""The job store: the only part of tidegate that speaks SQL.

``Store.open(url)`` takes ``sqlite:///path/to/tidegate.db`` (the embedded default,
in WAL mode) or ``postgresql://user@host:port/db``. Both hold the same schema.
"""

from tidegate.store.db import schema_statements
from tidegate.store.sql import Change, CreateOutcome, Store

__all__ = ["Change", "CreateOutcome", "Store", "schema_statements"]
