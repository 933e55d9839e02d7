import math

import pytest

from optuna_diffusion.errors import PlanError
from optuna_diffusion.plan import Plan


def test_plan_normalises_and_round_trips_json():
    plan = Plan([944, 834, 574, 94], skips=[[], ["mid.attn.0"], [], []], reuses=[[], [], ["up.0"], []])
    assert plan.timesteps == (944, 834, 574, 94)
    assert plan.skips[1] == frozenset({"mid.attn.0"})
    assert Plan.from_json(plan.to_json()) == plan
    assert plan.block_names() == {"mid.attn.0", "up.0"}
    assert not plan.is_full_network
    assert Plan([10, 5]).is_full_network


def test_plan_prints_readably():
    text = str(Plan([900, 500, 100], skips=[[], ["down.0.resnet.1"], []]))
    assert text == "3 steps: 900 > 500 > 100; t=500: skip down.0.resnet.1"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(timesteps=[]), "at least one time step"),
        (dict(timesteps=[500, 500]), "distinct"),
        (dict(timesteps=[100, 500]), "strictly decreasing"),
        (dict(timesteps=[1000, 5]), "outside [0, 999]"),
        (dict(timesteps=[5, -1]), "outside [0, 999]"),
        (dict(timesteps=[500.5, 3]), "must be an integer"),
        (dict(timesteps=[math.nan, 3]), "must be an integer"),
        (dict(timesteps=[math.inf, 3]), "must be an integer"),
        (dict(timesteps=[True, 0]), "must be an integer"),
        (dict(timesteps="900,100"), "list of integers"),
        (dict(timesteps=[900, 100], skips=[["a"]]), "1 entries but the plan has 2"),
        (dict(timesteps=[900, 100], reuses=[["up.0"], []]), "step 0 cannot reuse"),
        (dict(timesteps=[900, 100], skips=[[], ["x"]], reuses=[[], ["x"]]), "both skips and reuses"),
        (dict(timesteps=[900, 100], skips=["ab", []]), "list of block names"),
    ],
)
def test_plan_rejects_bad_input_in_one_line(kwargs, message):
    with pytest.raises(PlanError) as error:
        Plan(**kwargs)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_integral_floats_are_accepted():
    assert Plan([900.0, 100]).timesteps == (900, 100)


def test_from_json_rejects_garbage():
    with pytest.raises(PlanError, match="not valid JSON"):
        Plan.from_json("{oops")
    with pytest.raises(PlanError, match="unknown plan fields"):
        Plan.from_json('{"timesteps": [3], "skip": []}')


def test_baselines_are_valid_plans_of_k_distinct_steps():
    from optuna_diffusion.baselines import BASELINES, baseline_plan, strictly_decreasing
    from optuna_diffusion.solvers import NoiseSchedule

    from .helpers import scheduler_config

    alphas_cumprod = NoiseSchedule.from_scheduler_config(scheduler_config()).alphas_cumprod
    for name in BASELINES:
        for k in (1, 2, 4, 6, 10, 50, 1000):
            assert baseline_plan(name, k, alphas_cumprod).num_steps == k
    assert baseline_plan("uniform", 4, alphas_cumprod).timesteps == (750, 500, 250, 0)
    assert baseline_plan("quadratic", 4, alphas_cumprod).timesteps == (800, 356, 89, 0)
    assert baseline_plan("karras", 4, alphas_cumprod).timesteps[0] == 999
    assert strictly_decreasing([999, 999, 3, 0, 0], 1000) == (999, 998, 3, 1, 0)
