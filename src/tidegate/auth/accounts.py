"""Making and managing credentials: service accounts (with their key files) and API tokens.

The command line (``tidegate service-accounts …``, ``tidegate tokens …``) calls these on
the server's own database; the REST API calls them for a project's admins.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tidegate.auth.tokens import hash_secret, new_api_token, new_key_id, new_key_pair
from tidegate.errors import InvalidArgument
from tidegate.model import ANONYMOUS, Credential, CredentialKind, Role
from tidegate.service.jobs import check_scope
from tidegate.store import Store

__all__ = ["ROLES", "Accounts", "parse_role"]

ROLES = {role.label: role for role in Role}
"""The roles by the names people write: ``viewer``, ``developer``, ``admin``."""
_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def parse_role(text: str) -> Role:
    """A role by name (``viewer``, ``developer``, ``admin``, also as ``roles/dataflow.developer``)."""
    role = ROLES.get(text.strip().lower().removeprefix("roles/dataflow."))
    if role is None:
        raise InvalidArgument(f"unknown role {text!r}: use one of {', '.join(ROLES)}", reason="INVALID_ROLE")
    return role


def _check_name(name: str, what: str) -> None:
    if not _NAME.fullmatch(name) or name == ANONYMOUS:
        raise InvalidArgument(
            f"invalid {what} name {name!r}: 1 to 63 lowercase letters, digits or '-', starting with a letter,"
            f" not ending with '-' (and not {ANONYMOUS!r})",
            reason="INVALID_CREDENTIAL_NAME",
        )


class Accounts:
    """The credentials of every project in one store."""

    def __init__(self, store: Store, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.store = store
        self.clock = clock

    def create_service_account(
        self, name: str, project_id: str, role: Role, token_uri: str, *, created_by: str = ""
    ) -> tuple[Credential, dict[str, Any]]:
        """A new service account and its key file (Google's format; the private key is kept nowhere else)."""
        _check_name(name, "service account")
        check_scope(project_id, None)
        if not token_uri.startswith(("http://", "https://")):
            raise InvalidArgument(
                f"the token URI {token_uri!r} must be an http:// or https:// URL", reason="INVALID_URL"
            )
        private_key, public_key = new_key_pair()
        credential = Credential(
            id=new_key_id(),
            kind=CredentialKind.SERVICE_ACCOUNT,
            name=name,
            project_id=project_id,
            role=role,
            create_time=self.clock(),
            created_by=created_by,
        )
        self.store.add_credential(credential, public_key)
        key_file = {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": credential.id,
            "private_key": private_key,
            "client_email": credential.email,
            "client_id": str(10**20 + secrets.randbelow(9 * 10**20)),
            "token_uri": token_uri,
            "universe_domain": "googleapis.com",
        }
        return credential, key_file

    def create_token(self, name: str, project_id: str, role: Role, *, created_by: str = "") -> tuple[Credential, str]:
        """A new API token: the credential, and the token itself (kept nowhere: only its hash is stored)."""
        _check_name(name, "token")
        check_scope(project_id, None)
        token = new_api_token()
        credential = Credential(
            id=secrets.token_hex(20),
            kind=CredentialKind.TOKEN,
            name=name,
            project_id=project_id,
            role=role,
            create_time=self.clock(),
            created_by=created_by,
        )
        self.store.add_credential(credential, hash_secret(token))
        return credential, token

    def list(self, kind: CredentialKind, project_id: str | None = None) -> list[Credential]:
        if project_id is not None:
            check_scope(project_id, None)
        return self.store.list_credentials(kind, project_id)

    def find(self, kind: CredentialKind, project_id: str, name: str) -> Credential:
        """A credential by name; NOT_FOUND if there is none (a service account also by its email)."""
        check_scope(project_id, None)
        if kind is CredentialKind.SERVICE_ACCOUNT and "@" in name:
            name = name.partition("@")[0]
        return self.store.find_credential(kind, project_id, name)

    def set_disabled(self, kind: CredentialKind, project_id: str, name: str, disabled: bool) -> Credential:
        """Disable a credential (its calls are refused within seconds) or enable it again."""
        credential = self.find(kind, project_id, name)
        self.store.set_credential_disabled(credential.id, disabled)
        return self.find(kind, project_id, name)

    def delete(self, kind: CredentialKind, project_id: str, name: str) -> Credential:
        """Delete a credential for good (calls with it are refused within seconds); the deleted one."""
        credential = self.find(kind, project_id, name)
        self.store.delete_credential(credential.id)
        return credential
