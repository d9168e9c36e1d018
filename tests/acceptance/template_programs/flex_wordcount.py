"""A word count for a Beam flex template: plain command-line options, as a flex template's program has."""

import argparse

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--min_count", type=int, default=1)
    known, rest = parser.parse_known_args(argv)
    with beam.Pipeline(options=PipelineOptions(rest)) as p:
        (
            p
            | "Read" >> beam.io.ReadFromText(known.input)
            | "Split" >> beam.FlatMap(str.split)
            | "Count" >> beam.combiners.Count.PerElement()
            | "Keep" >> beam.Filter(lambda kv: kv[1] >= known.min_count)
            | "Format" >> beam.MapTuple(lambda word, count: f"{word}: {count}")
            | "Write" >> beam.io.WriteToText(known.output, shard_name_template="")
        )


if __name__ == "__main__":
    main()
