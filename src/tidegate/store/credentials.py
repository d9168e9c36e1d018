"""Service accounts, API tokens and access tokens: who may call tidegate, and with which role where.

A credential's secret is never kept: a service account's row holds its public key (the key
file holds the private one), an API token's row the SHA-256 of the token, an access token's
row its SHA-256 too. ``auth_required`` gets its one row with the first credential, and
keeps it when every credential is deleted, so deleting the last one never opens the door.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tidegate.errors import AlreadyExists, NotFound
from tidegate.model import Credential, CredentialKind, Role
from tidegate.store.db import Database, from_micros, micros

__all__ = ["Credentials"]

_COLUMNS = "id, kind, name, project_id, role, disabled, create_time, created_by"
_QUALIFIED = ", ".join(f"c.{column.strip()}" for column in _COLUMNS.split(","))


def _credential(row: Sequence[Any]) -> Credential:
    return Credential(
        id=row[0],
        kind=CredentialKind(row[1]),
        name=row[2],
        project_id=row[3],
        role=Role(int(row[4])),
        disabled=bool(row[5]),
        create_time=from_micros(int(row[6])),
        created_by=row[7],
    )


class Credentials(Database):
    """The ``credentials``, ``access_tokens`` and ``auth_required`` tables."""

    def add_credential(self, credential: Credential, secret: str) -> None:
        """Keep a new credential with its public key or token hash; ALREADY_EXISTS if its name is taken."""
        with self._transaction():
            taken = self._execute(
                "SELECT 1 FROM credentials WHERE kind = %s AND project_id = %s AND name = %s",
                (credential.kind.value, credential.project_id, credential.name),
            ).fetchone()
            if taken:
                what = "service account" if credential.kind is CredentialKind.SERVICE_ACCOUNT else "token"
                raise AlreadyExists(
                    f"project {credential.project_id} already has a {what} named {credential.name!r}",
                    reason="CREDENTIAL_EXISTS",
                )
            self._execute(
                f"INSERT INTO credentials ({_COLUMNS}, secret) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    credential.id,
                    credential.kind.value,
                    credential.name,
                    credential.project_id,
                    int(credential.role),
                    int(credential.disabled),
                    micros(credential.create_time),
                    credential.created_by,
                    secret,
                ),
            )
            if self._execute("SELECT 1 FROM auth_required").fetchone() is None:
                self._execute("INSERT INTO auth_required (since) VALUES (%s)", (micros(credential.create_time),))

    def auth_required(self) -> bool:
        """Whether a credential has ever been made here: then every call needs one."""
        return self._execute("SELECT 1 FROM auth_required").fetchone() is not None

    def list_credentials(self, kind: CredentialKind, project_id: str | None = None) -> list[Credential]:
        """The service accounts or the tokens (of one project when named), by project and name."""
        sql, params = f"SELECT {_COLUMNS} FROM credentials WHERE kind = %s", [kind.value]
        if project_id is not None:
            sql, params = sql + " AND project_id = %s", [*params, project_id]
        rows = self._execute(sql + " ORDER BY project_id, name", params).fetchall()
        return [_credential(row) for row in rows]

    def find_credential(self, kind: CredentialKind, project_id: str, name: str) -> Credential:
        row = self._execute(
            f"SELECT {_COLUMNS} FROM credentials WHERE kind = %s AND project_id = %s AND name = %s",
            (kind.value, project_id, name),
        ).fetchone()
        if row is None:
            what = "service account" if kind is CredentialKind.SERVICE_ACCOUNT else "token"
            raise NotFound(f"project {project_id} has no {what} named {name!r}", reason="CREDENTIAL_NOT_FOUND")
        return _credential(row)

    def set_credential_disabled(self, credential_id: str, disabled: bool) -> None:
        """Disable (or enable again) a credential; a disabled one's access tokens go with it."""
        with self._transaction():
            self._execute("UPDATE credentials SET disabled = %s WHERE id = %s", (int(disabled), credential_id))
            if disabled:
                self._execute("DELETE FROM access_tokens WHERE credential_id = %s", (credential_id,))

    def delete_credential(self, credential_id: str) -> None:
        """Forget a credential and its access tokens."""
        with self._transaction():
            self._execute("DELETE FROM access_tokens WHERE credential_id = %s", (credential_id,))
            self._execute("DELETE FROM credentials WHERE id = %s", (credential_id,))

    def credential_with_secret(self, credential_id: str) -> tuple[Credential, str] | None:
        """A credential by id (a service account's key id) and its public key or token hash."""
        row = self._execute(f"SELECT {_COLUMNS}, secret FROM credentials WHERE id = %s", (credential_id,)).fetchone()
        return None if row is None else (_credential(row), str(row[8]))

    def credential_by_secret(self, kind: CredentialKind, secret: str) -> Credential | None:
        """The credential whose token hash this is."""
        row = self._execute(
            f"SELECT {_COLUMNS} FROM credentials WHERE secret = %s AND kind = %s", (secret, kind.value)
        ).fetchone()
        return None if row is None else _credential(row)

    def add_access_token(self, token_hash: str, credential_id: str, expires: datetime, now: datetime) -> None:
        """Keep an access token given to a service account; those expired go at the same time."""
        with self._transaction():
            self._execute("DELETE FROM access_tokens WHERE expire_time < %s", (micros(now),))
            self._execute(
                "INSERT INTO access_tokens (token_hash, credential_id, expire_time) VALUES (%s, %s, %s)",
                (token_hash, credential_id, micros(expires)),
            )

    def credential_by_access_token(self, token_hash: str, now: datetime) -> Credential | None:
        """The service account an unexpired access token was given to."""
        row = self._execute(
            f"SELECT {_QUALIFIED} FROM access_tokens a JOIN credentials c ON c.id = a.credential_id"
            " WHERE a.token_hash = %s AND a.expire_time > %s",
            (token_hash, micros(now)),
        ).fetchone()
        return None if row is None else _credential(row)
