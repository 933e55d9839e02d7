import numpy as np
import pytest

from optuna_diffusion.plan import Plan
from optuna_diffusion.baselines import (
    BASELINES,
    FLOW_BASELINES,
    baseline_names,
    baseline_plan,
    baseline_plans,
    baseline_timesteps,
    strictly_decreasing,
)
from optuna_diffusion.errors import ConfigError
from optuna_diffusion.schedules import NoiseSchedule, schedule_from_config

from .helpers import scheduler_config


def _flow(class_name="FlowMatchEulerDiscreteScheduler", **config):
    return schedule_from_config({"_class_name": class_name, "num_train_timesteps": 1000, **config})


def test_flow_baselines_are_the_diffusers_spacings_on_the_integer_grid():
    plain = _flow()
    assert baseline_names(plain) == ("uniform", "shifted", "scheduler")
    # Evenly spaced sigmas from 1 to 1/T (FlowMatchEulerDiscreteScheduler's default spacing).
    assert baseline_timesteps("uniform", 4, plain) == (1000, 667, 334, 1)
    assert baseline_timesteps("uniform", 10, plain) == tuple(range(1000, 0, -111))
    # Through shift 3: sigma = 3 s / (1 + 2 s) of SD3's scheduler spacing.
    shifted = baseline_timesteps("shifted", 4, plain)
    assert shifted[:3] == (1000, 858, 602)
    from diffusers import FlowMatchEulerDiscreteScheduler

    sd3 = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sd3.set_timesteps(4)
    assert shifted == tuple(int(round(float(s) * 1000)) for s in sd3.sigmas[:-1])
    # The model's own config: a shift-1 config gives uniform, a shift-3 one gives shifted.
    assert baseline_timesteps("scheduler", 4, plain) == baseline_timesteps("uniform", 4, plain)
    assert baseline_timesteps("scheduler", 4, _flow(shift=3.0)) == shifted


def test_the_scheduler_baseline_follows_dynamic_shifting_and_other_scheduler_classes():
    flux = _flow(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    small, large = (baseline_timesteps("scheduler", 6, flux, mu=flux.mu_for(n)) for n in (256, 4096))
    assert small[0] == large[0] == 1000 and all(a <= b for a, b in zip(small, large)) and small != large
    with pytest.raises(ConfigError, match="dynamic shifting: the scheduler baseline needs mu"):
        baseline_timesteps("scheduler", 6, flux)
    wan = _flow("UniPCMultistepScheduler", use_flow_sigmas=True, flow_shift=5.0, prediction_type="flow_prediction")
    # UniPC's own spacing: linspace(1, 1/T, K + 1)[:K] through shift 5 (its first sigma, 1 - 1e-6, rounds to T).
    s = np.linspace(1, 1 / 1000, 5)[:4]
    assert baseline_timesteps("scheduler", 4, wan) == tuple(int(round(1000 * 5 * x / (1 + 4 * x))) for x in s)


@pytest.mark.parametrize("name", sorted(FLOW_BASELINES))
def test_flow_baselines_give_k_distinct_steps_in_1_to_t(name):
    schedule = _flow(shift=3.0)
    for k in (1, 2, 3, 7, 50, 999, 1000):
        steps = baseline_timesteps(name, k, schedule)
        assert len(steps) == k and len(set(steps)) == k and list(steps) == sorted(steps, reverse=True)
        assert steps[0] == 1000 and steps[-1] >= 1
    assert baseline_timesteps(name, 1000, schedule) == tuple(range(1000, 0, -1))


def test_strictly_decreasing_keeps_steps_in_range_for_either_kind():
    assert strictly_decreasing([999, 999, 3, 0, 0], 1000) == (999, 998, 3, 1, 0)
    assert strictly_decreasing([1000, 1000, 3, 1, 1], 1000, lowest=1) == (1000, 999, 3, 2, 1)
    assert strictly_decreasing([1200, 5, 0], 1000, lowest=1) == (1000, 5, 1)
    with pytest.raises(ConfigError, match=r"cannot place 3 distinct steps in \[1, 2\]"):
        strictly_decreasing([2, 2, 2], 2, lowest=1)


def test_ddpm_baselines_take_the_schedule_or_its_alphas_and_are_unchanged():
    schedule = NoiseSchedule.from_scheduler_config(scheduler_config())
    assert baseline_names(schedule) == tuple(BASELINES)
    for name in BASELINES:
        assert baseline_plan(name, 4, schedule) == baseline_plan(name, 4, schedule.alphas_cumprod)
    assert baseline_plan("uniform", 4, schedule).timesteps == (750, 500, 250, 0)
    assert list(baseline_plans(4, schedule)) == list(BASELINES)
    with pytest.raises(ConfigError, match="unknown baseline 'shifted' for a DDPM-style model; choose one of uniform"):
        baseline_plan("shifted", 4, schedule)
    with pytest.raises(ConfigError, match=r"number of steps must be in \[1, 1000\], got 0"):
        baseline_timesteps("uniform", 0, schedule)
    with pytest.raises(ConfigError, match="unknown baseline 'karras' for a flow-matching model"):
        baseline_timesteps("karras", 4, _flow())


def test_flow_baselines_are_flow_plans_starting_at_pure_noise():
    plan = baseline_plan("uniform", 4, _flow())
    assert plan.schedule_kind == "flow" and plan.timesteps[0] == 1000 and plan.num_train_timesteps == 1000
    assert plan == Plan(plan.timesteps, num_train_timesteps=1000, schedule_kind="flow")
