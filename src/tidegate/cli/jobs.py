"""``tidegate jobs …``, after ``gcloud dataflow jobs``: list, describe, cancel, drain, messages, history,
metrics, update-options, follow and logs."""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from typing import Any

from tidegate.cli.client import EXIT_USAGE, Client, CliError, job_path, segment, short_state
from tidegate.cli.follow import POLL_SECONDS, Follower, Interrupts, Patient, failure_cause, follow, outcome
from tidegate.cli.output import each, emit, key_values, table

__all__ = ["IMPORTANCES", "register"]

IMPORTANCES = ["debug", "detailed", "basic", "warning", "error"]
_STATUS_FILTERS = {"all": "ALL", "active": "ACTIVE", "terminated": "TERMINATED"}
_SERVICE_ORIGIN = "dataflow/v1b3"


def _pages(client: Client, path: str, params: dict[str, Any], key: str, limit: int | None = None) -> list[Any]:
    """Every item of a paged listing (up to ``limit``)."""
    items: list[Any] = []
    params = dict(params)
    while limit is None or len(items) < limit:
        page = client.call("GET", path, params=params)
        items.extend(page.get(key, []))
        if not page.get("nextPageToken"):
            break
        params["pageToken"] = page["nextPageToken"]
    return items if limit is None else items[:limit]


def cmd_list(args: argparse.Namespace, client: Client) -> None:
    params: dict[str, Any] = {"filter": _STATUS_FILTERS[args.status], "pageSize": min(args.limit, 1000)}
    path = f"/v1b3/projects/{segment(args.project)}/jobs:aggregated" if args.all_regions else job_path(args)
    jobs = _pages(client, path, params, "jobs", args.limit)
    rows = [
        [
            j["id"],
            j.get("name", ""),
            j.get("type", "").removeprefix("JOB_TYPE_").title(),
            j.get("createTime", ""),
            short_state(j.get("currentState")),
            j.get("location", ""),
        ]
        for j in jobs
    ]
    headers = ["JOB_ID", "NAME", "TYPE", "CREATION_TIME", "STATE", "REGION"]
    emit(args, jobs, table(rows, headers) if rows else "Listed 0 items.")


def _error_messages(args: argparse.Namespace, client: Client, job_id: str) -> list[str]:
    params = {"minimumImportance": "JOB_MESSAGE_ERROR", "pageSize": 1000}
    messages = _pages(client, job_path(args, job_id) + "/messages", params, "jobMessages")
    return [str(m.get("messageText", "")) for m in messages if m.get("messageImportance") == "JOB_MESSAGE_ERROR"]


def cmd_describe(args: argparse.Namespace, client: Client) -> None:
    """The job; a failed one's text also says why (the root exception of its last error message)."""
    job = client.call("GET", job_path(args, args.job_id), params={"view": "JOB_VIEW_ALL"} if args.full else None)
    text = key_values(job)
    if job.get("currentState") == "JOB_STATE_FAILED":
        text += f"\nfailureCause: {failure_cause(_error_messages(args, client, str(job['id'])))}"
    emit(args, job, text)


def _request_state(args: argparse.Namespace, client: Client, state: str, verb: str) -> None:
    each(
        args,
        args.job_ids,
        lambda job_id: client.call("PUT", job_path(args, job_id), body={"requestedState": state}),
        lambda job_id, job: f"{verb} job [{job_id}]: now {short_state(job.get('currentState'))}.",
    )


def cmd_cancel(args: argparse.Namespace, client: Client) -> None:
    _request_state(args, client, "JOB_STATE_CANCELLED", "Cancelled")


def cmd_drain(args: argparse.Namespace, client: Client) -> None:
    _request_state(args, client, "JOB_STATE_DRAINED", "Started draining")


def cmd_messages(args: argparse.Namespace, client: Client) -> None:
    params = {"minimumImportance": f"JOB_MESSAGE_{args.importance.upper()}", "pageSize": 1000}
    messages = _pages(client, job_path(args, args.job_id) + "/messages", params, "jobMessages")
    rows = [
        [m.get("time", ""), m.get("messageImportance", "").removeprefix("JOB_MESSAGE_"), m.get("messageText", "")]
        for m in messages
    ]
    emit(args, messages, table(rows, ["TIME", "IMPORTANCE", "TEXT"]) if rows else "Listed 0 items.")


def cmd_history(args: argparse.Namespace, client: Client) -> None:
    path = job_path(args, args.job_id, prefix="/tidegate/v1") + "/history"
    history = client.call("GET", path)["stateHistory"]
    rows = [
        [
            h["time"],
            short_state(h["fromState"]) or "-",
            short_state(h["toState"]),
            h.get("caller") or h["actor"],
            h["reason"],
        ]
        for h in history
    ]
    emit(args, history, table(rows, ["TIME", "FROM", "TO", "BY", "REASON"]))


