"""A bounded PyFlink job in batch mode: sums per key, appended as ``key,sum`` lines to ``argv[1]``."""

import sys

from pyflink.common import Types
from pyflink.datastream import RuntimeExecutionMode, StreamExecutionEnvironment

out = sys.argv[1]


def append(value):
    with open(out, "a") as file:
        file.write(f"{value[0]},{value[1]}\n")
    return value


env = StreamExecutionEnvironment.get_execution_environment()
env.set_runtime_mode(RuntimeExecutionMode.BATCH)
env.set_parallelism(1)
pairs = Types.TUPLE([Types.STRING(), Types.LONG()])
(
    env.from_collection([("a", 1), ("b", 2), ("a", 3), ("b", 4), ("c", 5)], type_info=pairs)
    .key_by(lambda v: v[0], key_type=Types.STRING())
    .reduce(lambda x, y: (x[0], x[1] + y[1]))
    .map(append, output_type=pairs)
)
env.execute("bounded-sum")
