"""PlanObjective on the tiny model: values, user attributes, failures, MACs constraint, any sampler."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from optuna.trial import TrialState

from optuna_diffusion.blocks import find_blocks
from optuna_diffusion.errors import ConfigError, PlanError
from optuna_diffusion.objective import PlanObjective
from optuna_diffusion.plan import Plan
from optuna_diffusion.samplers import ArchitectureSampler, TimestepSampler, plan_from_trial

from .helpers import baseline_steps, tiny_evaluator

optuna.logging.set_verbosity(optuna.logging.WARNING)

NUM_SAMPLES = 32


@pytest.fixture
def evaluator(tiny_model):
    evaluator = tiny_evaluator(tiny_model, batch_size=32)
    yield evaluator
    evaluator.close()


def stage1_sampler(**kwargs):
    defaults = dict(k_min=2, k_max=3, population_size=4, num_parents=2, num_mutants=1, num_crossovers=1, seed=0)
    return TimestepSampler(**{**defaults, **kwargs})


def test_objective_returns_fid_and_macs_and_records_the_trial(evaluator):
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=stage1_sampler())
    study.optimize(PlanObjective(evaluator, num_samples=NUM_SAMPLES), n_trials=2)
    for trial in study.trials:
        plan = plan_from_trial(trial)
        fid, macs = trial.values
        assert trial.state == TrialState.COMPLETE and math.isfinite(fid) and fid > 0
        assert macs == evaluator.macs(plan) == plan.num_steps * evaluator.macs_table.full
        assert trial.user_attrs["timesteps"] == list(plan.timesteps)
        assert "skips" not in trial.user_attrs and "reuses" not in trial.user_attrs  # a full-network plan
        assert trial.user_attrs["macs"] == macs and trial.user_attrs["num_samples"] == NUM_SAMPLES
        assert trial.user_attrs["seconds"] > 0 and "failure" not in trial.user_attrs
        assert trial.params == {"num_steps": plan.num_steps, **{f"t{i}": t for i, t in enumerate(plan.timesteps)}}
        assert trial.constraints == {}
    # Common random numbers: the same plan scores the same FID outside the study.
    first = study.trials[0]
    assert evaluator.evaluate(plan_from_trial(first), NUM_SAMPLES).fid == first.values[0]


def test_objective_scores_the_skips_of_a_stage2_plan_and_can_return_fid_only(evaluator):
    plan = Plan((900, 500, 100), skips=[[], ["mid.attn.0"], ["up.1.resnet.0"]], reuses=[[], [], ["up.0"]])
    sampler = ArchitectureSampler(
        source_study=None, blocks=find_blocks(evaluator.model.denoiser),
        population_size=4, num_parents=2, num_mutants=1, num_crossovers=1, initial_plans=[plan], seed=0,
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(PlanObjective(evaluator, num_samples=NUM_SAMPLES, objectives=("fid",)), n_trials=1)
    trial = study.trials[0]
    assert plan_from_trial(trial) == plan
    assert isinstance(trial.value, float) and math.isfinite(trial.value)
    assert trial.user_attrs["macs"] == evaluator.macs(plan) < 3 * evaluator.macs_table.full
    assert trial.user_attrs["skips"] == [[], ["mid.attn.0"], ["up.1.resnet.0"]]
    assert trial.user_attrs["reuses"] == [[], [], ["up.0"]]


def test_nan_samples_give_fid_inf_and_record_the_failure(evaluator):
    handle = evaluator.model.denoiser.conv_out.register_forward_hook(lambda module, args, out: out * math.nan)
    try:
        study = optuna.create_study(directions=["minimize", "minimize"], sampler=stage1_sampler())
        study.optimize(PlanObjective(evaluator, num_samples=NUM_SAMPLES), n_trials=1)
    finally:
        handle.remove()
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE  # the search goes on
    assert trial.values[0] == math.inf and not math.isnan(trial.values[1])
    assert "NaN" in trial.user_attrs["failure"]


def test_macs_budget_sets_the_constraint_in_both_forms(evaluator):
    from optuna_dashboard._serializer import serialize_frozen_trial

    budget = 2.5 * evaluator.macs_table.full  # 2 steps fit, 3 do not
    sampler = stage1_sampler(initial_plans=[baseline_steps("uniform", 2), baseline_steps("uniform", 3)])
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(PlanObjective(evaluator, num_samples=NUM_SAMPLES, macs_budget=budget), n_trials=3)
    feasibility = set()
    for trial in study.trials:
        violation = trial.values[1] - budget
        assert trial.system_attrs["constraints:macs"] == violation  # trial.set_constraint: Optuna's samplers
        assert trial.system_attrs["constraints"] == [violation]  # the list optuna-dashboard 0.21 shows
        assert serialize_frozen_trial(study._study_id, trial, {})["constraints"] == [violation]
        assert trial.constraints == {"0": violation, "macs": violation}
        feasibility.add(violation <= 0)
    assert feasibility == {True, False}
    assert all(len(plan_from_trial(t).timesteps) == 2 for t in study.best_trials)


def test_objective_works_under_a_stock_sampler_through_suggest_plan(evaluator):
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(PlanObjective(evaluator, num_samples=NUM_SAMPLES, k_min=2, k_max=3), n_trials=2)
    for trial in study.trials:
        plan = plan_from_trial(trial)  # from the user attributes suggest_plan recorded
        assert trial.state == TrialState.COMPLETE and 2 <= plan.num_steps <= 3
        assert trial.params["num_steps"] == plan.num_steps
        assert {f"timestep_code_{i}" for i in range(plan.num_steps)} <= set(trial.params)
        assert trial.values[1] == evaluator.macs(plan)

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    with pytest.raises(PlanError, match="k_min"):
        study.optimize(PlanObjective(evaluator, num_samples=NUM_SAMPLES, objectives=("fid",)), n_trials=1)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_samples=1), "num_samples"),
        (dict(num_samples=True), "num_samples"),
        (dict(macs_budget=0), "macs_budget"),
        (dict(macs_budget=math.inf), "macs_budget"),
        (dict(objectives=()), "objectives"),
        (dict(objectives="fid"), "objectives"),
        (dict(objectives=("fid", "psnr")), "objectives"),
        (dict(objectives=("fid", "fid")), "objectives"),
        (dict(k_max=3), "k_min"),
    ],
)
def test_arguments_are_checked_up_front(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        PlanObjective(None, **{"num_samples": NUM_SAMPLES, **kwargs})  # type: ignore[arg-type]


def test_a_plan_whose_samples_blow_up_is_an_infinitely_bad_trial_and_the_search_goes_on(evaluator, tmp_path):
    """The UNet's output turns inf at t = 500 only, so exactly the plans through 500 fail, deterministically."""
    poisoned = 500

    def blow_up_at_the_poisoned_step(module, args, kwargs, output):
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        if int(torch.as_tensor(timestep).flatten()[0]) == poisoned:
            (output[0] if isinstance(output, tuple) else output.sample).fill_(math.inf)

    handle = evaluator.model.denoiser.register_forward_hook(blow_up_at_the_poisoned_step, with_kwargs=True)
    try:
        sampler = stage1_sampler(initial_plans=[(900, poisoned), (900, 300), (800, 400, 100)])
        storage = f"sqlite:///{tmp_path / 'faults.db'}"  # inf must survive the storage round trip
        study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler, storage=storage)
        study.optimize(PlanObjective(evaluator, num_samples=NUM_SAMPLES), n_trials=6)  # 1.5 generations of 4
    finally:
        handle.remove()
    trials = optuna.load_study(study_name=study.study_name, storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert plan_from_trial(trials[0]).timesteps == (900, poisoned)
    for trial in trials:
        fid, macs = trial.values
        assert macs == evaluator.macs(plan_from_trial(trial))  # the cost is still known
        if poisoned in trial.user_attrs["timesteps"]:
            assert fid == math.inf and trial.user_attrs["failure"] == "samples became NaN or inf"
        else:
            assert math.isfinite(fid) and "failure" not in trial.user_attrs
    assert sum(math.isfinite(t.values[0]) for t in trials[1:]) >= 3  # later trials, the next generation too
    assert trials[0].number not in {t.number for t in study.best_trials}
