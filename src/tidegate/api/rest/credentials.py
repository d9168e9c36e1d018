"""The token endpoint, and the REST twins of ``tidegate service-accounts …`` and ``tidegate tokens …``.

``POST /token`` answers as Google's OAuth endpoint does: a form (or JSON) with
``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` and ``assertion=JWT`` gets
``{"access_token", "expires_in", "token_type": "Bearer"}``; a refusal is HTTP 400 with
``{"error": "invalid_grant", "error_description": …}``.

A project's admins manage its credentials under ``/tidegate/v1/projects/{project}``:
``serviceAccounts`` and ``tokens``, each with GET (list), POST (create: ``{"name",
"role"}``; the answer holds the key file, or the token, once), ``/{name}:disable``,
``/{name}:enable`` (POST) and ``/{name}`` (DELETE).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from tidegate.api.rest.http import Handler, JsonResponse, caller_of, internal_response, read_body
from tidegate.auth import Gate, Permission, TokenError
from tidegate.auth.accounts import Accounts, parse_role
from tidegate.auth.tokens import TOKEN_PATH
from tidegate.errors import InvalidArgument, TidegateError
from tidegate.model import Credential, CredentialKind

__all__ = ["CredentialRoutes", "credential_to_dict"]

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_KINDS = {"serviceAccounts": CredentialKind.SERVICE_ACCOUNT, "tokens": CredentialKind.TOKEN}


def credential_to_dict(credential: Credential) -> dict[str, Any]:
    """A credential as JSON (never its secret)."""
    body: dict[str, Any] = {
        "name": credential.name,
        "projectId": credential.project_id,
        "role": credential.role.label,
        "disabled": credential.disabled,
        "createTime": credential.create_time.isoformat().replace("+00:00", "Z"),
        "createdBy": credential.created_by,
    }
    if credential.email:
        body["email"] = credential.email
        body["keyId"] = credential.id
    return body


class CredentialRoutes:
    """The token endpoint and the credential handlers, over one gate's store."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.accounts = Accounts(gate.store)

    def routes(self) -> dict[str, dict[str, tuple[Handler, Permission]]]:
        manage = Permission.CREDENTIALS_MANAGE
        paths: dict[str, dict[str, tuple[Handler, Permission]]] = {}
        for collection, kind in _KINDS.items():
            base = f"/tidegate/v1/projects/{{project_id}}/{collection}"
            handlers = self._handlers(collection, kind)
            paths[base] = {"GET": (handlers["list"], manage), "POST": (handlers["create"], manage)}
            paths[base + "/{name}"] = {"DELETE": (handlers["delete"], manage)}
            paths[base + "/{name}:disable"] = {"POST": (handlers["disable"], manage)}
            paths[base + "/{name}:enable"] = {"POST": (handlers["enable"], manage)}
        return paths

    def _handlers(self, collection: str, kind: CredentialKind) -> dict[str, Handler]:
        """The handlers of one kind of credential, by what they do."""

        async def list_credentials(request: Request) -> Response:
            found = self.accounts.list(kind, request.path_params["project_id"])
            return JsonResponse({collection: [credential_to_dict(c) for c in found]})

        async def create(request: Request) -> Response:
            return await self._create(request, kind)

        async def disable(request: Request) -> Response:
            return self._set_disabled(request, kind, True)

        async def enable(request: Request) -> Response:
            return self._set_disabled(request, kind, False)

        async def delete(request: Request) -> Response:
            params = request.path_params
            self.accounts.delete(kind, params["project_id"], params["name"])
            return JsonResponse({})

        return {"list": list_credentials, "create": create, "disable": disable, "enable": enable, "delete": delete}

    async def token(self, request: Request) -> Response:
        """The token endpoint: a service account's signed assertion in, an access token out."""
        try:
            raw = await read_body(request)
            form = _form(raw, request.headers.get("content-type", ""))
            answer = await run_in_threadpool(self.gate.grant, form)
        except TokenError as error:
            return JsonResponse(error.body(), status_code=400, headers=_NO_STORE)
        except TidegateError as error:
            return JsonResponse({"error": "invalid_request", "error_description": error.message}, status_code=400)
        except Exception as exc:
            return internal_response(request, exc)
        return JsonResponse(answer, headers=_NO_STORE)

    async def _create(self, request: Request, kind: CredentialKind) -> Response:
        """A new credential in the path's project (an admin's role there is the highest: any role may be given)."""
        project_id = request.path_params["project_id"]
        try:
            body = json.loads(await read_body(request) or b"{}")
        except ValueError as error:
            raise InvalidArgument(f"the body is not JSON: {error}", reason="INVALID_JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            raise InvalidArgument('the body must be {"name": NAME, "role": ROLE}', reason="MISSING_NAME")
        name, role, by = body["name"], parse_role(str(body.get("role") or "viewer")), caller_of(request).name
        if kind is CredentialKind.SERVICE_ACCOUNT:
            token_uri = f"{request.url.scheme}://{request.url.netloc}{TOKEN_PATH}"
            credential, key_file = await run_in_threadpool(  # an RSA key takes a moment to make
                lambda: self.accounts.create_service_account(name, project_id, role, token_uri, created_by=by)
            )
            return JsonResponse({"serviceAccount": credential_to_dict(credential), "keyFile": key_file})
        credential, token = self.accounts.create_token(name, project_id, role, created_by=by)
        return JsonResponse({"token": credential_to_dict(credential), "secret": token})

    def _set_disabled(self, request: Request, kind: CredentialKind, disabled: bool) -> Response:
        params = request.path_params
        credential = self.accounts.set_disabled(kind, params["project_id"], params["name"], disabled)
        return JsonResponse(credential_to_dict(credential))


def _form(raw: bytes, content_type: str) -> dict[str, str]:
    """The token request's fields: a form, as Google's clients post it, or a JSON object."""
    text = raw.decode("utf-8", "replace")
    if "json" in content_type:
        try:
            data = json.loads(text or "{}")
        except ValueError:
            raise TokenError("invalid_request", "the body is not JSON") from None
        if not isinstance(data, dict):
            raise TokenError("invalid_request", "the body must be a JSON object")
        return {str(k): str(v) for k, v in data.items()}
    return dict(parse_qsl(text, keep_blank_values=True))
