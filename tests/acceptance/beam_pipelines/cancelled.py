"""A slow pipeline that the client cancels once it runs: ``result.cancel()``."""

from __future__ import annotations

import json
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState


def slow(value: int) -> int:
    time.sleep(600)
    return value


def main(argv: list[str]) -> None:
    pipeline = beam.Pipeline(options=PipelineOptions(argv))
    pipeline | beam.Create([1]) | "Sleep" >> beam.Map(slow)
    result = pipeline.run()
    deadline = time.time() + 120
    while result.state != PipelineState.RUNNING and time.time() < deadline:
        time.sleep(0.5)
    running_at = result.state
    result.cancel()
    try:
        final = result.wait_until_finish()
    except Exception:  # DataflowRunner raises for any end but DONE
        final = result.state
    print(json.dumps({"running": str(running_at), "final": str(final), "job_id": result.job_id()}))


if __name__ == "__main__":
    main(sys.argv[1:])
