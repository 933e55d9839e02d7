"""Ctrl-C never hangs: at every point of a search the worker exits 130 with one line, and resumes.

Each test pauses a real worker at a named point (a fault, see optuna_diffusion.faults), waits for it
to say so, sends SIGINT, and checks the exit code, what the user sees and what the storage holds.
"""

from __future__ import annotations

import signal

import pytest
from optuna.trial import TrialState

from .workers import Worker, completed, optimize_command, run, study_file, trials

pytestmark = pytest.mark.slow

BUDGETS = {"timesteps": 5, "architecture": 2}
MESSAGE = "run the same command again to resume"


def interrupted_once(worker: Worker) -> str:
    """SIGINT the paused worker; its stderr after checking it exited 130 with one line and no traceback."""
    worker.process.send_signal(signal.SIGINT)
    returncode, _, err = worker.finish()
    assert returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    said = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(said) == 1 and MESSAGE in said[0], err[-2000:]
    return err


def test_ctrl_c_while_the_model_loads_writes_nothing(tmp_path):
    config = study_file(tmp_path, budgets=BUDGETS)
    storage = f"sqlite:///{tmp_path / 'loading.db'}"
    worker = Worker(optimize_command("loading", config, storage), tmp_path, fault="pause@model-loading")
    worker.wait_for_line("fault: paused at model-loading")
    interrupted_once(worker)
    assert not (tmp_path / "loading.db").exists() and not (tmp_path / "loading-artifacts").exists()


@pytest.mark.parametrize("point", ["trial-running", "between-trials"])
def test_ctrl_c_during_or_between_trials_fails_the_trial_and_resumes(point, tmp_path):
    config = study_file(tmp_path, budgets=BUDGETS)
    storage = f"sqlite:///{tmp_path / 'interrupted.db'}"
    command = optimize_command("interrupted", config, storage, "--stage", "timesteps")
    worker = Worker(command, tmp_path, fault=f"pause@{point}#3")
    worker.wait_for_line(f"fault: paused at {point}")
    interrupted_once(worker)

    stored = trials(storage, "interrupted-timesteps")
    assert not [t for t in stored if t.state == TrialState.RUNNING], "no trial is left running"
    if point == "trial-running":  # the third trial was interrupted mid-evaluation
        assert [t.state for t in stored] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL]
    else:  # the third trial was stored before the Ctrl-C
        assert [t.state for t in stored] == [TrialState.COMPLETE] * 3
    before = completed(storage, "interrupted-timesteps")

    resumed = run(command, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = completed(storage, "interrupted-timesteps")
    assert {number: after[number] for number in before} == before and len(after) == BUDGETS["timesteps"]


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    config = study_file(tmp_path, budgets=BUDGETS)
    storage = f"sqlite:///{tmp_path / 'twice.db'}"
    command = optimize_command("twice", config, storage, "--stage", "timesteps")
    worker = Worker(command, tmp_path, fault="pause@trial-running#2,pause@interrupt-cleanup")
    worker.wait_for_line("fault: paused at trial-running")
    worker.process.send_signal(signal.SIGINT)
    worker.wait_for_line("fault: paused at interrupt-cleanup")  # the first Ctrl-C is being handled
    worker.process.send_signal(signal.SIGINT)
    returncode, _, err = worker.finish()
    assert returncode == 130 and "Traceback" not in err, err[-2000:]
