"""A word count made to be a classic template: input, output and a suffix are runtime parameters.

Run with ``--template_location=PATH`` (and DataflowRunner), it writes the template instead
of running; tidegate's LaunchTemplate then sets the parameters.
"""

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


class WordCountOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_value_provider_argument("--input", type=str, help="the text to count")
        parser.add_value_provider_argument("--output", type=str, help="where the counts go")
        parser.add_value_provider_argument("--suffix", type=str, default="", help="appended to each line")


def main(argv=None):
    options = PipelineOptions(argv)
    own = options.view_as(WordCountOptions)
    with beam.Pipeline(options=options) as p:
        (
            p
            | "Read" >> beam.io.ReadFromText(own.input)
            | "Split" >> beam.FlatMap(str.split)
            | "Count" >> beam.combiners.Count.PerElement()
            | "Format" >> beam.Map(lambda kv, suffix: f"{kv[0]}: {kv[1]}{suffix.get()}", own.suffix)
            | "Write" >> beam.io.WriteToText(own.output, shard_name_template="")
        )


if __name__ == "__main__":
    main()
