"""Where the command line points: the server, the project and the region, as ``gcloud config`` keeps them.

Each setting comes from, first to last: its flag (``--server``), its environment variable
(``TIDEGATE_SERVER``), the user's config file, its default. The config file is TOML
(``server = "http://…"``), at ``$TIDEGATE_CONFIG``, else ``$XDG_CONFIG_HOME/tidegate/config.toml``,
else ``~/.config/tidegate/config.toml``; ``tidegate config set|get|list|unset`` edit and read it.

``effective()`` answers every setting with where it came from; other commands (and code
that needs a setting of its own, such as a credential) read their settings through it.
A new setting is one more ``Key`` in ``KEYS``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import tomli_w

from tidegate.cli.client import EXIT_USAGE, CliError
from tidegate.cli.output import table

__all__ = [
    "KEYS",
    "Key",
    "Setting",
    "apply",
    "config_path",
    "effective",
    "read_config",
    "register",
]


def _check_server(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise CliError(f"server must be an http:// or https:// URL with a host, not {value!r}", EXIT_USAGE)
    return value.rstrip("/")


def _check_word(name: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not value.strip() or value != value.strip():
            raise CliError(f"{name} must not be empty or start or end with a space: {value!r}", EXIT_USAGE)
        return value

    return check


def _check_token(value: str) -> str:
    if value != value.strip() or any(c.isspace() for c in value):
        raise CliError("token must be one word (what `tidegate tokens create` printed)", EXIT_USAGE)
    return value


def shown(key: Key, value: str) -> str:
    """A setting's value as ``config get|list`` print it: a secret masked but for its last four characters."""
    if key.secret and value:
        return "*" * 8 + value[-4:]
    return value


@dataclass(frozen=True)
class Key:
    """A setting: its name (also its flag's and its config key's), environment variable and default."""

    name: str
    env: str
    default: str
    check: Callable[[str], str]
    help: str
    secret: bool = False
    """Shown masked by ``config list`` and ``config get`` (an API token)."""


KEYS: dict[str, Key] = {
    key.name: key
    for key in (
        Key("server", "TIDEGATE_SERVER", "http://127.0.0.1:8080", _check_server, "the tidegate server's REST URL"),
        Key("project", "TIDEGATE_PROJECT", "local", _check_word("project"), "the project of the jobs"),
        Key("region", "TIDEGATE_REGION", "us-central1", _check_word("region"), "the region (location) of the jobs"),
        Key("token", "TIDEGATE_TOKEN", "", _check_token, "the API token to call the server with", secret=True),
    )
}


@dataclass(frozen=True)
class Setting:
    """A setting's value and where it came from: ``flag``, its environment variable, ``config file`` or ``default``."""

    value: str
    source: str


def config_path() -> Path:
    """``$TIDEGATE_CONFIG``, else ``$XDG_CONFIG_HOME/tidegate/config.toml``, else ``~/.config/tidegate/config.toml``."""
    if env := os.environ.get("TIDEGATE_CONFIG"):
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tidegate" / "config.toml"


def read_config(path: Path | None = None) -> dict[str, str]:
    """The config file's settings (none when there is no file); a file that is not TOML is bad usage."""
    path = path or config_path()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise CliError(f"cannot read the config file {path}: {error}", EXIT_USAGE) from error
    return {str(k): str(v) for k, v in data.items() if not isinstance(v, dict | list)}


def _write_config(values: Mapping[str, str], path: Path) -> None:
    """Write the whole file at once (a file beside it, renamed): never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".toml")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(tomli_w.dumps(dict(sorted(values.items()))))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def effective(flags: Mapping[str, str | None] | None = None) -> dict[str, Setting]:
    """Every setting in ``KEYS``: its flag's value if given, else its environment variable, config file, default."""
    flags = flags or {}
    stored = read_config()
    found: dict[str, Setting] = {}
    for name, key in KEYS.items():
        flag, env = flags.get(name), os.environ.get(key.env)
        if flag is not None:
            found[name] = Setting(flag, "flag")
        elif env:
            found[name] = Setting(env, key.env)
        elif name in stored:
            found[name] = Setting(stored[name], "config file")
        else:
            found[name] = Setting(key.default, "default")
    return found


