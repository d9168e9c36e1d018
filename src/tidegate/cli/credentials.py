"""``tidegate service-accounts …`` and ``tidegate tokens …``: credentials, made on the server's own database.

These commands open the store that ``tidegate server`` uses (``--data-dir`` or
``--database-url``, the same defaults), so they work while it runs, and whoever can open
that database is an admin of every project. A credential made here works at once; one
disabled or deleted is refused within seconds, by every server on that database.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tidegate.cli.client import EXIT_ERROR, EXIT_NOT_FOUND, EXIT_REJECTED, EXIT_USAGE, CliError

__all__ = ["add_credential_commands"]

_KINDS = {"service-accounts": "service account", "tokens": "API token"}


def add_credential_commands(commands: Any) -> None:
    """Add ``service-accounts`` and ``tokens`` to the command line's subcommands."""
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--data-dir", default=None, help="the server's data directory (default: as the server's)")
    store.add_argument(
        "--database-url",
        default=os.environ.get("TIDEGATE_DATABASE_URL"),
        help="the server's PostgreSQL database (postgresql://…), instead of SQLite in the data directory",
    )
    store.add_argument("--format", choices=["table", "json"], default="table")
    one = argparse.ArgumentParser(add_help=False, parents=[store])
    one.add_argument("name", metavar="NAME")
    one.add_argument("--project", required=True, help="the project the credential belongs to")
    roles = ["viewer", "developer", "admin"]
    for command, what in _KINDS.items():
        parser = commands.add_parser(command, help=f"make, list, disable and delete {what}s (on the server's database)")
        actions = parser.add_subparsers(dest="credential_action", required=True)
        create = actions.add_parser("create", parents=[one], help=f"make a {what} with a role in a project")
        create.add_argument("--role", required=True, choices=roles, help="viewer, developer or admin (as Dataflow's)")
        if command == "service-accounts":
            create.add_argument("--key-file", required=True, metavar="PATH", help="where to write its key file")
            create.add_argument(
                "--server",
                default=os.environ.get("TIDEGATE_SERVER", "http://127.0.0.1:8080"),
                help="the server's address as clients reach it (the key file's token_uri points there)",
            )
        create.set_defaults(run_local=_create_service_account if command == "service-accounts" else _create_token)
        listing = actions.add_parser("list", parents=[store], help=f"list the {what}s")
        listing.add_argument("--project", default=None, help="only this project's (default: every project's)")
        listing.set_defaults(run_local=_list)
        for action, text in (("disable", "refuse its calls"), ("enable", "accept its calls again"), ("delete", "")):
            sub = actions.add_parser(action, parents=[one], help=f"{action} a {what}" + (f": {text}" if text else ""))
            sub.set_defaults(run_local=_change)
        parser.set_defaults(credential_kind=command)


def _accounts(args: argparse.Namespace) -> Any:
    from tidegate.auth.accounts import Accounts
    from tidegate.config import Settings, default_data_dir
    from tidegate.store import Store

    settings = Settings(
        data_dir=Path(args.data_dir) if args.data_dir else default_data_dir(), database_url=args.database_url or ""
    )
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        store = Store(settings.store_url)
        store.migrate()
    except Exception as error:
        raise CliError(f"cannot open the store {settings.store_url.split('@')[-1]}: {error}", EXIT_ERROR) from error
    return Accounts(store)


def _kind(args: argparse.Namespace) -> Any:
    from tidegate.model import CredentialKind

    return CredentialKind.SERVICE_ACCOUNT if args.credential_kind == "service-accounts" else CredentialKind.TOKEN


def _guarded(work: Callable[[], Any]) -> Any:
    """Run ``work``; tidegate's errors become the command line's (bad input 2, not found 3, a name taken 4)."""
    from tidegate.errors import AlreadyExists, InvalidArgument, NotFound, TidegateError

    try:
        return work()
    except InvalidArgument as error:
        raise CliError(error.message, EXIT_USAGE) from None
    except NotFound as error:
        raise CliError(error.message, EXIT_NOT_FOUND) from None
    except AlreadyExists as error:
        raise CliError(error.message, EXIT_REJECTED) from None
    except TidegateError as error:
        raise CliError(error.message, EXIT_ERROR) from None


