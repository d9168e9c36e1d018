"""A batch pipeline that takes its time (``--seconds``), submitted without waiting for it to end.

    python slow_count.py --output OUT [--count N] [--seconds S] [Beam pipeline options…]

Writes the numbers 0 … N-1, one a line, each after a sleep of S/N seconds. Prints one
JSON line with the job id as soon as the job is submitted, and exits: the job runs on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", required=True)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=10.0)
    args, beam_args = parser.parse_known_args(argv)
    pause = args.seconds / args.count

    def slowly(value: int) -> int:
        time.sleep(pause)
        return value

    pipeline = beam.Pipeline(options=PipelineOptions(beam_args))
    (
        pipeline
        | "Numbers" >> beam.Create(list(range(args.count)))
        | "Slowly" >> beam.Map(slowly)
        | "Format" >> beam.Map(str)
        | "Write" >> beam.io.WriteToText(args.output, shard_name_template="")
    )
    result = pipeline.run()
    print(json.dumps({"job_id": result.job_id()}))


if __name__ == "__main__":
    main(sys.argv[1:])
