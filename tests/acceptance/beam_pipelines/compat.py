"""The Beam runners' side of the compatibility suite (``tests/acceptance/test_compatibility.py``).

    python compat.py templates DIR NAME…  [Beam pipeline options…]
    python compat.py run DIR              [Beam pipeline options…]

``templates`` writes, for each NAME, the job that DataflowRunner would submit for a word
count (``--template_location``: staged, never sent) to ``DIR/NAME/job.json``, reading
``DIR/input.txt`` and writing ``DIR/NAME/out.txt``; the API clients submit those jobs.

``run`` does with the runner given in the options what a user of that runner can do:
a word count (``--job_name=compat-wordcount``) is run, read back, waited for, its
messages collected as the runner logs them, its metrics queried and, once DONE, cancelled
(a request on a terminal job); then a slow job (``--job_name=compat-cancel``) is run and
cancelled once RUNNING. With PortableRunner, Beam's Job API stub (what the runner speaks)
also asks to drain the running batch job. Prints one JSON line of observations.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions
from apache_beam.runners.runner import PipelineState

_DATAFLOW_MESSAGE = re.compile(r": (JOB_MESSAGE_[A-Z_]+): (.*)", re.S)


class Split(beam.DoFn):
    def __init__(self) -> None:
        self.words = Metrics.counter("wordcount", "words")

    def process(self, line: str):  # type: ignore[no-untyped-def]
        for word in line.split():
            self.words.inc()
            yield word


def slow(value: int) -> int:
    time.sleep(600)
    return value


def word_count(argv: list[str], source: Path, output: Path) -> beam.Pipeline:
    pipeline = beam.Pipeline(options=PipelineOptions(argv))
    (
        pipeline
        | "Read" >> beam.io.ReadFromText(str(source))
        | "Split" >> beam.ParDo(Split())
        | "Count" >> beam.combiners.Count.PerElement()
        | "Format" >> beam.MapTuple(lambda word, count: f"{word}: {count}")
        | "Write" >> beam.io.WriteToText(str(output), shard_name_template="")
    )
    return pipeline


class Capture(logging.Handler):
    """The job messages a runner logs while it waits (each runner logs them its own way)."""

    def __init__(self, portable: bool) -> None:
        super().__init__(logging.DEBUG)
        self.portable = portable
        self.messages: list[list[str]] = []
        self.warnings: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.portable:
            # PortableRunner logs each message of GetMessageStream as "%s" from its reader thread.
            if record.threadName == "wait_until_finish_read" and record.msg == "%s":
                self.messages.append([record.levelname, record.getMessage()])
            return
        text = record.getMessage()
        found = _DATAFLOW_MESSAGE.search(text)
        if found:
            self.messages.append([found.group(1), found.group(2)])
        elif record.levelno >= logging.WARNING:
            self.warnings.append(text)


def attempt(call: Any) -> dict[str, Any]:
    """What a client call did: its value, or the exception it raised (type and status code, if any)."""
    try:
        return {"value": str(call())}
    except Exception as error:
        code = getattr(error, "code", None)
        return {"raised": type(error).__name__, "code": str(code()) if callable(code) else None, "text": str(error)}


def templates(directory: Path, names: list[str], argv: list[str]) -> None:
    for name in names:
        folder = directory / name
        (folder / "tmp").mkdir(parents=True, exist_ok=True)
        options = [*argv, f"--temp_location={folder / 'tmp'}", f"--template_location={folder / 'job.json'}"]
        word_count(options, directory / "input.txt", folder / "out.txt").run()
    print(json.dumps({"templates": names}))


def run(directory: Path, argv: list[str]) -> None:
    portable = PipelineOptions(argv).view_as(StandardOptions).runner == "PortableRunner"
    capture = Capture(portable)
    logger = logging.getLogger() if portable else logging.getLogger("apache_beam.runners.dataflow.dataflow_runner")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(capture)
    seen: dict[str, Any] = {}

    pipeline = word_count([*argv, "--job_name=compat-wordcount"], directory / "input.txt", directory / "out.txt")
    result = pipeline.run()
    seen["created"] = result.job_id() if hasattr(result, "job_id") else ""
    seen["state"] = str(result.state)
    seen["final"] = attempt(result.wait_until_finish)
    seen["messages"] = list(capture.messages)
    counters = result.metrics().query(MetricsFilter().with_name("words"))["counters"]
    seen["words"] = [[c.key.metric.namespace, c.committed] for c in counters]
    seen["cancel_done"] = attempt(result.cancel)
    seen["cancel_done_warnings"] = capture.warnings
    seen["after_cancel_done"] = str(result.state)

    slow_pipeline = beam.Pipeline(options=PipelineOptions([*argv, "--job_name=compat-cancel"]))
    slow_pipeline | beam.Create([1]) | "Sleep" >> beam.Map(slow)
    result = slow_pipeline.run()
    deadline = time.time() + 120
    while result.state != PipelineState.RUNNING and not PipelineState.is_terminal(result.state):
        if time.time() > deadline:
            break
        time.sleep(0.2)
    seen["running"] = str(result.state)
    if portable:
        seen.update(job_service_calls(PipelineOptions(argv).view_as(PortableOptions).job_endpoint))
    seen["cancel"] = attempt(result.cancel)
    seen["cancel_wait"] = attempt(result.wait_until_finish)
    seen["cancelled"] = str(result.state)
    print(json.dumps(seen))


def job_service_calls(endpoint: str) -> dict[str, Any]:
    """Drain the running ``compat-cancel`` job, and ask for the state of a job that does not exist.

    Through Beam's Job API stub, as PortableRunner's client calls the service.
    """
    import grpc
    from apache_beam.portability.api import beam_job_api_pb2 as pb
    from apache_beam.portability.api import beam_job_api_pb2_grpc

    with grpc.insecure_channel(endpoint) as channel:
        stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
        [job_id] = [
            info.job_id
            for info in stub.GetJobs(pb.GetJobsRequest()).job_info
            if info.job_name == "compat-cancel" and info.state == pb.JobState.RUNNING
        ]
        refused = attempt(lambda: stub.Drain(pb.DrainJobRequest(job_id=job_id)))
        after = pb.JobState.Enum.Name(stub.GetState(pb.GetJobStateRequest(job_id=job_id)).state)
        unknown = attempt(lambda: stub.GetState(pb.GetJobStateRequest(job_id="2026-01-01_00_00_00-1")))
    return {"drain": refused, "after_drain": after, "unknown": unknown}


def main(argv: list[str]) -> None:
    mode, folder, *rest = argv
    directory = Path(folder).resolve()  # the job runs elsewhere: its paths must be absolute
    if mode == "templates":
        names = [a for a in rest if not a.startswith("--")]
        templates(directory, names, [a for a in rest if a.startswith("--")])
    else:
        run(directory, rest)


if __name__ == "__main__":
    main(sys.argv[1:])
