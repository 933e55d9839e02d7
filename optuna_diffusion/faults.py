"""Fault injection for tests: stop or kill this process at a named point, deterministically.

Tests that must interrupt a search at an exact moment (a worker killed before its trial's first
heartbeat, a Ctrl-C in the middle of a trial) turn a fault on through the environment instead of
sleeping and hoping::

    OPTUNA_DIFFUSION_FAULT="kill@trial-started#3"    # SIGKILL the 3rd time the point is reached
    OPTUNA_DIFFUSION_FAULT="pause@trial-running"      # wait there until a signal arrives

A paused process writes ``fault: paused at POINT`` to stderr first, so the test waits for that line.
Several faults are separated by commas. Without the variable, :func:`reach` does nothing.

Points: ``model-loading`` (the study's model and FID network are being loaded), ``trial-started``
(the storage made a trial RUNNING, before its first heartbeat), ``trial-running`` (the objective is
evaluating a plan), ``between-trials`` (a trial is stored, the next not yet asked),
``interrupt-cleanup`` (after the first Ctrl-C, while the interrupted trials are being failed).
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

ENVIRONMENT_VARIABLE = "OPTUNA_DIFFUSION_FAULT"
POINTS = ("model-loading", "trial-started", "trial-running", "between-trials", "interrupt-cleanup")

_reached: Counter[str] = Counter()


def _faults() -> list[tuple[str, str, int]]:
    """(action, point, occurrence) of every fault in the environment variable."""
    faults = []
    for spec in filter(None, (part.strip() for part in os.environ.get(ENVIRONMENT_VARIABLE, "").split(","))):
        action, _, rest = spec.partition("@")
        point, _, occurrence = rest.partition("#")
        if action not in ("kill", "pause") or point not in POINTS:
            raise ValueError(f"{ENVIRONMENT_VARIABLE}: cannot read {spec!r} (ACTION@POINT[#N], ACTION kill or pause)")
        faults.append((action, point, int(occurrence or 1)))
    return faults


def reach(point: str) -> None:
    """Mark that this process reached ``point``; act on a fault set for it (tests only)."""
    if ENVIRONMENT_VARIABLE not in os.environ:
        return
    _reached[point] += 1
    for action, fault_point, occurrence in _faults():
        if fault_point != point or _reached[point] != occurrence:
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.stderr.write(f"fault: paused at {point}\n")
        sys.stderr.flush()
        while True:  # a signal handler that raises (SIGINT: KeyboardInterrupt) ends the pause
            signal.pause()
