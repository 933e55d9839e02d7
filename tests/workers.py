"""Worker processes for tests: start ``optuna-diffusion optimize``, wait for events, never for a clock.

A test that must act at an exact moment turns on a fault (:mod:`optuna_diffusion.faults`): the worker
pauses at a named point and says so on stderr, the test waits for that line, acts, and lets it go on.
Timeouts here are generous safety nets against a hung test, never part of a verdict.
"""

from __future__ import annotations

import functools
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from optuna_diffusion.storage import open_storage

SAFETY_NET = 900  # seconds; only a hung worker ever reaches it

GRACE_SECONDS = 3  # three missed heartbeats of --heartbeat-interval 1
CLOCK_RESOLUTION = 1  # SQLite's CURRENT_TIMESTAMP, which Optuna's stale check reads, is whole seconds


def wait_out_the_grace_period(died: float) -> None:
    """Until a trial whose worker died at ``died`` (``time.monotonic()``) is stale to Optuna's check.

    No heartbeat can be later than ``died``, so this is a lower bound, not a race. Optuna compares the
    database's ``now()`` with the last heartbeat; SQLite truncates both to the second, which can hide up
    to one second of the time that has passed."""
    time.sleep(max(0.0, died + GRACE_SECONDS + CLOCK_RESOLUTION + 0.5 - time.monotonic()))


def study_file(folder: Path, *, num_samples: int = 16, budgets: dict[str, int], population: int = 4) -> Path:
    """A small digits study: both stages, K in 3..5, ``population`` per generation."""
    path = folder / "study.toml"
    path.write_text(
        f"""
[model]
source = "digits"
[sampling]
num_classes = 10
null_class = 10
batch_size = {num_samples}
[timesteps]
k_min = 3
k_max = 5
n_trials = {budgets["timesteps"]}
num_samples = {num_samples}
population_size = {population}
[architecture]
n_trials = {budgets["architecture"]}
num_samples = {num_samples}
population_size = {population}
"""
    )
    return path


def optimize_command(name: str, config: Path, storage: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "optuna_diffusion", "optimize", "--study", name, "--config", str(config),
            "--storage", storage, *extra]


def environment(fault: str | None = None) -> dict[str, str]:
    """The environment of a worker: one thread (workers share the cores), and a fault if given.

    A worker imports ``optuna_diffusion`` as the suite does, from the installed package; only this tests
    folder goes on its path, so a worker script can import a helper such as ``take_turns``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent)}
    env.pop("OPTUNA_DIFFUSION_FAULT", None)
    if fault:
        env["OPTUNA_DIFFUSION_FAULT"] = fault
    return env


class Worker:
    """A worker process whose stderr lines are collected as they come, so a test can wait for one."""

    def __init__(self, command: list[str], cwd: Path, *, fault: str | None = None) -> None:
        self.process = subprocess.Popen(
            command, cwd=cwd, env=environment(fault), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.stderr_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stdout: list[str] = []
        threading.Thread(target=self._pump, args=(self.process.stderr, self._lines), daemon=True).start()
        threading.Thread(target=self._collect_stdout, daemon=True).start()

    @staticmethod
    def _pump(stream, lines: queue.Queue) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    def _collect_stdout(self) -> None:
        self._stdout.extend(self.process.stdout)

    def wait_for_line(self, fragment: str) -> None:
        """Block until the worker writes a stderr line containing ``fragment`` (fails if it exits first)."""
        while True:
            try:
                line = self._lines.get(timeout=SAFETY_NET)
            except queue.Empty:
                raise AssertionError(f"no line with {fragment!r} within {SAFETY_NET} s") from None
            if line is None:
                raise AssertionError(f"worker exited before writing {fragment!r}: {''.join(self.stderr_lines)[-2000:]}")
            self.stderr_lines.append(line)
            if fragment in line:
                return

    def finish(self) -> tuple[int, str, str]:
        """Wait for the worker to exit: (return code, stdout, stderr)."""
        returncode = self.process.wait(timeout=SAFETY_NET)
        while (line := self._lines.get(timeout=SAFETY_NET)) is not None:
            self.stderr_lines.append(line)
        return returncode, "".join(self._stdout), "".join(self.stderr_lines)


def run(command: list[str], cwd: Path, *, fault: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=environment(fault), capture_output=True, text=True, timeout=SAFETY_NET)


@functools.lru_cache(maxsize=None)
def storage_object(url: str) -> optuna.storages.BaseStorage:
    """One storage per URL for the whole test session: each RDB storage holds a pool of connections."""
    return open_storage(url)


def trials(storage: str, study_name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study_name, storage=storage_object(storage)).get_trials(deepcopy=False)


def completed(storage: str, study_name: str) -> dict[int, list[float]]:
    return {t.number: t.values for t in trials(storage, study_name) if t.state == TrialState.COMPLETE}