def apply(args: argparse.Namespace) -> None:
    """Fill the parsed ``--server``, ``--project`` and ``--region`` that were not given from the other sources."""
    names = [name for name in KEYS if hasattr(args, name)]
    settings = effective({name: getattr(args, name) for name in names})
    for name in names:
        setting = settings[name]
        try:
            value = KEYS[name].check(setting.value)
        except CliError as error:
            where = {"flag": f"--{name}", "config file": f"the config file {config_path()}"}.get(
                setting.source, setting.source
            )
            raise CliError(f"{error} (from {where})", EXIT_USAGE) from None
        setattr(args, name, value)


# -- tidegate config set|get|list|unset ---------------------------------------------------------


def _known(name: str) -> Key:
    if name not in KEYS:
        raise CliError(f"unknown setting {name!r} (known: {', '.join(KEYS)})", EXIT_USAGE)
    return KEYS[name]


def cmd_set(args: argparse.Namespace) -> None:
    key = _known(args.key)
    value = key.check(args.value)
    path = config_path()
    values = read_config(path)
    values[key.name] = value
    _write_config(values, path)
    print(f"Updated property [{key.name}].")
    if os.environ.get(key.env):
        print(f"WARNING: {key.env} is set and takes precedence over the config file.", file=sys.stderr)


def cmd_unset(args: argparse.Namespace) -> None:
    key = _known(args.key)
    path = config_path()
    values = read_config(path)
    if values.pop(key.name, None) is not None:
        _write_config(values, path)
    print(f"Unset property [{key.name}].")


def cmd_get(args: argparse.Namespace) -> None:
    """The setting's effective value (what a command would use without its flag)."""
    _known(args.key)
    setting = effective()[args.key]
    value = shown(KEYS[args.key], setting.value)
    if args.format == "json":
        print(json.dumps({"value": value, "source": setting.source}))
    else:
        print(value)


def cmd_list(args: argparse.Namespace) -> None:
    """Every setting, its effective value and where it comes from."""
    settings = effective()
    if args.format == "json":
        data = {name: {"value": shown(KEYS[name], s.value), "source": s.source} for name, s in settings.items()}
        print(json.dumps({"configFile": str(config_path()), "settings": data}, indent=2))
        return
    print(
        table(
            [[name, shown(KEYS[name], s.value), s.source] for name, s in settings.items()], ["KEY", "VALUE", "SOURCE"]
        )
    )
    print(f"(config file: {config_path()})", file=sys.stderr)


def register(commands: argparse._SubParsersAction[Any], parser_class: type) -> None:
    """``tidegate config …``."""
    config = commands.add_parser(
        "config",
        help="the default server, project and region (as gcloud config)",
        description="Settings the other commands use when their flag is not given. Precedence: the flag, then"
        " the environment variable (TIDEGATE_SERVER, TIDEGATE_PROJECT, TIDEGATE_REGION), then the config file"
        f" ({config_path()}; TIDEGATE_CONFIG names another), then the default.",
    )
    actions: argparse._SubParsersAction[Any] = config.add_subparsers(
        dest="action", required=True, parser_class=parser_class
    )
    keys = ", ".join(KEYS)
    set_ = actions.add_parser("set", help=f"store a setting in the config file ({keys})")
    set_.add_argument("key", metavar="KEY")
    set_.add_argument("value", metavar="VALUE")
    set_.set_defaults(run=cmd_set)
    unset = actions.add_parser("unset", help="remove a setting from the config file")
    unset.add_argument("key", metavar="KEY")
    unset.set_defaults(run=cmd_unset)
    for name, run, text in (
        ("get", cmd_get, "print a setting's effective value"),
        ("list", cmd_list, "every setting, its value and where it comes from"),
    ):
        action = actions.add_parser(name, help=text)
        if name == "get":
            action.add_argument("key", metavar="KEY")
        action.add_argument("--format", choices=["table", "json"], default="table")
        action.set_defaults(run=run)
