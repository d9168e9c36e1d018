"""A pipeline whose DoFn raises: the runner must fail with the error's text."""

from __future__ import annotations

import json
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


def explode(value: int) -> int:
    if value == 3:
        raise ValueError("tidegate-test: the number three is not allowed")
    return value


def main(argv: list[str]) -> None:
    pipeline = beam.Pipeline(options=PipelineOptions(argv))
    pipeline | beam.Create([1, 2, 3]) | "Explode" >> beam.Map(explode)
    try:
        pipeline.run().wait_until_finish()
    except Exception as error:
        print(json.dumps({"raised": type(error).__name__, "message": str(error)}))
        return
    print(json.dumps({"raised": None}))


if __name__ == "__main__":
    main(sys.argv[1:])
