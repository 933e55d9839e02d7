"""A plan's schedule fixed on a pipeline's scheduler, for pipelines whose call takes no ``timesteps=``/``sigmas=``.

diffusers 0.42's ``WanPipeline.__call__`` sets its scheduler with ``set_timesteps(num_inference_steps,
device=device)`` alone, and ``LTXPipeline.__call__`` always passes its own ``sigmas`` (a ``timesteps=`` argument
beside them is an error): no plan's schedule reaches either. :func:`pin_schedule` makes the scheduler's
``set_timesteps`` apply the plan's schedule (the arguments of
:func:`~optuna_diffusion.pipelines.pipeline_schedule_kwargs`) whatever it is asked, so the call runs the plan
exactly; pass ``num_inference_steps`` equal to the plan's step count all the same (the pipeline's progress
bar counts with it).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError


class PinnedSchedule:
    """A scheduler's ``set_timesteps``, bound to fixed ``timesteps=``/``sigmas=`` (and ``mu``): what it is given is ignored."""

    def __init__(self, set_timesteps: Any, schedule: Mapping[str, Any]) -> None:
        self.unpinned = set_timesteps
        # UniPC's set_timesteps multiplies sigmas by a float, which a list does not allow.
        self.schedule = {key: np.asarray(value, dtype=np.float64) if key == "sigmas" else value
                         for key, value in schedule.items()}

    def __call__(
        self, num_inference_steps: int | None = None, device: Any = None, sigmas: Any = None, mu: Any = None,
        timesteps: Any = None, **ignored: Any,
    ) -> None:
        # The named arguments stay in the signature: pipelines check it before passing sigmas (retrieve_timesteps).
        self.unpinned(device=device, **self.schedule)


def pin_schedule(scheduler: Any, schedule: Mapping[str, Any]) -> Any:
    """Make ``scheduler.set_timesteps`` set ``schedule`` on every call; returns the scheduler.

    Args:
        scheduler: the pipeline's scheduler (``pipe.scheduler``), already the one that runs the study's
            solver (:func:`~optuna_diffusion.pipelines.scheduler_for_solver`).
        schedule: ``pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler)`` (plus ``mu`` under dynamic
            shifting).

    Calling it again replaces the pinned schedule; ``unpin_schedule`` restores the scheduler's own.
    """
    if not hasattr(scheduler, "set_timesteps"):
        raise ConfigError(f"expected a diffusers scheduler (pipe.scheduler), got {type(scheduler).__name__}")
    unknown = set(schedule) - {"timesteps", "sigmas", "mu"}
    if unknown or not schedule.keys() & {"timesteps", "sigmas"}:
        raise ConfigError(f"a pinned schedule holds timesteps or sigmas (and mu), got {sorted(schedule)}")
    unpin_schedule(scheduler)
    scheduler.set_timesteps = PinnedSchedule(scheduler.set_timesteps, schedule)
    return scheduler


def unpin_schedule(scheduler: Any) -> Any:
    """Give ``scheduler`` back its own ``set_timesteps`` (after :func:`pin_schedule`); returns the scheduler."""
    if isinstance(vars(scheduler).get("set_timesteps"), PinnedSchedule):
        del scheduler.set_timesteps
    return scheduler
