"""Multi-fidelity FID: the promotion rule, parent selection, and a real search that stops losers early."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from optuna_diffusion.errors import ConfigError
from optuna_diffusion.fidelity import Calibration, FidelityPolicy, could_matter, decide
from optuna_diffusion.objective import PlanObjective
from optuna_diffusion.plan import Plan
from optuna_diffusion.samplers import TimestepSampler
from optuna_diffusion.samplers import NSGA2ParentSelection

from .helpers import tiny_evaluator

optuna.logging.set_verbosity(optuna.logging.WARNING)


def stored(fid: float, macs: float, *, fid_low: float | None = None, fidelity: str = "full"):
    user_attrs = {"macs": macs, "fidelity": fidelity}
    if fid_low is not None:
        user_attrs["fid_low"] = fid_low
    return create_trial(values=[fid, macs], user_attrs=user_attrs)


def first_value(trial) -> float:
    return trial.values[0]


# Ten full-size trials on a power law: full = 0.5 * low ** 1.5, times exp(+-0.05) alternately.
LOWS = [4.0 + i for i in range(10)]
CALIBRATED = [stored(0.5 * low**1.5 * math.exp(0.05 if i % 2 else -0.05), 100.0, fid_low=low) for i, low in enumerate(LOWS)]
BEST, SECOND = sorted(t.values[0] for t in CALIBRATED)[:2]


def test_every_candidate_gets_the_full_count_until_the_map_is_measured():
    policy = FidelityPolicy(low_samples=8, keep=2, min_pairs=10)
    decision = decide(policy, CALIBRATED[:9], fid_low=1e6, macs=100.0, fid_of=first_value)
    assert decision.promote


def test_the_power_law_from_small_sample_to_full_size_fid_is_fitted_with_its_spread():
    calibration = Calibration.from_pairs([(t.user_attrs["fid_low"], t.values[0]) for t in CALIBRATED])
    assert calibration.slope == pytest.approx(1.5, abs=0.05)
    assert calibration.intercept == pytest.approx(math.log(0.5), abs=0.1)
    assert calibration.spread == pytest.approx(0.055, abs=0.01)
    assert calibration.estimate(9.0) == pytest.approx(0.5 * 27, rel=0.02)
    assert calibration.estimate(9.0, sigmas=2) == pytest.approx(calibration.estimate(9.0) * math.exp(-2 * calibration.spread))
    assert Calibration.from_pairs([(4.0, 2.0), (math.nan, 1.0), (-1.0, 3.0)]) is None, "needs 3 usable pairs"


def test_a_candidate_that_cannot_reach_the_best_parents_stops_with_its_estimate():
    policy = FidelityPolicy(low_samples=8, keep=2, margin_sigmas=2.0, min_pairs=10)
    calibration = Calibration.from_pairs([(t.user_attrs["fid_low"], t.values[0]) for t in CALIBRATED])

    # Small-sample FID 8 predicts about 11.3: the two best trials (about 3.8 and 5.9) are better.
    stopped = decide(policy, CALIBRATED, fid_low=8.0, macs=100.0, fid_of=first_value)
    assert not stopped.promote and stopped.estimate == pytest.approx(calibration.estimate(8.0))
    assert stopped.optimistic == pytest.approx(calibration.estimate(8.0, sigmas=2.0)) and stopped.optimistic > SECOND
    # Predicted a little worse than the second best, but within the margin: it might still be a parent.
    just_worse = math.exp((math.log(SECOND * 1.05) - calibration.intercept) / calibration.slope)
    assert calibration.estimate(just_worse) > SECOND
    assert decide(policy, CALIBRATED, fid_low=just_worse, macs=100.0, fid_of=first_value).promote
    # Cheaper than every full-size trial: it could enter the Pareto front, whatever its FID.
    assert decide(policy, CALIBRATED, fid_low=50.0, macs=50.0, fid_of=first_value).promote
    # MACs not compared (FID-only objective): it is judged by FID alone.
    assert not decide(policy, CALIBRATED, fid_low=50.0, macs=None, fid_of=first_value).promote
    # Trials over the MACs budget do not count.
    assert decide(policy, CALIBRATED, fid_low=8.0, macs=100.0, fid_of=first_value, macs_budget=99.0).promote


def test_a_plan_could_matter_while_fewer_than_keep_plans_of_no_more_macs_are_as_good():
    # the rule decide applies to a candidate's optimistic estimate (and the benchmark to a plan's own FID)
    assert could_matter(SECOND * 0.99, 100.0, CALIBRATED, keep=2, fid_of=first_value)  # only the best is better
    assert not could_matter(SECOND * 1.01, 100.0, CALIBRATED, keep=2, fid_of=first_value)
    assert could_matter(SECOND * 1.01, 99.0, CALIBRATED, keep=2, fid_of=first_value)  # cheaper than all of them


def test_a_dominated_candidate_stops_when_the_front_alone_fills_the_parents():
    # Variable K: the calibrated trials cost 100 MACs; add cheaper ones so the front has 3 points.
    policy = FidelityPolicy(low_samples=8, keep=3, min_pairs=10)
    cheaper = [stored(20.0, 50.0), stored(40.0, 25.0)]
    # Small-sample FID 5 predicts about 5.6 at 100 MACs: only the best calibrated trial (about 3.8) beats it.
    assert decide(policy, CALIBRATED + cheaper, fid_low=5.0, macs=100.0, fid_of=first_value).promote is False
    # With a front of 2 points it could still be the third parent.
    assert decide(policy, CALIBRATED + cheaper[:1], fid_low=5.0, macs=100.0, fid_of=first_value).promote
    # Not dominated (it would be the best at its MACs): always finished.
    assert decide(policy, CALIBRATED + cheaper, fid_low=3.0, macs=100.0, fid_of=first_value).promote


def test_small_sample_estimates_are_ranked_after_every_full_size_trial():
    study = optuna.create_study(directions=["minimize", "minimize"])
    full = [stored(10.0 + i, 100.0) for i in range(3)]
    low = stored(1.0, 1.0, fidelity="low")  # would dominate everything if taken at face value
    for trial in (*full, low):
        study.add_trial(trial)
    trials = study.get_trials()
    parents = NSGA2ParentSelection(num_parents=2)(study, trials)
    assert [p.values[0] for p in parents] == [10.0, 11.0]
    with_too_few_full = NSGA2ParentSelection(num_parents=2)(study, [trials[0], trials[3]])
    assert [p.values[0] for p in with_too_few_full] == [10.0, 1.0]


@pytest.mark.parametrize(
    "kwargs, message",
    [({"low_samples": 1}, "low_samples"), ({"low_samples": 8, "keep": 0}, "keep"), ({"low_samples": 8, "margin_sigmas": -1}, "margin")],
)
def test_policy_arguments_are_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FidelityPolicy(**kwargs)


@pytest.fixture
def evaluator(tiny_model):
    evaluator = tiny_evaluator(tiny_model, batch_size=16)
    yield evaluator
    evaluator.close()


def test_progressive_evaluation_continues_the_same_sample_set(evaluator):
    plan = Plan((900, 500, 100))
    low, full = evaluator.evaluate_progressively(plan, [16, 48])
    assert (low.num_samples, full.num_samples) == (16, 48)
    assert full.fid == pytest.approx(evaluator.evaluate(plan, 48).fid, rel=1e-9)
    with pytest.raises(ConfigError, match="increase"):
        list(evaluator.evaluate_progressively(plan, [48, 16]))


def test_a_search_stops_hopeless_candidates_at_the_small_sample(evaluator):
    policy = FidelityPolicy(low_samples=16, keep=2, min_pairs=4)
    sampler = TimestepSampler(k_min=2, k_max=3, population_size=6, num_parents=2, num_mutants=3, num_crossovers=2, seed=0)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(PlanObjective(evaluator, num_samples=48, fidelity=policy), n_trials=16)

    trials = study.get_trials(states=(TrialState.COMPLETE,))
    full = [t for t in trials if t.user_attrs["fidelity"] == "full"]
    low = [t for t in trials if t.user_attrs["fidelity"] == "low"]
    assert len(full) >= policy.min_pairs and low, "some candidates stop early once the shift is measured"
    assert all(t.user_attrs["num_samples"] == 48 and "fid_low" in t.user_attrs for t in full)
    for trial in low:
        assert trial.user_attrs["num_samples"] == 16
        assert trial.values[0] == pytest.approx(trial.user_attrs["fid_estimate"])
        assert trial.user_attrs["fid_optimistic"] <= trial.user_attrs["fid_estimate"]
    # A full-size trial's FID is the FID of all its samples: the same as evaluating the plan outright.
    from optuna_diffusion.samplers import plan_from_trial

    assert full[-1].values[0] == pytest.approx(evaluator.evaluate(plan_from_trial(full[-1]), 48).fid, rel=1e-9)
    # An early-stopped estimate is dominated by full-size trials: never on the front.
    assert all(t.user_attrs["fidelity"] == "full" for t in study.best_trials)
    assert all(math.isfinite(t.values[0]) for t in trials)
