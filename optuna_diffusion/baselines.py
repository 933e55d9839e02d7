"""Hand-designed K-step schedules, each returned as a Plan (full network at every step).

* ``uniform``: DDIM's even spacing, ``t = 0, T/K, 2T/K, ...`` ("leading", as DDIM and ADM space them).
* ``quadratic``: the DDIM paper's ``t_i = (i * sqrt(0.8 T) / (K - 1))^2``.
* ``karras``: EDM's rho = 7 sigmas between sigma(T-1) and sigma(0), mapped to the nearest discrete t.
* ``logsnr``: evenly spaced in log signal-to-noise ratio, mapped to the nearest discrete t.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from .errors import ConfigError
from .plan import Plan


def strictly_decreasing(steps: Iterable[float], num_train_timesteps: int) -> tuple[int, ...]:
    """Sort ``steps`` largest first and push repeated values to the nearest free steps.

    Rounding (or a sampler drawing K integers independently) can map two steps to one t.
    """
    ordered = sorted((int(s) for s in steps), reverse=True)
    if len(ordered) > num_train_timesteps:
        raise ConfigError(f"cannot place {len(ordered)} distinct steps in [0, {num_train_timesteps - 1}]")
    for i in range(1, len(ordered)):
        ordered[i] = min(ordered[i], ordered[i - 1] - 1)
    for i in range(len(ordered) - 1, -1, -1):
        ordered[i] = max(ordered[i], 0 if i == len(ordered) - 1 else ordered[i + 1] + 1)
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


def baseline_plan(name: str, num_steps: int, alphas_cumprod: torch.Tensor) -> Plan:
    """The ``name`` schedule with ``num_steps`` steps for a model with these ``alphas_cumprod``."""
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    num_train = len(alphas_cumprod)
    if not 1 <= num_steps <= num_train:
        raise ConfigError(f"number of steps must be in [1, {num_train}], got {num_steps}")
    steps = BASELINES[name](num_steps, alphas_cumprod)
    return Plan(strictly_decreasing(np.round(steps), num_train), num_train_timesteps=num_train)


def baseline_plans(num_steps: int, alphas_cumprod: torch.Tensor) -> dict[str, Plan]:
    """Every baseline schedule with ``num_steps`` steps."""
    return {name: baseline_plan(name, num_steps, alphas_cumprod) for name in BASELINES}
