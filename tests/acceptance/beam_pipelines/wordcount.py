"""A word count with a user counter, run by any Beam runner given on the command line.

    python wordcount.py --input IN --output OUT [--wait] [Beam pipeline options…]

Prints one JSON line: the final state, the user counter and the job id (when the runner
has one). Run by the acceptance tests with Beam's DataflowRunner against tidegate and
with the DirectRunner for the expected output.
"""

from __future__ import annotations

import argparse
import json
import sys

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions


class Split(beam.DoFn):
    def __init__(self) -> None:
        self.words = Metrics.counter("wordcount", "words")

    def process(self, line: str):  # type: ignore[no-untyped-def]
        for word in line.split():
            self.words.inc()
            yield word


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    args, beam_args = parser.parse_known_args(argv)
    pipeline = beam.Pipeline(options=PipelineOptions(beam_args))
    (
        pipeline
        | "Read" >> beam.io.ReadFromText(args.input)
        | "Split" >> beam.ParDo(Split())
        | "Count" >> beam.combiners.Count.PerElement()
        | "Format" >> beam.MapTuple(lambda word, count: f"{word}: {count}")
        | "Write" >> beam.io.WriteToText(args.output, shard_name_template="")
    )
    result = pipeline.run()
    state = result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("words"))["counters"]
    job_id = result.job_id() if hasattr(result, "job_id") else ""
    print(json.dumps({"state": str(state), "words": [c.committed for c in counters], "job_id": job_id}))


if __name__ == "__main__":
    main(sys.argv[1:])
