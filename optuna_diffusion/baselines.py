"""Hand-designed K-step schedules, each returned as a Plan (full network at every step).

DDPM-style models (:data:`BASELINES`, time steps in ``[0, T-1]``):

* ``uniform``: DDIM's even spacing, ``t = 0, T/K, 2T/K, ...`` ("leading", as DDIM and ADM space them).
* ``quadratic``: the DDIM paper's ``t_i = (i * sqrt(0.8 T) / (K - 1))^2``.
* ``karras``: EDM's rho = 7 sigmas between sigma(T-1) and sigma(0), mapped to the nearest discrete t.
* ``logsnr``: evenly spaced in log signal-to-noise ratio, mapped to the nearest discrete t.

Flow-matching models (:data:`FLOW_BASELINES`, time steps ``t = round(sigma T)`` in ``[1, T]``), each the
sigmas a ``FlowMatchEulerDiscreteScheduler``-style ``set_timesteps(K)`` gives:

* ``uniform``: evenly spaced sigmas from 1 to 1/T (diffusers' default spacing, shift 1).
* ``shifted``: those sigmas through shift 3, as SD3's scheduler (shift 3.0) spaces them.
* ``scheduler``: what the model's own scheduler config gives for K steps (its class, shift, dynamic
  shifting with ``mu``, terminal stretch).
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from .errors import ConfigError, first_line
from .plan import Plan
from .schedules import FlowSchedule, NoiseSchedule


def strictly_decreasing(steps: Iterable[float], num_train_timesteps: int, *, lowest: int = 0) -> tuple[int, ...]:
    """Sort ``steps`` largest first and push repeated values to the nearest free steps.

    Steps lie in ``[lowest, lowest + num_train_timesteps - 1]``: ``lowest = 0`` for DDPM-style
    schedules, 1 for flow matching (``[1, T]``). Rounding (or a sampler drawing K integers
    independently) can map two steps to one t.
    """
    highest = lowest + num_train_timesteps - 1
    ordered = sorted((int(s) for s in steps), reverse=True)
    if len(ordered) > num_train_timesteps:
        raise ConfigError(f"cannot place {len(ordered)} distinct steps in [{lowest}, {highest}]")
    for i in range(len(ordered)):
        ordered[i] = min(ordered[i], highest if i == 0 else ordered[i - 1] - 1)
    for i in range(len(ordered) - 1, -1, -1):
        ordered[i] = max(ordered[i], lowest if i == len(ordered) - 1 else ordered[i + 1] + 1)
    return tuple(ordered)


def uniform(num_steps: int, alphas_cumprod: torch.Tensor) -> np.ndarray:
    stride = len(alphas_cumprod) // num_steps
    return np.arange(num_steps) * stride


def quadratic(num_steps: int, alphas_cumprod: torch.Tensor) -> np.ndarray:
    return np.linspace(0, np.sqrt(len(alphas_cumprod) * 0.8), num_steps) ** 2


def _nearest_t(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    return np.abs(table[None, :] - values[:, None]).argmin(axis=1)


def karras(num_steps: int, alphas_cumprod: torch.Tensor, rho: float = 7.0) -> np.ndarray:
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt().double().numpy()
    ramp = np.linspace(0, 1, num_steps)
    inv_max, inv_min = sigmas[-1] ** (1 / rho), sigmas[0] ** (1 / rho)
    targets = (inv_max + ramp * (inv_min - inv_max)) ** rho
    return _nearest_t(np.log(targets), np.log(sigmas))


def logsnr(num_steps: int, alphas_cumprod: torch.Tensor) -> np.ndarray:
    log_snr = torch.log(alphas_cumprod / (1 - alphas_cumprod)).double().numpy()
    targets = np.linspace(log_snr[-1], log_snr[0], num_steps)
    return _nearest_t(targets, log_snr)


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "uniform": uniform,
    "quadratic": quadratic,
    "karras": karras,
    "logsnr": logsnr,
}


def _flow_sigmas(config: Mapping[str, Any], class_name: str, num_steps: int, mu: float | None) -> np.ndarray:
    """The K sigmas (before the final 0) a flow scheduler of ``class_name`` and ``config`` gives for K steps."""
    import diffusers

    try:
        known = {k: v for k, v in config.items() if not k.startswith("_")}
        scheduler = getattr(diffusers, class_name).from_config(known)
        if config.get("use_dynamic_shifting"):
            scheduler.set_timesteps(num_steps, mu=mu)
        else:
            scheduler.set_timesteps(num_steps)
    except (AttributeError, ImportError, ValueError, TypeError, AssertionError) as error:
        raise ConfigError(f"{class_name} cannot make a {num_steps}-step schedule: {first_line(error)}") from None
    return scheduler.sigmas[:num_steps].double().numpy()


def flow_uniform(num_steps: int, schedule: FlowSchedule, mu: float | None = None) -> np.ndarray:
    config = {"num_train_timesteps": schedule.num_train_timesteps, "shift": 1.0}
    return _flow_sigmas(config, "FlowMatchEulerDiscreteScheduler", num_steps, None)


def flow_shifted(num_steps: int, schedule: FlowSchedule, mu: float | None = None) -> np.ndarray:
    config = {"num_train_timesteps": schedule.num_train_timesteps, "shift": 3.0}
    return _flow_sigmas(config, "FlowMatchEulerDiscreteScheduler", num_steps, None)


def flow_scheduler(num_steps: int, schedule: FlowSchedule, mu: float | None = None) -> np.ndarray:
    if schedule.use_dynamic_shifting and mu is None:
        raise ConfigError(
            f"{schedule.class_name} uses dynamic shifting: the scheduler baseline needs mu "
            "(e.g. FlowSchedule.mu_for(image_seq_len))"
        )
    return _flow_sigmas(schedule.config or {}, schedule.class_name, num_steps, mu)


FLOW_BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "uniform": flow_uniform,
    "shifted": flow_shifted,
    "scheduler": flow_scheduler,
}

Schedule = NoiseSchedule | FlowSchedule


def baseline_names(schedule: Schedule | torch.Tensor) -> tuple[str, ...]:
    """The baselines of a schedule's kind (:data:`BASELINES` or :data:`FLOW_BASELINES`)."""
    return tuple(FLOW_BASELINES if isinstance(schedule, FlowSchedule) else BASELINES)


