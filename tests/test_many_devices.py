"""``optimize --devices cpu,cpu``: one worker process per device on one journal file, an exact budget,
resume, and a Ctrl-C that stops every worker. Device lists are checked before anything starts."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from optuna_diffusion.cli import app
from optuna_diffusion.errors import ConfigError
from optuna_diffusion.launcher import check_parallel_storage, worker_devices
from optuna_diffusion.storage import open_storage

from .workers import SAFETY_NET, environment, study_file

BUDGETS = {"timesteps": 6, "architecture": 4}


def _command(name, config, *extra):
    import sys

    return [sys.executable, "-m", "optuna_diffusion", "optimize", "--study", name, "--config", str(config),
            "--stage", "timesteps", "--devices", "cpu,cpu", *extra]


def _states(journal, name):
    study = optuna.load_study(study_name=f"{name}-timesteps", storage=open_storage(str(journal)))
    return [t.state for t in study.get_trials(deepcopy=False)]


def test_device_lists_are_checked_in_one_line():
    assert worker_devices("cpu,cpu", None, "auto") == ["cpu", "cpu"]
    assert worker_devices(None, 3, "cpu") == ["cpu", "cpu", "cpu"]
    for devices, workers, message in (("cpu,cuda:7", None, "cuda:7"), ("cpu,tpu", None, "unknown device 'tpu'"),
                                      ("cpu,", None, "comma-separated"), ("cpu", 2, "not both"), (None, 0, "positive")):
        with pytest.raises(ConfigError, match=message):
            worker_devices(devices, workers, "cpu")
    with pytest.raises(ConfigError, match="not for parallel workers"):
        check_parallel_storage("sqlite:///x.db")


def test_cli_refuses_sqlite_and_absent_devices_before_starting_anything(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["optimize", "--study", "digits", "--devices", "cpu,cpu", "--storage", f"sqlite:///{tmp_path}/x.db"])
    assert result.exit_code == 2 and "not for parallel workers" in result.output
    result = runner.invoke(app, ["optimize", "--study", "digits", "--devices", "cpu,cuda:7"])
    assert result.exit_code == 2 and "cuda:7" in result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_two_cpu_workers_share_one_search_with_an_exact_budget_and_resume(tmp_path):
    name = f"two-{uuid.uuid4().hex[:6]}"
    config = study_file(tmp_path, budgets=BUDGETS)
    done = subprocess.run(_command(name, config), cwd=tmp_path, env=environment(), capture_output=True, text=True,
                          timeout=SAFETY_NET)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    journal = tmp_path / f"{name}.journal"
    assert journal.is_file()  # the default storage of several workers
    for label in ("cpu#0", "cpu#1"):  # both processes ran the stage to its end
        assert f"[{label}] stored in {journal.name}" in done.stdout
    assert _states(journal, name).count(TrialState.COMPLETE) == BUDGETS["timesteps"]

    again = subprocess.run(_command(name, config), cwd=tmp_path, env=environment(), capture_output=True, text=True,
                           timeout=SAFETY_NET)
    assert again.returncode == 0
    assert f"{BUDGETS['timesteps']}/{BUDGETS['timesteps']} trials done" in again.stdout
    assert _states(journal, name).count(TrialState.COMPLETE) == BUDGETS["timesteps"]


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_and_fails_their_trials(tmp_path):
    name = f"stop-{uuid.uuid4().hex[:6]}"
    config = study_file(tmp_path, budgets=BUDGETS)
    parent = subprocess.Popen(_command(name, config), cwd=tmp_path, env=environment("pause@trial-running"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids, paused = [], set()
    assert parent.stdout is not None
    for line in parent.stdout:  # waits for events (both workers paused in a trial), never for a clock
        if line.startswith("started worker"):
            pids.append(int(line.rsplit("pid ", 1)[1].rstrip(")\n")))
        if "fault: paused at trial-running" in line:
            paused.add(line.split("]")[0])
        if len(paused) == 2:
            break
    parent.send_signal(signal.SIGINT)
    rest, err = parent.communicate(timeout=SAFETY_NET)

    assert parent.returncode == 130, rest[-2000:] + err[-2000:]
    assert "every worker stopped" in err
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    states = _states(tmp_path / f"{name}.journal", name)
    assert TrialState.RUNNING not in states and states.count(TrialState.FAIL) == 2