def _value(metric: dict[str, Any]) -> str:
    for kind in ("scalar", "meanSum", "set", "distribution", "gauge", "internal"):
        if kind in metric:
            value = metric[kind]
            if isinstance(value, float) and value.is_integer():
                return str(int(value))
            return json.dumps(value) if isinstance(value, dict | list) else str(value)
    return ""


def cmd_metrics(args: argparse.Namespace, client: Client) -> None:
    """The job's metrics (GetJobMetrics), committed ones unless ``--tentative``, as ``gcloud dataflow metrics list``."""
    answer = client.call("GET", job_path(args, args.job_id) + "/metrics")
    wanted = "true" if args.tentative else "false"
    metrics = []
    for metric in answer.get("metrics", []):
        name = metric.get("name", {})
        context = name.get("context", {})
        if context.get("tentative", "false") != wanted:
            continue
        origin = name.get("origin", "")
        if (args.source == "service" and origin != _SERVICE_ORIGIN) or (
            args.source == "user" and origin == _SERVICE_ORIGIN
        ):
            continue
        metrics.append(metric)
    rows = [
        [
            m["name"].get("name", ""),
            m["name"].get("context", {}).get("step", ""),
            _value(m),
            m["name"].get("origin", ""),
            m.get("updateTime", ""),
        ]
        for m in metrics
    ]
    text = table(rows, ["NAME", "STEP", "VALUE", "ORIGIN", "UPDATE_TIME"]) if rows else "Listed 0 items."
    emit(args, {**answer, "metrics": metrics}, text)


def cmd_update_options(args: argparse.Namespace, client: Client) -> None:
    """UpdateJob with ``updateMask=runtime_updatable_params.…``, exactly as ``gcloud dataflow jobs update-options``."""
    params: dict[str, Any] = {}
    mask: list[str] = []
    if args.min_num_workers is not None:
        params["minNumWorkers"] = args.min_num_workers
        mask.append("runtime_updatable_params.min_num_workers")
    if args.max_num_workers is not None:
        params["maxNumWorkers"] = args.max_num_workers
        mask.append("runtime_updatable_params.max_num_workers")
    if args.worker_utilization_hint is not None or args.unset_worker_utilization_hint:
        if args.worker_utilization_hint is not None:
            params["workerUtilizationHint"] = args.worker_utilization_hint
        mask.append("runtime_updatable_params.worker_utilization_hint")
    if not mask:
        raise CliError(
            "update-options needs at least one of --min-num-workers, --max-num-workers, --worker-utilization-hint"
            " and --unset-worker-utilization-hint",
            EXIT_USAGE,
        )
    if (
        args.min_num_workers is not None
        and args.max_num_workers is not None
        and args.min_num_workers > args.max_num_workers
    ):
        raise CliError("--min-num-workers must not be more than --max-num-workers", EXIT_USAGE)
    job = client.call(
        "PUT",
        job_path(args, args.job_id),
        params={"updateMask": ",".join(mask)},
        body={"runtimeUpdatableParams": params},
    )
    emit(args, job, f"Updated job [{args.job_id}]: {json.dumps(job.get('runtimeUpdatableParams', params))}")


def cmd_follow(args: argparse.Namespace, client: Client) -> None:
    """Follow a job until it ends, across server restarts; the exit code says how it ended (as ``tidegate run``)."""
    path = job_path(args, args.job_id)
    client.call("GET", path)  # no such job: say so at once, not after retrying
    follower = Follower(client, path, f"JOB_MESSAGE_{args.importance.upper()}", args.verbose)
    with Interrupts(cancels=False) as interrupts:
        try:
            final = follow(follower, interrupts, args.job_id)
        except KeyboardInterrupt:
            raise CliError(f"stopped following; job {args.job_id} goes on", 130) from None
    code = outcome(final, follower, False)
    if code:
        raise SystemExit(code)


def cmd_logs(args: argparse.Namespace, client: Client) -> None:
    """What the job's processes printed, oldest first; ``--follow``: and what they print, until the job has ended."""
    path = job_path(args, args.job_id, prefix="/tidegate/v1") + "/logs"
    patient = Patient(client, f"the logs of job {args.job_id}")
    offset, kept = "", []
    while True:
        params = {"offset": offset, "pageSize": 1000}
        page = (
            patient(partial(client.call, "GET", path, params=params))
            if args.follow
            else client.call("GET", path, params=params)
        )
        entries = page.get("entries", [])
        offset = page.get("nextOffset") or offset
        for entry in entries:
            if args.format == "json" and not args.follow:
                kept.append(entry)
            elif args.format == "json":
                print(json.dumps(entry), flush=True)
            else:
                print(entry.get("text", ""), flush=args.follow)
        if entries:
            continue
        if not args.follow or page.get("complete"):
            break
        time.sleep(POLL_SECONDS)
    if args.format == "json" and not args.follow:
        print(json.dumps(kept, indent=2))


