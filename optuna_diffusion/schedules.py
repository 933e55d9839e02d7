"""Noise schedules of the two model families a Plan can run on, read from a diffusers scheduler config.

``NoiseSchedule`` (kind ``"ddpm"``): a discrete variance-preserving (DDPM-style) schedule,
``x_t = sqrt(alpha_prod_t) x0 + sqrt(1 - alpha_prod_t) noise``, time steps ``t`` in ``[0, T - 1]``.

``FlowSchedule`` (kind ``"flow"``): rectified flow as in ``FlowMatchEulerDiscreteScheduler``,
``x_t = (1 - sigma) x0 + sigma noise`` with ``sigma = t / T``, time steps ``t`` in ``[1, T]`` (``t = T`` is
pure noise); the model predicts the velocity ``v = noise - x0``. The search chooses sigmas directly,
so the config's ``shift`` and dynamic shifting matter only for baselines and for export to a pipeline.

What ``denoise(x_t, t)`` returns to the solvers of each kind (``schedule.denoiser_output``):

======== ================= ==================================================================
kind     denoiser_output   the denoiser's job
======== ================= ==================================================================
ddpm     ``"epsilon"``     guidance on the raw output, then ``schedule.epsilon(...)`` (v- and
                           x0-prediction converted), optional x0 clipping
flow     ``"velocity"``    the raw model output after guidance, nothing else (no clipping)
======== ================= ==================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import torch

from .errors import ConfigError

# Scheduler classes whose every config is a flow-matching one; other classes are flow only with use_flow_sigmas.
_FLOW_CLASSES = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler", "FlowMatchLCMScheduler")
# Keys only flow-matching configs carry (used when a config has no _class_name).
_FLOW_ONLY_KEYS = ("shift", "base_image_seq_len", "max_image_seq_len", "invert_sigmas")


def schedule_kind(config: Mapping[str, Any]) -> str:
    """``"flow"`` or ``"ddpm"``: by ``_class_name`` when the config has one, else by its keys."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"a scheduler config must be a mapping, got {type(config).__name__}")
    class_name = config.get("_class_name")
    if config.get("use_flow_sigmas") or config.get("prediction_type") == "flow_prediction":
        return "flow"
    if class_name:
        return "flow" if class_name in _FLOW_CLASSES else "ddpm"
    return "flow" if any(key in config for key in _FLOW_ONLY_KEYS) else "ddpm"


_KIND_NAMES = {"ddpm": "DDPM-style", "flow": "flow-matching"}


def _require_kind(config: Mapping[str, Any], kind: str) -> None:
    """ConfigError unless ``config`` is a schedule of ``kind`` (a schedule class reads only its own kind)."""
    found = schedule_kind(config)
    if found != kind:
        raise ConfigError(
            f"{config.get('_class_name') or 'this scheduler config'} is a {_KIND_NAMES[found]} schedule, not a "
            f"{_KIND_NAMES[kind]} one: read it with schedule_from_config"
        )


