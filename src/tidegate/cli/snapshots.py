"""``tidegate snapshots list|describe|create|delete``, after ``gcloud dataflow snapshots``."""

from __future__ import annotations

import argparse
import re
from typing import Any

from tidegate.cli.client import Client, job_path, segment
from tidegate.cli.output import each, emit, key_values, table

__all__ = ["register"]

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _ttl(text: str) -> str:
    """``7d``, ``12h``, ``30m`` or ``90s`` as a protobuf Duration (``604800s``)."""
    found = _DURATION.match(text.strip())
    if not found:
        raise argparse.ArgumentTypeError(f"not a duration (such as 7d, 12h, 30m, 90s): {text}")
    seconds = int(found.group(1)) * _UNIT_SECONDS[found.group(2)]
    if seconds < 1:
        raise argparse.ArgumentTypeError(f"must be at least one second: {text}")
    return f"{seconds}s"


def _path(args: argparse.Namespace, snapshot_id: str = "") -> str:
    base = f"/v1b3/projects/{segment(args.project)}/locations/{segment(args.region)}/snapshots"
    return f"{base}/{segment(snapshot_id)}" if snapshot_id else base


def cmd_list(args: argparse.Namespace, client: Client) -> None:
    params = {"jobId": args.job_id} if args.job_id else None
    snapshots: list[dict[str, Any]] = client.call("GET", _path(args), params=params).get("snapshots", [])
    rows = [
        [
            s.get("id", ""),
            s.get("sourceJobId", ""),
            s.get("creationTime", ""),
            s.get("ttl", ""),
            s.get("state", ""),
            s.get("description", ""),
        ]
        for s in snapshots
    ]
    headers = ["SNAPSHOT_ID", "SOURCE_JOB_ID", "CREATION_TIME", "TTL", "STATE", "DESCRIPTION"]
    emit(args, snapshots, table(rows, headers) if rows else "Listed 0 items.")


def cmd_describe(args: argparse.Namespace, client: Client) -> None:
    snapshot = client.call("GET", _path(args, args.snapshot_id))
    emit(args, snapshot, key_values(snapshot))


def cmd_create(args: argparse.Namespace, client: Client) -> None:
    """SnapshotJob: a savepoint of a running streaming job; it answers once the snapshot is taken (or failed)."""
    body: dict[str, Any] = {"ttl": args.snapshot_ttl, "snapshotSources": args.snapshot_sources}
    if args.description:
        body["description"] = args.description
    snapshot = client.call("POST", job_path(args, args.job_id) + ":snapshot", body=body)
    emit(args, snapshot, key_values(snapshot))


def cmd_delete(args: argparse.Namespace, client: Client) -> None:
    each(
        args,
        args.snapshot_ids,
        lambda snapshot_id: {"id": snapshot_id, **client.call("DELETE", _path(args, snapshot_id))},
        lambda snapshot_id, _: f"Deleted snapshot [{snapshot_id}].",
        what="snapshot",
    )


def register(commands: argparse._SubParsersAction[Any], common: argparse.ArgumentParser, parser_class: type) -> None:
    """``tidegate snapshots …``."""
    snapshots = commands.add_parser("snapshots", help="list, describe, create and delete snapshots of streaming jobs")
    actions: argparse._SubParsersAction[Any] = snapshots.add_subparsers(
        dest="action", required=True, parser_class=parser_class
    )
    listing = actions.add_parser("list", parents=[common], help="list the region's snapshots (or one job's)")
    listing.add_argument("--job-id", help="only this job's snapshots")
    listing.set_defaults(run=cmd_list)
    describe = actions.add_parser("describe", parents=[common], help="show one snapshot")
    describe.add_argument("snapshot_id", metavar="SNAPSHOT_ID")
    describe.set_defaults(run=cmd_describe)
    create = actions.add_parser("create", parents=[common], help="snapshot a running streaming job (a savepoint)")
    create.add_argument("--job-id", required=True, help="the job to snapshot")
    create.add_argument(
        "--snapshot-ttl", type=_ttl, default="604800s", metavar="DURATION", help="how long it is kept (default 7d)"
    )
    create.add_argument(
        "--snapshot-sources", action="store_true", help="also snapshot the sources (accepted; tidegate ignores it)"
    )
    create.add_argument("--description", default="")
    create.set_defaults(run=cmd_create)
    delete = actions.add_parser("delete", parents=[common], help="delete snapshots")
    delete.add_argument("snapshot_ids", nargs="+", metavar="SNAPSHOT_ID")
    delete.set_defaults(run=cmd_delete)
