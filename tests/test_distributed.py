"""Real worker processes on one storage: exact global budgets, well-formed generations, kill and resume.

Each test starts ``python -m optuna_diffusion optimize`` processes on the bundled digits model with
small populations, so several generations of both samplers run in seconds. Kills happen at exact
points (faults, see optuna_diffusion.faults), never after a sleep.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from optuna_diffusion.cli import app
from optuna_diffusion.samplers import plan_from_trial
from optuna_diffusion.storage import open_storage
from optuna_diffusion.trial_plan import BUDGET_STOPPED_ATTR, RETRIED_FROM_KEY

from .workers import Worker, completed, optimize_command, run, study_file, trials, wait_out_the_grace_period

pytestmark = pytest.mark.slow

POSTGRES_URL = os.environ.get("OPTUNA_DIFFUSION_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
WORKERS = 3
POPULATION = 4
BUDGETS = {"timesteps": 12, "architecture": 8}
SAMPLER_NAMES = {"timesteps": "TimestepSampler", "architecture": "ArchitectureSampler"}


def run_workers(command: list[str], folder, workers: int) -> list:
    running = [Worker(command, folder) for _ in range(workers)]
    return [worker.finish() for worker in running]


def non_dominated(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    def dominates(a, b):
        return all(x <= y for x, y in zip(a.values, b.values)) and a.values != b.values

    return {t.number for t in trials if not any(dominates(other, t) for other in trials)}


def shown_front(name: str, config: Path, storage: str, stage: str) -> set[int]:
    args = ["show", "--study", name, "--config", str(config), "--storage", storage, "--stage", stage, "--all"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = itertools.takewhile(lambda line: line.split()[:1] and line.split()[0].isdigit(),
                               result.output.splitlines()[2:])  # after the title line and header; before "ran on: ..."
    return {int(row.split()[0]) for row in rows}


def assert_well_formed_search(storage: str, name: str, config: Path, stage: str, workers: int) -> None:
    """The budget is exact, no plan is evaluated twice, generations are sound, the front is right."""
    study = optuna.load_study(study_name=f"{name}-{stage}", storage=open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == BUDGETS[stage], Counter(t.state.name for t in trials)
    # Trials beyond the budget were stopped before evaluating, and say so.
    assert all(t.state == TrialState.COMPLETE or BUDGET_STOPPED_ATTR in t.user_attrs for t in trials)
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
    config = study_file(tmp_path, budgets=BUDGETS, population=POPULATION)
    try:
        results = run_workers(optimize_command(name, config, storage), tmp_path, WORKERS)
        for returncode, _, err in results:
            assert returncode == 0, err[-2000:]
        for stage in ("timesteps", "architecture"):
            assert_well_formed_search(storage, name, config, stage, WORKERS)
    finally:
        if backend == "postgresql":
            for stage in ("timesteps", "architecture"):
                try:
                    optuna.delete_study(study_name=f"{name}-{stage}", storage=storage)
                except KeyError:
                    pass


def storage_for(backend: str, tmp_path) -> str:
    return postgres_or_skip() if backend == "postgresql" else f"sqlite:///{tmp_path / 'killed.db'}"


@pytest.mark.parametrize(
    "stage, backend, point",
    [
        ("timesteps", "sqlite", "trial-started"),  # killed before the trial's first heartbeat
        ("architecture", "sqlite", "trial-started"),
        ("timesteps", "postgresql", "trial-started"),
        ("timesteps", "sqlite", "trial-running"),  # killed mid-evaluation, heartbeats running
        ("architecture", "sqlite", "trial-running"),
    ],
)
def test_a_worker_killed_at_any_point_of_a_trial_loses_nothing(stage, backend, point, tmp_path):
    storage = storage_for(backend, tmp_path)
    name = f"killed-{uuid.uuid4().hex[:6]}"
    budgets = {"timesteps": 6, "architecture": 6}
    config = study_file(tmp_path, budgets=budgets, population=POPULATION)
    command = optimize_command(name, config, storage, "--stage", stage, "--heartbeat-interval", "1")
    study_name = f"{name}-{stage}"
    try:
        if stage == "architecture":
            first = run(optimize_command(name, config, storage, "--stage", "timesteps"), tmp_path)
            assert first.returncode == 0, first.stderr[-2000:]

        killed = run(command, tmp_path, fault=f"kill@{point}#3")
        died = time.monotonic()
        assert killed.returncode == -9, killed.stderr[-2000:]
        stranded = [t for t in trials(storage, study_name) if t.state == TrialState.RUNNING]
        assert len(stranded) == 1, "the kill leaves the third trial RUNNING"
        before = completed(storage, study_name)
        assert len(before) == 2
        wait_out_the_grace_period(died)

        resumed = run(command, tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        after = completed(storage, study_name)
        assert {number: after[number] for number in before} == before, "completed trials changed"
        assert len(after) == budgets[stage], "the resumed search reaches the uninterrupted budget"
        everything = {t.number: t for t in trials(storage, study_name)}
        assert everything[stranded[0].number].state == TrialState.FAIL
        retries = [t for t in everything.values() if t.system_attrs.get(RETRIED_FROM_KEY) == stranded[0].number]
        assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
        if point == "trial-running":  # the sampler had written the plan: the retry evaluates the same one
            assert plan_from_trial(retries[0]) == plan_from_trial(everything[stranded[0].number])
        plans = [json.dumps(plan_from_trial(t).to_dict(), sort_keys=True) for t in everything.values()
                 if t.state == TrialState.COMPLETE]
        assert len(set(plans)) == len(plans)
    finally:
        if backend == "postgresql":
            for each in ("timesteps", "architecture"):
                try:
                    optuna.delete_study(study_name=f"{name}-{each}", storage=storage)
                except KeyError:
                    pass