def _positive(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _hint(text: str) -> float:
    value = float(text)
    if not 0.1 <= value <= 0.9:
        raise argparse.ArgumentTypeError(f"must be between 0.1 and 0.9: {text}")
    return value


def register(commands: argparse._SubParsersAction[Any], common: argparse.ArgumentParser, parser_class: type) -> None:
    """``tidegate jobs …``."""
    jobs = commands.add_parser("jobs", help="list, describe, follow, cancel, drain and update jobs")
    actions: argparse._SubParsersAction[Any] = jobs.add_subparsers(
        dest="action", required=True, parser_class=parser_class
    )

    listing = actions.add_parser("list", parents=[common], help="list jobs")
    listing.add_argument("--status", choices=sorted(_STATUS_FILTERS), default="all")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--all-regions", action="store_true", help="list jobs of every region")
    listing.set_defaults(run=cmd_list)
    describe = actions.add_parser("describe", parents=[common], help="show one job (a failed one: why)")
    describe.add_argument("job_id", metavar="JOB_ID")
    describe.add_argument("--full", action="store_true", help="the whole job (JOB_VIEW_ALL)")
    describe.set_defaults(run=cmd_describe)
    for name, run, text in (("cancel", cmd_cancel, "cancel jobs"), ("drain", cmd_drain, "drain streaming jobs")):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("job_ids", nargs="+", metavar="JOB_ID")
        action.set_defaults(run=run)
    messages = actions.add_parser("messages", parents=[common], help="show a job's messages")
    messages.add_argument("job_id", metavar="JOB_ID")
    messages.add_argument("--importance", choices=IMPORTANCES, default="detailed")
    messages.set_defaults(run=cmd_messages)
    history = actions.add_parser("history", parents=[common], help="show a job's state changes")
    history.add_argument("job_id", metavar="JOB_ID")
    history.set_defaults(run=cmd_history)

    metrics = actions.add_parser("metrics", parents=[common], help="show a job's metrics")
    metrics.add_argument("job_id", metavar="JOB_ID")
    metrics.add_argument("--tentative", action="store_true", help="the tentative values instead of the committed ones")
    metrics.add_argument(
        "--source", choices=["all", "service", "user"], default="all", help="the service's metrics, the user's, or all"
    )
    metrics.set_defaults(run=cmd_metrics)

    update = actions.add_parser(
        "update-options", parents=[common], help="change a running job's autoscaling options (runtime_updatable_params)"
    )
    update.add_argument("job_id", metavar="JOB_ID")
    update.add_argument("--min-num-workers", "--min-workers", type=_positive, metavar="N", dest="min_num_workers")
    update.add_argument("--max-num-workers", "--max-workers", type=_positive, metavar="N", dest="max_num_workers")
    hint = update.add_mutually_exclusive_group()
    hint.add_argument("--worker-utilization-hint", type=_hint, metavar="X", help="target CPU utilization, 0.1 to 0.9")
    hint.add_argument("--unset-worker-utilization-hint", action="store_true")
    update.set_defaults(run=cmd_update_options)

    follow_parser = actions.add_parser(
        "follow",
        parents=[common],
        help="follow a job's state and messages until it ends (re-attaches after a server restart)",
        description="Show the job's messages and state changes until it ends, waiting out a server that is"
        " restarting. Exits 0 when the job is done, drained or updated, 1 when it failed (its cause on standard"
        " error) or was cancelled, 130 on Ctrl-C (the job goes on).",
    )
    follow_parser.add_argument("job_id", metavar="JOB_ID")
    follow_parser.add_argument("--importance", choices=IMPORTANCES, default="basic")
    follow_parser.add_argument("--verbose", action="store_true", help="long messages (tracebacks) whole")
    follow_parser.set_defaults(run=cmd_follow)

    logs = actions.add_parser(
        "logs",
        parents=[common],
        help="what a job's processes printed (print(), standard output and error)",
        description="The lines the job's processes printed, oldest first (--format json: each with its source,"
        " stdout or stderr). --follow: then the lines as they come, until the job has ended and all are read;"
        " a server that restarts meanwhile is waited for.",
    )
    logs.add_argument("job_id", metavar="JOB_ID")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing lines as they come until the job ends")
    logs.set_defaults(run=cmd_logs)
