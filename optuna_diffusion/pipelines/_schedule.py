"""Export a plan's time steps as the argument a diffusers pipeline passes to its scheduler.

Pipelines hand ``timesteps=`` or ``sigmas=`` (and ``mu`` under dynamic shifting) to
``scheduler.set_timesteps`` through ``retrieve_timesteps``. DDPM-style plans go as ``timesteps``;
flow-matching plans go as ``sigmas``, pre-image of the plan's sigmas ``t / T`` under the shift the
pipeline's scheduler applies to whatever sigmas it is given (static ``shift``/``flow_shift``, or
``time_shift(mu, 1, s)`` of either type), so that it ends up with exactly the plan's sigmas.

Which custom schedule ``set_timesteps`` accepts, in diffusers 0.42.1 (from its signatures and code):

=================================== =========== ========== ============================================
scheduler                           timesteps=  sigmas=    used here
=================================== =========== ========== ============================================
DDPM, DDPMParallel, DDPMWuerstchen  yes         no         DDPM-style ``timesteps``
DPMSolverMultistep, -Singlestep     yes         no         DDPM-style ``timesteps``; under
                                                           ``use_flow_sigmas`` custom steps are ignored:
                                                           refused
EulerDiscrete                       yes         yes        DDPM-style ``timesteps``
Heun, LCM, TCD, SCM, CMStochastic   yes         no         DDPM-style ``timesteps``
FlowMatchEulerDiscrete, FlowMatchLCM yes        yes (+mu)  flow ``sigmas``
UniPCMultistep                      no          flow only  flow ``sigmas`` (needs ``use_flow_sigmas``;
                                                           pass them as a numpy array: it multiplies
                                                           the value by a float)
EDMEuler, FlowMapEuler, Helios,     no / yes    yes        refused (other sigma conventions)
LTXEulerAncestralRF, MiniMaxH3,
Piflow
DDIM, PNDM, LMS, EulerAncestral,    no          no         refused: swap the pipeline's scheduler
KDPM2, DEIS, SASolver, IPNDM,
FlowMatchHeun, ...
=================================== =========== ========== ============================================

The pipeline's scheduler still runs its own update rule: the result equals this package's solver
only when they are the same method (e.g. ``flow-euler`` and ``FlowMatchEulerDiscreteScheduler``).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Mapping, Sequence

import diffusers
import numpy as np

from ..errors import ConfigError, first_line
from ..schedules import FlowSchedule, NoiseSchedule, schedule_from_config
from ..solvers import SOLVER_RECORDS

# Flow schedulers whose set_timesteps(sigmas=...) shifts the given sigmas and nothing else (checked below).
_FLOW_SIGMA_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler", "FlowMatchLCMScheduler", "UniPCMultistepScheduler")
# Flow-config switches that replace custom sigmas by a schedule of their own.
_SIGMA_REWRITES = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
_TOLERANCE = 1e-5  # UniPC lowers a first sigma of 1 by 1e-6


def _class_and_config(scheduler_or_config: Any) -> tuple[type, dict[str, Any]]:
    """The scheduler class and its config (with ``_class_name``) from a scheduler or a saved config."""
    if hasattr(scheduler_or_config, "set_timesteps") and hasattr(scheduler_or_config, "config"):
        cls = type(scheduler_or_config)
        return cls, {**scheduler_or_config.config, "_class_name": cls.__name__}
    if not isinstance(scheduler_or_config, Mapping):
        raise ConfigError(f"expected a diffusers scheduler or its config, got {type(scheduler_or_config).__name__}")
    class_name = scheduler_or_config.get("_class_name")
    if not class_name:
        raise ConfigError(
            "the scheduler config has no _class_name (pipe.scheduler.config drops it): pass pipe.scheduler itself"
        )
    try:
        cls = getattr(diffusers, class_name)
        inspect.signature(cls.set_timesteps)
    except (AttributeError, ImportError) as error:
        raise ConfigError(f"diffusers has no usable scheduler {class_name!r} ({first_line(error)})") from None
    return cls, dict(scheduler_or_config)


def _checked_steps(timesteps: Sequence[int], low: int, high: int) -> list[int]:
    steps = [int(t) for t in timesteps]
    if not steps or any(s != t for s, t in zip(steps, timesteps)):
        raise ConfigError(f"time steps must be a non-empty list of integers, got {list(timesteps)!r}")
    if any(not low <= t <= high for t in steps) or any(a <= b for a, b in zip(steps, steps[1:])):
        raise ConfigError(f"time steps must be strictly decreasing integers in [{low}, {high}], got {steps}")
    return steps


def _swap_hint(solver: str | None) -> str:
    """How to give the pipeline the scheduler that runs ``solver`` (every exportable one when None)."""
    record = SOLVER_RECORDS.get(solver)
    if record is not None and record.exportable:
        return (f"give the pipeline the {record.scheduler} that runs the study's solver: "
                f"pipe.scheduler = scheduler_for_solver({solver!r}, pipe.scheduler)")
    schedulers = "; ".join(
        f"{name}: {r.scheduler}" for name, r in SOLVER_RECORDS.items() if r.exportable and r.kind == "ddpm"
    )
    return f"set pipe.scheduler = scheduler_for_solver(SOLVER, pipe.scheduler) with the study's solver ({schedulers})"


def _ddpm_kwargs(steps: list[int], cls: type, config: Mapping[str, Any], solver: str | None) -> dict[str, list[int]]:
    params = inspect.signature(cls.set_timesteps).parameters
    if "timesteps" not in params:
        accepts = "only sigmas=" if "sigmas" in params else "no custom schedule"
        raise ConfigError(
            f"{cls.__name__}.set_timesteps takes {accepts}, not the time steps of a DDPM-style plan; {_swap_hint(solver)}"
        )
    scheduler = cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    try:
        scheduler.set_timesteps(timesteps=steps)
    except (ValueError, TypeError, AssertionError) as error:
        raise ConfigError(f"{cls.__name__} refuses the plan's time steps: {first_line(error)}") from None
    visited = [int(round(float(t))) for t in dict.fromkeys(scheduler.timesteps.tolist())]  # Heun repeats steps
    if visited != steps:
        raise ConfigError(f"{cls.__name__} turns the time steps {steps} into {visited}")
    return {"timesteps": steps}


def _flow_kwargs(steps: list[int], cls: type, schedule: FlowSchedule, mu: float | None) -> dict[str, list[float]]:
    name = cls.__name__
    params = inspect.signature(cls.set_timesteps).parameters
    if "sigmas" not in params:
        if name.startswith("DPMSolver"):
            raise ConfigError(
                f"{name} with use_flow_sigmas ignores custom time steps (diffusers 0.42); give the pipeline "
                "FlowMatchEulerDiscreteScheduler or UniPCMultistepScheduler(use_flow_sigmas=True)"
            )
        raise ConfigError(f"{name}.set_timesteps takes neither timesteps= nor sigmas=: a plan cannot be exported to it")
    if name not in _FLOW_SIGMA_SCHEDULERS:
        raise ConfigError(f"{name} is not supported for export; supported: {', '.join(_FLOW_SIGMA_SCHEDULERS)}")
    config = schedule.config or {}
    for key in _SIGMA_REWRITES:
        if config.get(key):
            raise ConfigError(f"{name} with {key} = true replaces custom sigmas by its own; set it to false")
    if schedule.shift_terminal:
        raise ConfigError(
            f"{name} with shift_terminal = {schedule.shift_terminal} forces the last sigma to that value; "
            "set shift_terminal to None for a plan's schedule"
        )
    plan_sigmas = schedule.sigmas(steps)
    sigmas = _float32_exact(cls, config, schedule.unshift(plan_sigmas, mu), plan_sigmas,
                            mu if schedule.use_dynamic_shifting else None)
    _check_flow_export(cls, config, sigmas, plan_sigmas, mu if schedule.use_dynamic_shifting else None)
    return {"sigmas": sigmas}


_NUDGES = 8
"""How many float32 steps either way :func:`_float32_exact` tries around each exported sigma."""


def _float32_exact(cls: type, config: Mapping[str, Any], sigmas: list[float], expected: list[float],
                   mu: float | None) -> list[float]:
    """``sigmas`` nudged by a few float32 steps so that the scheduler's float32 shift lands exactly on the plan's.

    The shift's pre-image is computed in float64; the scheduler rounds it to float32 and shifts it in
    float32, which can land one step off the plan's sigma (0.74999994 for 0.75) and so feed the model a
    time step that differs in its last bit: invisible in float32, one bfloat16 rounding apart after a few
    steps. Each sigma's shift is elementwise, so one ``set_timesteps`` call tries one nudge for every step.
    A sigma with no exact pre-image within :data:`_NUDGES` steps keeps its float64 value.
    """
    base = np.asarray(sigmas, dtype=np.float32)
    target = np.asarray(expected, dtype=np.float32)
    chosen = list(sigmas)
    found = [False] * len(sigmas)
    for nudge in sorted(range(-_NUDGES, _NUDGES + 1), key=abs):
        candidate = base.copy()
        for _ in range(abs(nudge)):
            candidate = np.nextafter(candidate, np.float32(np.sign(nudge)) * np.float32(np.inf))
        if np.any(candidate > 1) or np.any(candidate <= 0):
            continue
        scheduler = cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})
        kwargs: dict[str, Any] = {"sigmas": candidate.astype(np.float64)}
        if mu is not None:
            kwargs["mu"] = mu
        try:
            scheduler.set_timesteps(**kwargs)
        except (ValueError, TypeError, AssertionError):
            continue
        got = scheduler.sigmas[: len(target)].numpy().astype(np.float32)
        if len(got) != len(target):
            continue
        for i in range(len(target)):
            if not found[i] and got[i] == target[i]:
                chosen[i], found[i] = float(candidate[i]), True
        if all(found):
            break
    return chosen


def _check_flow_export(cls: type, config: Mapping[str, Any], sigmas: list[float], expected: list[float],
                       mu: float | None) -> None:
    """Run the pipeline's own ``set_timesteps`` on the exported sigmas and compare with the plan's."""
    scheduler = cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    kwargs: dict[str, Any] = {"sigmas": np.asarray(sigmas, dtype=np.float64)}
    if mu is not None:
        kwargs["mu"] = mu
    try:
        scheduler.set_timesteps(**kwargs)
    except (ValueError, TypeError, AssertionError) as error:
        raise ConfigError(f"{cls.__name__} refuses the exported sigmas: {first_line(error)}") from None
    got = scheduler.sigmas[: len(expected)].double().tolist()
    worst = max(abs(a - b) for a, b in zip(got, expected))
    if len(scheduler.sigmas) != len(expected) + 1 or not worst <= _TOLERANCE:
        raise ConfigError(
            f"{cls.__name__} does not reproduce the plan's sigmas from the exported ones (off by {worst:.2g}); "
            "this diffusers version shifts sigmas differently"
        )


def pipeline_schedule_kwargs(
    timesteps: Sequence[int], scheduler_config: Any, *, mu: float | None = None, solver: str | None = None
) -> dict[str, list[int] | list[float]]:
    """The ``timesteps=`` or ``sigmas=`` argument that makes a pipeline run a plan's time steps.

    Args:
        timesteps: the plan's time steps, strictly decreasing (``[0, T-1]`` DDPM-style, ``[1, T]`` flow).
        scheduler_config: the pipeline's scheduler (``pipe.scheduler``), or its saved config with its
            ``_class_name`` (``scheduler_config.json``; ``pipe.scheduler.config`` lacks the class name).
        mu: the ``mu`` the pipeline will pass under dynamic shifting (Flux computes it from the image
            size: :meth:`FlowSchedule.mu_for`); required then, ignored otherwise.
        solver: the study's solver, named in the refusal of a scheduler that takes no time steps (PNDM ...).

    Returns:
        ``{"timesteps": [...]}`` for DDPM-style schedulers, ``{"sigmas": [...]}`` for flow matching;
        pass it to the pipeline call (with ``mu`` where the pipeline takes it), e.g.
        ``pipe(prompt, **kwargs)``. The pipeline's scheduler then holds exactly the plan's sigmas
        ``t / T`` (to float32 precision, checked here by running its ``set_timesteps``).
    """
    if mu is not None and (isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu)):
        raise ConfigError(f"mu must be a finite number, got {mu!r}")
    cls, config = _class_and_config(scheduler_config)
    schedule = schedule_from_config(config)
    low, high = schedule.timestep_range
    steps = _checked_steps(timesteps, low, high)
    if isinstance(schedule, NoiseSchedule):
        return _ddpm_kwargs(steps, cls, config, solver)
    return _flow_kwargs(steps, cls, schedule, mu)
