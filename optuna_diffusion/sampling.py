"""Generate samples of a Plan: common random numbers, guidance, batching, block choices.

Every candidate of a study is judged on the same initial noise and the same class labels, drawn
from the study's seed (common random numbers), so FID differences come from the plans and not
from the draw. Noise is drawn in fixed chunks, so sample i gets the same noise whatever the batch
size. Images come out in batches; only one batch is alive at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from .blocks import BlockSwitch
from .errors import ConfigError
from .models import DiffusionModel
from .plan import Plan
from .solvers import Denoise, NoiseSchedule, get_solver

_NOISE_CHUNK = 64


@dataclass(frozen=True)
class SamplingSettings:
    """How samples of a plan are drawn.

    Args:
        solver: one of :data:`optuna_diffusion.solvers.SOLVERS`.
        guidance_scale: classifier-free guidance weight w; ``w <= 1`` runs the conditional pass only.
        num_classes: number of classes of a class-conditional model (None: unconditional).
        null_class: label of the unconditional pass, needed for guidance.
        clip_x0: clip the predicted x0 to [-1, 1] before every update.
        seed: seed of the common random numbers (noise and labels).
        batch_size: images per UNet batch (doubled inside under guidance).
    """

    solver: str = "ddim"
    guidance_scale: float = 1.0
    num_classes: int | None = None
    null_class: int | None = None
    clip_x0: bool = False
    seed: int = 0
    batch_size: int = 256

    @property
    def uses_guidance(self) -> bool:
        return self.guidance_scale > 1.0

    def check(self, model: DiffusionModel, *, text_guidance: bool = False) -> None:
        """Raise :class:`ConfigError` if these settings cannot run on ``model``.

        ``text_guidance``: the unconditional pass of guidance comes from negative prompt embeddings.
        """
        get_solver(self.solver)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")
        embeds = model.num_class_embeds
        if self.num_classes is not None and not embeds:
            raise ConfigError(f"num_classes = {self.num_classes} but the model {model.source} is unconditional")
        if self.num_classes is not None and self.num_classes > embeds:
            raise ConfigError(f"num_classes = {self.num_classes} but the model has {embeds} class embeddings")
        if self.uses_guidance and not text_guidance:
            if self.num_classes is None or self.null_class is None:
                raise ConfigError(
                    f"guidance_scale = {self.guidance_scale} needs a class-conditional model with a null class "
                    "(set num_classes and null_class, or guidance_scale = 1)"
                )
            if not 0 <= self.null_class < embeds:
                raise ConfigError(f"null_class = {self.null_class} is not a class of the model (0..{embeds - 1})")


def initial_noise(seed: int, start: int, stop: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Initial noise of samples ``start..stop-1``; sample i's noise does not depend on batching."""
    first_chunk, last_chunk = start // _NOISE_CHUNK, (stop - 1) // _NOISE_CHUNK
    chunks = [
        torch.randn((_NOISE_CHUNK, *shape), generator=torch.Generator().manual_seed(seed * 1_000_003 + chunk))
        for chunk in range(first_chunk, last_chunk + 1)
    ]
    offset = first_chunk * _NOISE_CHUNK
    return torch.cat(chunks)[start - offset : stop - offset]


def class_labels(seed: int, num_samples: int, num_classes: int) -> torch.Tensor:
    """Balanced class labels (each class num_samples / num_classes times, up to one), shuffled by ``seed``."""
    labels = torch.arange(num_samples) % num_classes
    return labels[torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed + 7919))]


@dataclass(frozen=True)
class TextConditioning:
    """Prompt embeddings for a ``UNet2DConditionModel``: ``(1, L, D)`` each, shared by the whole batch.

    ``negative_prompt_embeds`` (e.g. of the empty prompt) is the unconditional pass of guidance.
    """

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None = None


