"""Who may call tidegate, and what each caller may do.

- ``roles``: the permissions each call needs, the role (viewer, developer, admin) that
  holds each, and the ``Caller``;
- ``tokens``: key pairs, API and access tokens, and the verification of the JWTs that
  Google's clients sign with a service account's key;
- ``gate``: the ``Gate`` every call passes (authentication, authorization) and the token
  endpoint's grant;
- ``accounts``: making, listing, disabling and deleting service accounts and API tokens.

The API adapters call the gate once per call; the store keeps the credentials.
"""

from tidegate.auth.gate import Gate, TokenError
from tidegate.auth.roles import OPEN, Caller, Permission

__all__ = ["OPEN", "Caller", "Gate", "Permission", "TokenError"]
