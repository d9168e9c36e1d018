"""A slow pipeline that the client cancels when told to: ``result.cancel()``.

    python portable_cancelled.py [Beam pipeline options…]

Prints ``{"running": STATE}`` once the job runs, then waits for a line on stdin (the
test looks at the job's processes meanwhile), cancels, waits for the end and prints
``{"final": STATE, "raised": …}``. PortableRunner's result has no public job id: the
test finds the job through tidegate's REST API.
"""

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
        time.sleep(0.2)
    print(json.dumps({"running": str(result.state)}), flush=True)
    sys.stdin.readline()
    result.cancel()
    raised = None
    try:
        result.wait_until_finish()
    except Exception as error:  # PortableRunner raises for any end but DONE
        raised = type(error).__name__
    print(json.dumps({"final": str(result.state), "raised": raised}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
