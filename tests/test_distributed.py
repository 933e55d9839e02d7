"""Real worker processes on one storage: exact global budgets, well-formed generations, kill and resume.

Each test starts ``python -m optuna_diffusion optimize`` processes on the bundled digits model with
small populations, so several generations of both samplers run in seconds.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from optuna_diffusion.budget import BUDGET_USER_ATTR
from optuna_diffusion.cli import app
from optuna_diffusion.samplers import plan_from_trial
from optuna_diffusion.study import open_storage

POSTGRES_URL = os.environ.get("OPTUNA_DIFFUSION_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
WORKERS = 3
POPULATION = 4
BUDGETS = {"timesteps": 12, "architecture": 8}
SAMPLER_NAMES = {"timesteps": "TimestepSampler", "architecture": "ArchitectureSampler"}


def study_file(folder: Path, *, num_samples: int = 16, budgets: dict[str, int] = BUDGETS) -> Path:
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
population_size = {POPULATION}
[architecture]
n_trials = {budgets["architecture"]}
num_samples = {num_samples}
population_size = {POPULATION}
"""
    )
    return path


def optimize_command(name: str, config: Path, storage: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "optuna_diffusion", "optimize", "--study", name, "--config", str(config),
            "--storage", storage, *extra]


def run_workers(command: list[str], folder: Path, workers: int) -> list[subprocess.CompletedProcess]:
    processes = [
        subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return results


def non_dominated(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    def dominates(a, b):
        return all(x <= y for x, y in zip(a.values, b.values)) and a.values != b.values

    return {t.number for t in trials if not any(dominates(other, t) for other in trials)}


def shown_front(name: str, config: Path, storage: str, stage: str) -> set[int]:
    result = CliRunner().invoke(app, ["show", "--study", name, "--config", str(config), "--storage", storage, "--stage", stage])
    assert result.exit_code == 0, result.output
    rows = result.output.splitlines()[2:]  # title line, table header
    return {int(row.split()[0]) for row in rows}


def assert_well_formed_search(storage: str, name: str, config: Path, stage: str, workers: int) -> None:
    """The budget is exact, no plan is evaluated twice, generations are sound, the front is right."""
    study = optuna.load_study(study_name=f"{name}-{stage}", storage=open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == BUDGETS[stage], Counter(t.state.name for t in trials)
    # Trials beyond the budget were stopped before evaluating, and say so.
    assert all(t.state == TrialState.COMPLETE or BUDGET_USER_ATTR in t.user_attrs for t in trials)
    plans = [json.dumps(plan_from_trial(t).to_dict(), sort_keys=True) for t in complete]
    assert len(set(plans)) == len(plans), "a plan was evaluated twice"

    key = SAMPLER_NAMES[stage]
    generation_of = {t._trial_id: t.system_attrs[f"{key}:generation"] for t in complete}
    sizes = Counter(generation_of.values())
    generations = sorted(sizes)
    assert generations == list(range(len(generations))) and len(generations) >= 2
    # A generation fills once it has `population` complete trials; up to workers - 1 trials that other
    # workers started before it filled also belong to it (as with Optuna's own GA samplers).
    assert all(POPULATION <= sizes[g] <= POPULATION + workers - 1 for g in generations[:-1]), sizes
    assert sizes[generations[-1]] <= POPULATION + workers - 1
    for generation in generations[1:]:
        parents = study._storage.get_study_system_attrs(study._study_id)[f"{key}:parent:{generation}"]
        assert parents and all(generation_of.get(parent, generation) < generation for parent in parents)

    assert shown_front(name, config, storage, stage) == non_dominated(complete)


def postgres_or_skip() -> str:
    try:
        optuna.storages.RDBStorage(POSTGRES_URL).get_all_studies()
    except Exception as error:  # any connection failure means: no server here
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL}: {str(error).splitlines()[0]}")
    return POSTGRES_URL


@pytest.mark.parametrize("backend", ["postgresql", "journal"])
def test_three_workers_share_one_study_with_an_exact_budget(backend, tmp_path):
    name = f"dist-{uuid.uuid4().hex[:8]}"
    storage = postgres_or_skip() if backend == "postgresql" else str(tmp_path / "journal.log")
    config = study_file(tmp_path)
    try:
        results = run_workers(optimize_command(name, config, storage), tmp_path, WORKERS)
        for result in results:
            assert result.returncode == 0, result.stderr[-2000:]
        for stage in ("timesteps", "architecture"):
            assert_well_formed_search(storage, name, config, stage, WORKERS)
    finally:
        if backend == "postgresql":
            for stage in ("timesteps", "architecture"):
                try:
                    optuna.delete_study(study_name=f"{name}-{stage}", storage=storage)
                except KeyError:
                    pass


def signal_mid_trial(command: list[str], folder: Path, storage: str, study_name: str, sig: int, after_complete: int):
    """Start ``command``; once ``after_complete`` trials are done, send ``sig`` during a running trial."""
    process = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    interrupted = None
    deadline = time.monotonic() + 300
    while interrupted is None and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
        try:
            trials = optuna.load_study(study_name=study_name, storage=open_storage(storage)).get_trials(deepcopy=False)
        except KeyError:
            continue
        running = [t for t in trials if t.state == TrialState.RUNNING]
        done = sum(t.state == TrialState.COMPLETE for t in trials)
        # Past its first heartbeat: the trial has been running for a while.
        if done >= after_complete and running and datetime.datetime.now() - running[0].datetime_start > datetime.timedelta(seconds=0.3):
            process.send_signal(sig)
            interrupted = running[0].number
    out, err = process.communicate(timeout=120)
    assert interrupted is not None, f"no trial was running: {err[-2000:]}"
    return process.returncode, err, interrupted


def snapshot(storage: str, study_name: str) -> dict[int, list[float]]:
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    return {t.number: t.values for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}


@pytest.mark.parametrize("stage", ["timesteps", "architecture"])
def test_a_search_killed_mid_trial_resumes_and_retries_the_trial(stage, tmp_path):
    storage = f"sqlite:///{tmp_path / 'killed.db'}"
    budgets = {"timesteps": 6, "architecture": 6}
    config = study_file(tmp_path, num_samples=300, budgets=budgets)
    command = optimize_command("killed", config, storage, "--stage", stage, "--heartbeat-interval", "1")
    if stage == "architecture":
        first = subprocess.run(optimize_command("killed", config, storage, "--stage", "timesteps"), cwd=tmp_path,
                               capture_output=True, text=True, timeout=600)
        assert first.returncode == 0, first.stderr[-2000:]
    study_name = f"killed-{stage}"

    returncode, _, killed = signal_mid_trial(command, tmp_path, storage, study_name, signal.SIGKILL, after_complete=2)
    assert returncode == -signal.SIGKILL
    before = snapshot(storage, study_name)
    time.sleep(3.5)  # past the grace period: 3 missed heartbeats of 1 s

    resumed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    after = snapshot(storage, study_name)
    assert {number: after[number] for number in before} == before, "completed trials changed"
    assert len(after) == budgets[stage], "the resumed search reaches the uninterrupted budget"
    killed_trial = study.trials[killed]
    assert killed_trial.state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert plan_from_trial(retries[0]) == plan_from_trial(killed_trial), "the retry evaluates the same plan"


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    storage = f"sqlite:///{tmp_path / 'interrupted.db'}"
    config = study_file(tmp_path, num_samples=300, budgets={"timesteps": 5, "architecture": 2})
    command = optimize_command("interrupted", config, storage, "--stage", "timesteps")

    returncode, err, interrupted = signal_mid_trial(command, tmp_path, storage, "interrupted-timesteps", signal.SIGINT, after_complete=1)
    assert returncode == 130
    assert "run the same command again to resume" in err and "Traceback" not in err
    study = optuna.load_study(study_name="interrupted-timesteps", storage=open_storage(storage))
    assert study.trials[interrupted].state == TrialState.FAIL
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    before = snapshot(storage, "interrupted-timesteps")

    resumed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = snapshot(storage, "interrupted-timesteps")
    assert {number: after[number] for number in before} == before and len(after) == 5
