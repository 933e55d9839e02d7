"""Run the whole test suite while every core is busy: the tests must not depend on an idle machine.

Starts two CPU-bound processes per core (each spins in a tight arithmetic loop), runs the README's
test command (``pytest -q`` by default, or the arguments given after ``--``), stops the load
and prints the suite's result and wall time. Exit code: the suite's.

    python benchmarks/suite_under_load.py                 # the whole suite
    python benchmarks/suite_under_load.py -- -m "not slow"
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path


def spin() -> None:
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2147483648


def main() -> int:
    extra = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    cores = os.cpu_count() or 1
    load = [multiprocessing.Process(target=spin, daemon=True) for _ in range(2 * cores)]
    for process in load:
        process.start()
    print(f"load: {len(load)} busy processes on {cores} cores", flush=True)
    started = time.monotonic()
    try:
        # The pytest script beside this interpreter, as the README runs it: ``python -m pytest`` would put the
        # current folder on sys.path and test the checkout instead of the installed package.
        result = subprocess.run([str(Path(sys.executable).with_name("pytest")), "-q", *extra])
    finally:
        for process in load:
            process.terminate()
        for process in load:
            process.join()
    minutes = (time.monotonic() - started) / 60
    print(f"suite under load: exit code {result.returncode}, {minutes:.1f} min", flush=True)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