def _row(credential: Any) -> dict[str, Any]:
    row = {
        "name": credential.name,
        "project": credential.project_id,
        "role": credential.role.label,
        "state": "disabled" if credential.disabled else "enabled",
        "created": credential.create_time.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    return {"email": credential.email, **row} if credential.email else row


def _create_service_account(args: argparse.Namespace) -> None:
    from tidegate.auth.accounts import parse_role
    from tidegate.auth.tokens import TOKEN_PATH

    path = Path(args.key_file)
    try:  # the file first: a path that cannot be written leaves no account behind
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CliError(f"the key file {path} exists already: name a new file", EXIT_USAGE) from None
    except OSError as error:
        raise CliError(f"cannot write the key file {path}: {error.strerror or error}", EXIT_USAGE) from None
    try:
        token_uri = args.server.rstrip("/") + TOKEN_PATH
        accounts = _accounts(args)
        credential, key_file = _guarded(
            lambda: accounts.create_service_account(
                args.name, args.project, parse_role(args.role), token_uri, created_by=_local_user()
            )
        )
        with os.fdopen(fd, "w") as out:
            fd = -1
            json.dump(key_file, out, indent=2)
            out.write("\n")
    except BaseException:
        if fd >= 0:
            os.close(fd)
        path.unlink(missing_ok=True)
        raise
    _print(args, {**_row(credential), "keyFile": str(path)})
    print(
        f"Created service account [{credential.email}] ({credential.role.label} in {credential.project_id});"
        f" its key file is {path}.",
        file=sys.stderr,
    )


def _create_token(args: argparse.Namespace) -> None:
    from tidegate.auth.accounts import parse_role

    accounts = _accounts(args)
    credential, token = _guarded(
        lambda: accounts.create_token(args.name, args.project, parse_role(args.role), created_by=_local_user())
    )
    if args.format == "json":
        print(json.dumps({**_row(credential), "token": token}, indent=2))
        return
    print(
        f"Created API token [{credential.name}] ({credential.role.label} in {credential.project_id})."
        " It is shown this once (tidegate keeps only its hash): send it as 'Authorization: Bearer TOKEN',"
        " or set TIDEGATE_TOKEN for the command line.",
        file=sys.stderr,
    )
    print(token)


def _list(args: argparse.Namespace) -> None:
    accounts = _accounts(args)
    rows = [_row(c) for c in _guarded(lambda: accounts.list(_kind(args), args.project))]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("Listed 0 items.")
        return
    keys = ["email" if "email" in rows[0] else "name", "project", "role", "state", "created"]
    headers = [key.upper() for key in keys]
    table = [[str(r[k]) for k in keys] for r in rows]
    widths = [max(len(x) for x in column) for column in zip(headers, *table, strict=False)]
    for line in [headers, *table]:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)).rstrip())


def _change(args: argparse.Namespace) -> None:
    accounts, kind, action = _accounts(args), _kind(args), args.credential_action
    if action == "delete":
        credential = _guarded(lambda: accounts.delete(kind, args.project, args.name))
    else:
        credential = _guarded(lambda: accounts.set_disabled(kind, args.project, args.name, action == "disable"))
    done = {"disable": "Disabled", "enable": "Enabled", "delete": "Deleted"}[action]
    if args.format == "json":
        print(json.dumps(_row(credential), indent=2))
    else:
        print(f"{done} {_KINDS[args.credential_kind]} [{credential.caller}] of project {credential.project_id}.")


def _print(args: argparse.Namespace, row: dict[str, Any]) -> None:
    if args.format == "json":
        print(json.dumps(row, indent=2))
    else:
        print("\n".join(f"{key}: {value}" for key, value in row.items()))


def _local_user() -> str:
    """Who made a credential from the command line: the local user, as the record shows it."""
    try:
        import getpass

        return f"{getpass.getuser()} (command line)"
    except Exception:
        return "command line"
