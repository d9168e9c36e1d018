"""A bounded PyFlink job for a Flink flex template: sums per key, written as ``key,sum`` lines to ``--output``."""

import argparse

from pyflink.common import Types
from pyflink.datastream import RuntimeExecutionMode, StreamExecutionEnvironment

parser = argparse.ArgumentParser()
parser.add_argument("--output", required=True)
parser.add_argument("--scale", type=int, default=1)
args = parser.parse_args()


def append(value):
    with open(args.output, "a") as file:
        file.write(f"{value[0]},{value[1]}\n")
    return value


env = StreamExecutionEnvironment.get_execution_environment()
env.set_runtime_mode(RuntimeExecutionMode.BATCH)
env.set_parallelism(1)
pairs = Types.TUPLE([Types.STRING(), Types.LONG()])
scale = args.scale
(
    env.from_collection([("a", 1), ("b", 2), ("a", 3), ("b", 4), ("c", 5)], type_info=pairs)
    .map(lambda v: (v[0], v[1] * scale), output_type=pairs)
    .key_by(lambda v: v[0], key_type=Types.STRING())
    .reduce(lambda x, y: (x[0], x[1] + y[1]))
    .map(append, output_type=pairs)
)
env.execute("flex-sum")