def _unet_kwargs(
    settings: SamplingSettings, labels: torch.Tensor | None, text: TextConditioning | None, size: int, unconditional: bool
) -> dict[str, torch.Tensor]:
    kwargs = {}
    if labels is not None:
        kwargs["class_labels"] = torch.full_like(labels, settings.null_class) if unconditional else labels
    if text is not None:
        embeds = text.negative_prompt_embeds if unconditional else text.prompt_embeds
        kwargs["encoder_hidden_states"] = embeds.expand(size, -1, -1)
    return kwargs


def make_denoiser(
    model: DiffusionModel,
    schedule: NoiseSchedule,
    settings: SamplingSettings,
    labels: torch.Tensor | None,
    text: TextConditioning | None = None,
) -> Denoise:
    """``denoise(x_t, t) -> epsilon`` with guidance, learned-variance split and optional x0 clipping."""
    unet = model.unet
    channels = model.sample_shape[0]

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t_int = int(round(float(t)))
        conditional = _unet_kwargs(settings, labels, text, len(x), unconditional=False)
        if settings.uses_guidance:
            unconditional = _unet_kwargs(settings, labels, text, len(x), unconditional=True)
            both = {key: torch.cat([conditional[key], unconditional[key]]) for key in conditional}
            out_cond, out_uncond = unet(torch.cat([x, x]), t, **both).sample[:, :channels].chunk(2)
            output = out_uncond + settings.guidance_scale * (out_cond - out_uncond)
        else:
            output = unet(x, t, **conditional).sample[:, :channels]
        eps = schedule.epsilon(output.float(), x.float(), t_int)
        if settings.clip_x0:
            alpha_prod_t = schedule.alpha_prod(t_int).float()
            x0 = ((x - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()).clamp(-1, 1)
            eps = (x - alpha_prod_t.sqrt() * x0) / (1 - alpha_prod_t).sqrt()
        return eps

    return denoise


class PlanSampler:
    """Draws samples of any Plan from one model; installs the block switch once per model."""

    def __init__(self, model: DiffusionModel, settings: SamplingSettings, text: TextConditioning | None = None) -> None:
        is_text_model = type(model.unet).__name__ == "UNet2DConditionModel"
        if is_text_model and text is None:
            raise ConfigError(f"{model.source} is a UNet2DConditionModel: give prompt embeddings (TextConditioning)")
        if is_text_model and settings.uses_guidance and text.negative_prompt_embeds is None:
            raise ConfigError("guidance on a UNet2DConditionModel needs negative_prompt_embeds (e.g. of the empty prompt)")
        settings.check(model, text_guidance=is_text_model)
        self.model = model
        self.settings = settings
        self.text = text
        self.schedule = NoiseSchedule.from_scheduler_config(model.scheduler_config)
        self.solver = get_solver(settings.solver)
        self.switch = BlockSwitch(model.unet)

    def batches(self, plan: Plan, num_samples: int) -> Iterator[torch.Tensor]:
        """Yield images of ``plan`` in [-1, 1] (unclipped), batch by batch, for samples 0..num_samples-1."""
        if plan.num_train_timesteps != self.schedule.num_train_timesteps:
            raise ConfigError(
                f"plan is for T = {plan.num_train_timesteps} but the model has T = {self.schedule.num_train_timesteps}"
            )
        settings = self.settings
        labels = class_labels(settings.seed, num_samples, settings.num_classes) if settings.num_classes else None
        self.switch.follow(plan)
        try:
            with torch.inference_mode():
                for start in range(0, num_samples, settings.batch_size):
                    stop = min(start + settings.batch_size, num_samples)
                    x = initial_noise(settings.seed, start, stop, self.model.sample_shape).to(self.model.device)
                    batch_labels = labels[start:stop].to(self.model.device) if labels is not None else None
                    denoise = make_denoiser(self.model, self.schedule, settings, batch_labels, self.text)
                    generator = torch.Generator().manual_seed(settings.seed * 7 + start)
                    yield self.solver(denoise, x, plan.timesteps, self.schedule, generator)
        finally:
            self.switch.unfollow()

    def close(self) -> None:
        """Remove the block wrappers from the model."""
        self.switch.remove()

    def __enter__(self) -> "PlanSampler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