def baseline_timesteps(
    name: str, num_steps: int, schedule: Schedule | torch.Tensor, *, mu: float | None = None
) -> tuple[int, ...]:
    """The ``name`` schedule's ``num_steps`` distinct time steps, largest first.

    Args:
        name: one of :func:`baseline_names` for the schedule's kind.
        num_steps: K.
        schedule: a :class:`NoiseSchedule` (or its ``alphas_cumprod``) or a :class:`FlowSchedule`.
        mu: ``mu`` of dynamic shifting, for the flow ``scheduler`` baseline of such a config.
    """
    flow = isinstance(schedule, FlowSchedule)
    table = FLOW_BASELINES if flow else BASELINES
    if name not in table:
        kind = "flow-matching" if flow else "DDPM-style"
        raise ConfigError(f"unknown baseline {name!r} for a {kind} model; choose one of {', '.join(table)}")
    num_train = schedule.num_train_timesteps if isinstance(schedule, (FlowSchedule, NoiseSchedule)) else len(schedule)
    if isinstance(num_steps, bool) or not isinstance(num_steps, Integral) or not 1 <= num_steps <= num_train:
        raise ConfigError(f"number of steps must be in [1, {num_train}], got {num_steps}")
    if flow:
        sigmas = FLOW_BASELINES[name](num_steps, schedule, mu)
        return strictly_decreasing(np.round(sigmas * num_train), num_train, lowest=1)
    alphas_cumprod = schedule.alphas_cumprod if isinstance(schedule, NoiseSchedule) else schedule
    steps = BASELINES[name](num_steps, alphas_cumprod)
    return strictly_decreasing(np.round(steps), num_train)


def _as_plan(timesteps: tuple[int, ...], schedule: Schedule | torch.Tensor) -> Plan:
    """The Plan of baseline time steps: the one place that builds Plans of either schedule kind."""
    if isinstance(schedule, FlowSchedule):
        return Plan(timesteps, num_train_timesteps=schedule.num_train_timesteps, schedule_kind="flow")
    num_train = schedule.num_train_timesteps if isinstance(schedule, NoiseSchedule) else len(schedule)
    return Plan(timesteps, num_train_timesteps=num_train)


def baseline_plan(name: str, num_steps: int, schedule: Schedule | torch.Tensor, *, mu: float | None = None) -> Plan:
    """The ``name`` schedule with ``num_steps`` steps, as a Plan.

    ``schedule``: the model's schedule, or (as before) a DDPM-style model's ``alphas_cumprod``.
    """
    return _as_plan(baseline_timesteps(name, num_steps, schedule, mu=mu), schedule)


def baseline_plans(num_steps: int, schedule: Schedule | torch.Tensor, *, mu: float | None = None) -> dict[str, Plan]:
    """Every baseline schedule of the schedule's kind with ``num_steps`` steps."""
    return {name: baseline_plan(name, num_steps, schedule, mu=mu) for name in baseline_names(schedule)}
