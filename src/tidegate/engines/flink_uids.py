"""Running a PyFlink program with some operators under other uids: those their saved state has.

Flink finds an operator's state in a savepoint by the operator's uid. When an update
renames an operator (Dataflow's ``transformNameMapping``), the new program gives it its
new uid, and its state is saved under the old one. The driver here runs the program with
``uid`` patched on PyFlink's streams so that those operators run under the old uid: the
state is found, and the program is the user's, unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["DRIVER", "driver_command"]

DRIVER = '''"""tidegate's uid driver: python driver.py UIDS_JSON PROGRAM [ARGS...]."""
import inspect, json, os, runpy, sys
from pyflink.datastream import data_stream

UNDER = json.loads(sys.argv[1])


def patched(original):
    def uid(self, uid):
        return original(self, UNDER.get(uid, uid))
    return uid


for _, cls in inspect.getmembers(data_stream, inspect.isclass):
    if "uid" in vars(cls):
        cls.uid = patched(vars(cls)["uid"])
program = sys.argv[2]
sys.argv = [program, *sys.argv[3:]]
sys.path.insert(0, os.path.dirname(os.path.abspath(program)))
runpy.run_path(program, run_name="__main__")
'''


def driver_command(tmp: Path, state_uids: Mapping[str, str], program: Path, args: Sequence[str]) -> list[str]:
    """The ``--python ...`` arguments of ``flink run`` that run ``program`` with ``state_uids`` applied."""
    driver = tmp / "uid_driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    return ["--python", str(driver), json.dumps(dict(state_uids)), str(program), *args]
