"""Few-step solvers for arbitrary time-step sequences.

Every solver has one signature, ``solver(denoise, x_T, timesteps, schedule, generator) -> x_0``,
where ``denoise(x_t, t)`` returns the noise prediction epsilon (guidance, learned-variance
channels, v-prediction and x0 clipping are already handled by the denoiser). The schedule is plain
data, so solvers are interchangeable. The last update of every solver jumps to x0 (alpha = 1).
Every solver calls ``denoise`` once per time step, and its input at step i depends only on time steps
0..i, not on the steps after them or their number (DPM-Solver++ lowers its order only in the last
update); the prefix cache relies on both.

Notation (DDIM paper, Song et al. 2021, eq. 12 with sigma = 0):
    alpha_prod_t       cumulative product of (1 - beta) up to t ("alpha_t" in the paper)
    x0_pred            (x_t - sqrt(1 - alpha_prod_t) * eps) / sqrt(alpha_prod_t)
    x_prev             sqrt(alpha_prod_t_prev) * x0_pred + sqrt(1 - alpha_prod_t_prev) * eps
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from .errors import ConfigError

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NoiseSchedule:
    """The discrete noise schedule of a model, read from its diffusers scheduler config."""

    alphas_cumprod: torch.Tensor  # (T,), float64
    prediction_type: str
    config: Mapping[str, Any]

    @classmethod
    def from_scheduler_config(cls, config: Mapping[str, Any]) -> "NoiseSchedule":
        from diffusers import DDPMScheduler

        known = {k: v for k, v in config.items() if not k.startswith("_")}
        scheduler = DDPMScheduler.from_config(known)
        prediction_type = scheduler.config.prediction_type
        if prediction_type not in {"epsilon", "v_prediction", "sample"}:
            raise ConfigError(f"unsupported prediction_type {prediction_type!r}")
        return cls(scheduler.alphas_cumprod.to(torch.float64), prediction_type, dict(known))

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alphas_cumprod)

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


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, alpha_prod_t: torch.Tensor, alpha_prod_t_prev: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM update (eta = 0) between any two noise levels, computed in float32."""
    dtype = x_t.dtype
    x_t, eps = x_t.float(), eps.float()
    alpha_prod_t, alpha_prod_t_prev = alpha_prod_t.float(), alpha_prod_t_prev.float()
    # 1. predicted x0 (eq. 12, "predicted x0")
    x0_pred = (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()
    # 2. direction pointing to x_t and the update (eq. 12 with sigma_t = 0)
    x_prev = alpha_prod_t_prev.sqrt() * x0_pred + (1 - alpha_prod_t_prev).sqrt() * eps
    return x_prev.to(dtype)


def sample_ddim(
    denoise: Denoise, x: torch.Tensor, timesteps: Sequence[int], schedule: NoiseSchedule, generator: torch.Generator | None = None
) -> torch.Tensor:
    """DDIM (Song et al. 2021) over any decreasing time steps; the last update jumps to x0."""
    one = torch.ones((), dtype=torch.float64)
    for i, t in enumerate(timesteps):
        eps = denoise(x, torch.tensor(t, device=x.device))
        alpha_prod_t_prev = schedule.alpha_prod(timesteps[i + 1]) if i + 1 < len(timesteps) else one
        x = ddim_step(x, eps, schedule.alpha_prod(t), alpha_prod_t_prev)
    return x


def _run_diffusers_scheduler(
    scheduler: Any, denoise: Denoise, x: torch.Tensor, timesteps: Sequence[int], **step_kwargs: Any
) -> torch.Tensor:
    """Drive a diffusers scheduler over custom time steps; the model is asked for epsilon."""
    scheduler.set_timesteps(timesteps=list(timesteps), device=x.device)
    x = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)
        eps = denoise(model_input, t)
        x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
    return x


def _scheduler_config(schedule: NoiseSchedule, **overrides: Any) -> dict[str, Any]:
    # The denoiser always returns epsilon, and clipping is done there, not by the scheduler.
    return {**schedule.config, "prediction_type": "epsilon", "clip_sample": False, "thresholding": False, **overrides}


def sample_dpmpp_2m(
    denoise: Denoise, x: torch.Tensor, timesteps: Sequence[int], schedule: NoiseSchedule, generator: torch.Generator | None = None
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022) through diffusers' ``DPMSolverMultistepScheduler``."""
    from diffusers import DPMSolverMultistepScheduler

    config = _scheduler_config(schedule, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero")
    return _run_diffusers_scheduler(DPMSolverMultistepScheduler.from_config(config), denoise, x, timesteps)


def sample_euler(
    denoise: Denoise, x: torch.Tensor, timesteps: Sequence[int], schedule: NoiseSchedule, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022) via ``EulerDiscreteScheduler``."""
    from diffusers import EulerDiscreteScheduler

    config = _scheduler_config(schedule, final_sigmas_type="zero", timestep_spacing="linspace")
    return _run_diffusers_scheduler(EulerDiscreteScheduler.from_config(config), denoise, x, timesteps)


def sample_ddpm(
    denoise: Denoise, x: torch.Tensor, timesteps: Sequence[int], schedule: NoiseSchedule, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020) via ``DDPMScheduler``; stochastic, seeded by ``generator``."""
    from diffusers import DDPMScheduler

    config = _scheduler_config(schedule, variance_type="fixed_small")
    return _run_diffusers_scheduler(DDPMScheduler.from_config(config), denoise, x, timesteps, generator=generator)


SOLVERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddim": sample_ddim,
    "dpmpp-2m": sample_dpmpp_2m,
    "euler": sample_euler,
    "ddpm": sample_ddpm,
}


def get_solver(name: str) -> Callable[..., torch.Tensor]:
    """The solver called ``name`` (one of :data:`SOLVERS`)."""
    try:
        return SOLVERS[name]
    except KeyError:
        raise ConfigError(f"unknown solver {name!r}; choose one of {', '.join(SOLVERS)}") from None