@dataclass(frozen=True)
class NoiseSchedule:
    """The discrete variance-preserving noise schedule of a model, read from its diffusers scheduler config."""

    alphas_cumprod: torch.Tensor  # (T,), float64
    prediction_type: str
    config: Mapping[str, Any]

    kind: ClassVar[str] = "ddpm"
    denoiser_output: ClassVar[str] = "epsilon"

    @classmethod
    def from_scheduler_config(cls, config: Mapping[str, Any]) -> "NoiseSchedule":
        from diffusers import DDPMScheduler

        _require_kind(config, "ddpm")
        known = stock_scheduler_config({k: v for k, v in config.items() if not k.startswith("_")})
        scheduler = DDPMScheduler.from_config(known)
        prediction_type = scheduler.config.prediction_type
        if prediction_type not in {"epsilon", "v_prediction", "sample"}:
            raise ConfigError(f"unsupported prediction_type {prediction_type!r}")
        return cls(scheduler.alphas_cumprod.to(torch.float64), prediction_type, dict(known))

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    @property
    def timestep_range(self) -> tuple[int, int]:
        """Smallest and largest valid time step of a plan, inclusive."""
        return 0, self.num_train_timesteps - 1

    def alpha_prod(self, t: torch.Tensor | int) -> torch.Tensor:
        return self.alphas_cumprod[int(t)]

    def epsilon(self, model_output: torch.Tensor, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """Noise prediction epsilon from the model's raw output, whatever it predicts."""
        if self.prediction_type == "epsilon":
            return model_output
        alpha_prod_t = self.alpha_prod(t).to(x_t.dtype)
        if self.prediction_type == "v_prediction":
            return alpha_prod_t.sqrt() * model_output + (1 - alpha_prod_t).sqrt() * x_t
        return (x_t - alpha_prod_t.sqrt() * model_output) / (1 - alpha_prod_t).sqrt()


_ZERO_SNR_FLOOR = 2**-24
"""The last ``alphas_cumprod`` of a zero-terminal-SNR schedule, as DPM-Solver and Euler set it (not 0: sigma finite)."""


def stock_scheduler_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` as stock diffusers schedulers (DDPM, DPM-Solver, Euler ...) read it, with the same noise levels.

    CogVideoX's schedulers shift the SNR of their ``alphas_cumprod`` (``snr_shift_scale``, then a zero-terminal
    rescale), which no other scheduler knows: their config becomes ``trained_betas`` that give those levels
    (the zero terminal SNR floored at 2**-24, as stock schedulers floor it). Other configs pass unchanged.
    """
    config = dict(config)
    if config.get("snr_shift_scale") is None:
        return config
    from diffusers import CogVideoXDDIMScheduler

    alphas_cumprod = CogVideoXDDIMScheduler.from_config(config).alphas_cumprod.to(torch.float64).clone()
    alphas_cumprod[-1] = alphas_cumprod[-1].clamp_min(_ZERO_SNR_FLOOR)
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    config.pop("snr_shift_scale")
    return {**config, "trained_betas": (1 - alphas_cumprod / previous).tolist(), "rescale_betas_zero_snr": False}


def _number(config: Mapping[str, Any], key: str, default: float | None) -> float | None:
    value = config.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"scheduler config {key} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class FlowSchedule:
    """A rectified-flow schedule: ``sigma = t / T`` for integer time steps ``t`` in ``[1, T]``.

    Args:
        num_train_timesteps: T, the model's timestep units (``t = T`` is sigma = 1, pure noise).
        shift: the static shift of the config (``shift``, or ``flow_shift`` of multistep schedulers).
        use_dynamic_shifting: the shift depends on the image size through ``mu`` (Flux, SD3.5 ...).
        time_shift_type: ``"exponential"`` (effective shift ``exp(mu)``) or ``"linear"`` (shift ``mu``).
        base_shift, max_shift, base_image_seq_len, max_image_seq_len: how pipelines compute ``mu``.
        shift_terminal: the config's terminal sigma stretch (``None``: off).
        class_name: the config's scheduler class (the one its pipeline runs).
        config: the whole config, as read.
    """

    num_train_timesteps: int
    shift: float = 1.0
    use_dynamic_shifting: bool = False
    time_shift_type: str = "exponential"
    base_shift: float | None = 0.5
    max_shift: float | None = 1.15
    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096
    shift_terminal: float | None = None
    class_name: str = "FlowMatchEulerDiscreteScheduler"
    config: Mapping[str, Any] | None = None

    kind: ClassVar[str] = "flow"
    denoiser_output: ClassVar[str] = "velocity"

    @classmethod
    def from_scheduler_config(cls, config: Mapping[str, Any]) -> "FlowSchedule":
        _require_kind(config, "flow")
        class_name = config.get("_class_name") or "FlowMatchEulerDiscreteScheduler"
        num_train = config.get("num_train_timesteps", 1000)
        if isinstance(num_train, bool) or not isinstance(num_train, int) or num_train < 1:
            raise ConfigError(f"scheduler config num_train_timesteps must be a positive integer, got {num_train!r}")
        if config.get("invert_sigmas"):
            raise ConfigError(f"{class_name} with invert_sigmas = true (t = (1 - sigma) T) is not supported")
        if config.get("prediction_type", "flow_prediction") != "flow_prediction":
            raise ConfigError(f"a flow-matching {class_name} needs prediction_type 'flow_prediction', "
                              f"got {config.get('prediction_type')!r}")
        shift_key = "shift" if class_name in _FLOW_CLASSES or "shift" in config else "flow_shift"
        shift = _number(config, shift_key, 1.0)
        if shift <= 0:
            raise ConfigError(f"scheduler config {shift_key} must be positive, got {shift}")
        time_shift_type = config.get("time_shift_type", "exponential")
        if time_shift_type not in {"exponential", "linear"}:
            raise ConfigError(f"time_shift_type must be 'exponential' or 'linear', got {time_shift_type!r}")
        terminal = _number(config, "shift_terminal", None)
        return cls(
            num_train_timesteps=num_train,
            shift=shift,
            use_dynamic_shifting=bool(config.get("use_dynamic_shifting", False)),
            time_shift_type=time_shift_type,
            base_shift=_number(config, "base_shift", 0.5),
            max_shift=_number(config, "max_shift", 1.15),
            base_image_seq_len=int(config.get("base_image_seq_len", 256)),
            max_image_seq_len=int(config.get("max_image_seq_len", 4096)),
            shift_terminal=terminal or None,
            class_name=class_name,
            config=dict(config),
        )

    @property
    def timestep_range(self) -> tuple[int, int]:
        """Smallest and largest valid time step of a plan, inclusive."""
        return 1, self.num_train_timesteps

    def sigma(self, t: int) -> float:
        return t / self.num_train_timesteps

    def sigmas(self, timesteps: Sequence[int]) -> list[float]:
        """The sigmas of a plan's time steps, checked to lie in ``[1, T]``."""
        low, high = self.timestep_range
        for t in timesteps:
            if not low <= t <= high:
                raise ConfigError(f"time step {t} of a flow-matching plan is outside [{low}, {high}]")
        return [self.sigma(t) for t in timesteps]

    def mu_for(self, image_seq_len: int) -> float:
        """The ``mu`` a Flux-style pipeline computes for ``image_seq_len`` latent tokens (linear in the length).

        diffusers' own ``calculate_shift`` (``diffusers.pipelines.flux.pipeline_flux``), as ``FluxPipeline``
        calls it: the line through ``(base_image_seq_len, base_shift)`` and ``(max_image_seq_len, max_shift)``.
        """
        if self.base_shift is None or self.max_shift is None:
            raise ConfigError("the scheduler config has no base_shift/max_shift to compute mu from")
        try:
            from diffusers.pipelines.flux.pipeline_flux import calculate_shift
        except ImportError:  # a diffusers without Flux: the same line, written out
            slope = (self.max_shift - self.base_shift) / (self.max_image_seq_len - self.base_image_seq_len)
            return self.base_shift + slope * (image_seq_len - self.base_image_seq_len)
        return float(calculate_shift(
            image_seq_len, self.base_image_seq_len, self.max_image_seq_len, self.base_shift, self.max_shift
        ))

    def shift_factor(self, mu: float | None = None) -> float:
        """The factor ``a`` of the shift ``sigma = a s / (1 + (a - 1) s)`` the config applies to sigmas ``s``.

        Dynamic shifting ``time_shift(mu, 1, s)`` is that map with ``a = exp(mu)`` (exponential) or
        ``a = mu`` (linear).
        """
        if not self.use_dynamic_shifting:
            return self.shift
        if mu is None:
            raise ConfigError(
                f"{self.class_name} uses dynamic shifting: give mu (e.g. FlowSchedule.mu_for(image_seq_len))"
            )
        factor = math.exp(mu) if self.time_shift_type == "exponential" else mu
        if not factor > 0:
            raise ConfigError(f"linear dynamic shifting needs mu > 0, got {mu}")
        return factor

    def unshift(self, sigmas: Sequence[float], mu: float | None = None) -> list[float]:
        """The sigmas ``s`` that the config's shift maps onto ``sigmas``: ``s = sigma / (a - (a - 1) sigma)``."""
        a = self.shift_factor(mu)
        return [sigma / (a - (a - 1) * sigma) for sigma in sigmas]


def schedule_from_config(scheduler_config: Mapping[str, Any]) -> NoiseSchedule | FlowSchedule:
    """The schedule of a model from its diffusers scheduler config: a :class:`FlowSchedule` for
    ``FlowMatch*`` schedulers and multistep schedulers with ``use_flow_sigmas``, else a :class:`NoiseSchedule`."""
    if schedule_kind(scheduler_config) == "flow":
        return FlowSchedule.from_scheduler_config(scheduler_config)
    return NoiseSchedule.from_scheduler_config(scheduler_config)
