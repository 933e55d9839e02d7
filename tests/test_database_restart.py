"""Reliability under a failing database: PostgreSQL restarts in the middle of a three-worker search.

Workers either ride the restart out or stop with a one-line error; rerunning them finishes the search
with the exact budget, and no completed trial is lost or changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from .test_distributed import postgres_or_skip
from .workers import SAFETY_NET, Worker, completed, optimize_command, run, study_file, trials, wait_out_the_grace_period

pytestmark = pytest.mark.slow

WORKERS = 3
BUDGET = 12


def restart_command() -> list[str]:
    """The machine's service command that restarts PostgreSQL; skip the test where there is none."""
    tool = shutil.which("pg_ctlcluster")
    versions = sorted(Path("/etc/postgresql").iterdir()) if Path("/etc/postgresql").is_dir() else []
    if tool is None or not versions or os.geteuid() != 0:
        pytest.skip("PostgreSQL cannot be restarted here (needs pg_ctlcluster, a cluster in /etc/postgresql and root)")
    return [tool, "--skip-systemctl-redirect", versions[-1].name, "main", "restart"]


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + SAFETY_NET
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {SAFETY_NET} s")
        time.sleep(0.05)  # poll for the event


def test_a_search_survives_a_postgresql_restart(tmp_path):
    storage = postgres_or_skip()
    restart = restart_command()
    name = f"restart-{uuid.uuid4().hex[:6]}"
    study_name = f"{name}-timesteps"
    config = study_file(tmp_path, budgets={"timesteps": BUDGET, "architecture": 2})
    command = optimize_command(name, config, storage, "--stage", "timesteps", "--heartbeat-interval", "1")
    try:
        workers = [Worker(command, tmp_path) for _ in range(WORKERS)]

        def some_trials_done() -> bool:
            try:
                return len(completed(storage, study_name)) >= 3
            except KeyError:
                return False

        wait_for(some_trials_done, "three completed trials")
        before = completed(storage, study_name)
        subprocess.run(restart, check=True, capture_output=True, timeout=SAFETY_NET)
        results = [worker.finish() for worker in workers]
        stopped = time.monotonic()  # no worker heartbeats after this
        for returncode, _, err in results:
            assert "Traceback" not in err, err[-3000:]
            if returncode != 0:  # stopped: one line that says how to resume
                errors = [line for line in err.splitlines() if line.startswith("error: ")]
                assert returncode == 3 and len(errors) == 1 and "run the same command again" in errors[0], err[-2000:]

        for _ in range(4):  # rerun until the budget is complete; a stranded trial is retried after its grace period
            if len(completed(storage, study_name)) >= BUDGET:
                break
            if any(t.state == TrialState.RUNNING for t in trials(storage, study_name)):
                wait_out_the_grace_period(stopped)
            resumed = run(command, tmp_path)
            assert resumed.returncode == 0, resumed.stderr[-2000:]
        after = completed(storage, study_name)
        assert {number: after[number] for number in before} == before, "a completed trial was lost or changed"
        assert len(after) == BUDGET, "the budget is exact"
    finally:
        try:
            optuna.delete_study(study_name=study_name, storage=storage)
        except Exception:  # the study may not exist if the workers never started
            pass
