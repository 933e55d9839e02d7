"""Pinning a plan's schedule on a pipeline's scheduler (for pipelines whose call takes no sigmas)."""

from __future__ import annotations

import pytest

from optuna_diffusion.errors import ConfigError
from optuna_diffusion.pipelines import pin_schedule, pipeline_schedule_kwargs, unpin_schedule

from .video_checks import FLOW_STEPS


def test_a_pinned_schedule_ignores_what_the_pipeline_asks_until_unpinned():
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    schedule = pipeline_schedule_kwargs(FLOW_STEPS, scheduler)
    pin_schedule(scheduler, schedule)
    scheduler.set_timesteps(50, device="cpu", sigmas=[1.0, 0.5])  # what a pipeline might pass

    assert scheduler.timesteps.round().tolist() == list(FLOW_STEPS)
    unpin_schedule(scheduler)
    scheduler.set_timesteps(50)
    assert len(scheduler.timesteps) == 50
    with pytest.raises(ConfigError, match="holds timesteps or sigmas"):
        pin_schedule(scheduler, {"mu": 0.5})
