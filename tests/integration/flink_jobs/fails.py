"""A PyFlink job that fails on its fourth element, for tidegate's Flink engine tests."""

from pyflink.common import Types
from pyflink.datastream import StreamExecutionEnvironment


def explode_on_three(value):
    if value == 3:
        raise ValueError(f"tidegate test failure at element {value}")
    return value


env = StreamExecutionEnvironment.get_execution_environment()
env.set_parallelism(1)
env.from_collection(list(range(10)), type_info=Types.LONG()).map(explode_on_three, output_type=Types.LONG()).print()
env.execute("fails")
