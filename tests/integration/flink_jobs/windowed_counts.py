"""A keyed, windowed streaming PyFlink job for tidegate's Flink engine tests.

An unbounded, deterministic and slow source (Flink's datagen: a sequence 0, 1, 2, ...
at ``--rate`` rows per second, event time ``seq * 1000 / rate`` ms) is keyed by
``seq % --keys`` and counted per tumbling event-time window; a keyed running total
(ValueState) follows the counts. Two files under ``--out``:

- ``seen.txt``: every ``seq`` as it enters the job (before the windows);
- ``windows.txt``: ``key,window_end_ms,count,running_total,version`` per fired window.

Every operator has a stable uid, so a run restored from a savepoint of another run
(update, or a job made from a snapshot) continues the running totals.
"""

import argparse
import os

from pyflink.common import Time, Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.functions import KeyedProcessFunction, MapFunction, ProcessWindowFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor
from pyflink.datastream.window import TumblingEventTimeWindows
from pyflink.table import StreamTableEnvironment

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("--rate", type=int, default=10)
parser.add_argument("--window-ms", type=int, default=2000)
parser.add_argument("--keys", type=int, default=3)
parser.add_argument("--version", default="v1")
parser.add_argument("--total-uid", default="running-total", help="the running total's uid (an update may rename it)")
options = parser.parse_args()


class Append(MapFunction):
    """Appends each element to a file (flushed at once) and passes it on."""

    def __init__(self, path, line):
        self.path = path
        self.line = line
        self.file = None

    def open(self, runtime_context: RuntimeContext):
        self.file = open(self.path, "a")  # noqa: SIM115 (kept open for the operator's life)

    def close(self):
        if self.file is not None:
            self.file.close()

    def map(self, value):
        self.file.write(self.line(value) + "\n")
        self.file.flush()
        return value


class CountWindow(ProcessWindowFunction):
    def process(self, key, context, elements):
        yield key, context.window().end, sum(1 for _ in elements)


class RunningTotal(KeyedProcessFunction):
    def open(self, runtime_context: RuntimeContext):
        self.total = runtime_context.get_state(ValueStateDescriptor("total", Types.LONG()))

    def process_element(self, value, ctx):
        total = (self.total.value() or 0) + value[2]
        self.total.update(total)
        yield f"{value[0]},{value[1]},{value[2]},{total},{options.version}"


os.makedirs(options.out, exist_ok=True)
env = StreamExecutionEnvironment.get_execution_environment()  # its parallelism: the submit's (`flink run -p`)
t_env = StreamTableEnvironment.create(env)
# Uids for the planner's operators too (the source's position is in the savepoint).
t_env.get_config().set("table.exec.uid.generation", "ALWAYS")
step_ms = 1000 // options.rate
# The datagen sequence holds all its values in memory: keep 'end' modest (here ~1 hour).
t_env.execute_sql(f"""
    CREATE TABLE numbers (
        seq BIGINT,
        ts AS TO_TIMESTAMP_LTZ(seq * {step_ms}, 3),
        WATERMARK FOR ts AS ts
    ) WITH (
        'connector' = 'datagen',
        'rows-per-second' = '{options.rate}',
        'fields.seq.kind' = 'sequence',
        'fields.seq.start' = '0',
        'fields.seq.end' = '{options.rate * 3600}'
    )
""")
pairs = Types.TUPLE([Types.LONG(), Types.LONG()])
counts = Types.TUPLE([Types.LONG(), Types.LONG(), Types.LONG()])
(
    t_env.to_data_stream(t_env.from_path("numbers"))
    .map(lambda row: (row[0] % options.keys, row[0]), output_type=pairs)
    .uid("key-of")
    .map(Append(os.path.join(options.out, "seen.txt"), lambda v: str(v[1])), output_type=pairs)
    .uid("seen")
    .key_by(lambda v: v[0], key_type=Types.LONG())
    .window(TumblingEventTimeWindows.of(Time.milliseconds(options.window_ms)))
    .process(CountWindow(), output_type=counts)
    .uid("count-per-window")
    .key_by(lambda v: v[0], key_type=Types.LONG())
    .process(RunningTotal(), output_type=Types.STRING())
    .uid(options.total_uid)
    .map(Append(os.path.join(options.out, "windows.txt"), str), output_type=Types.STRING())
    .uid("write-windows")
)
env.execute("windowed-counts")
