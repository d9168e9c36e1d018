"""A bounded job submitted with ``execute_async``, after which the program fails: Flink runs the job all the same.

Writes each of 1, 2, 3 as a line appended to ``argv[1]``.
"""

import sys

from pyflink.common import Types
from pyflink.datastream import StreamExecutionEnvironment

out = sys.argv[1]


def append(value):
    with open(out, "a") as file:
        file.write(f"{value}\n")
    return value


env = StreamExecutionEnvironment.get_execution_environment()
env.set_parallelism(1)
env.from_collection([1, 2, 3], type_info=Types.LONG()).map(append, output_type=Types.LONG())
env.execute_async("submits-then-fails")
raise RuntimeError("this program fails after it submitted its job, on purpose")
