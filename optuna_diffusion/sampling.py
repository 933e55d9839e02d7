"""Generate samples of a Plan: common random numbers, guidance, batching, block choices.

Every candidate of a study is judged on the same initial noise and the same class labels, drawn
from the study's seed (common random numbers), so FID differences come from the plans and not
from the draw. Noise is drawn in fixed chunks, so sample i gets the same noise whatever the batch
size. Images come out in batches; only one batch is alive at a time.

With a :class:`~optuna_diffusion.prefix_cache.PrefixCache`, plans that share their first steps
(time steps and block choices) with a recent plan take those steps' denoiser outputs from memory;
the solver still runs every update, so results equal an uncached run bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Hashable, Iterator

import torch

from .blocks import BlockSwitch
from .errors import ConfigError
from .models import DiffusionModel
from .plan import Plan
from .prefix_cache import PrefixCache
from .settings import Section, at_least, one_of, positive, setting
from .solvers import SOLVERS, Denoise, NoiseSchedule, get_solver

_NOISE_CHUNK = 64


@dataclass(frozen=True)
class SamplingSettings(Section):
    """How samples of a plan are drawn (the ``[sampling]`` section of a study file).

    Args:
        solver: one of :data:`optuna_diffusion.solvers.SOLVERS`.
        guidance_scale: classifier-free guidance weight w; ``w <= 1`` runs the conditional pass only.
        num_classes: number of classes of a class-conditional model (None: unconditional).
        null_class: label of the unconditional pass, needed for guidance.
        clip_x0: clip the predicted x0 to [-1, 1] before every update.
        seed: seed of the common random numbers (noise and labels).
        batch_size: images per denoiser batch (doubled inside under guidance).
        prefix_cache_mb: memory for denoiser outputs of shared trajectory prefixes (0: no cache).
    """

    SECTION: ClassVar[str] = "sampling"

    solver: str = setting("ddim", check=one_of(lambda: SOLVERS))
    guidance_scale: float = setting(1.0, check=at_least(0))
    num_classes: int | None = setting(None, check=positive)
    null_class: int | None = setting(None, check=at_least(0))
    clip_x0: bool = setting(False)
    seed: int = setting(0, check=at_least(0))
    batch_size: int = setting(256, check=positive)
    prefix_cache_mb: float = setting(0.0, check=at_least(0))

    @property
    def uses_guidance(self) -> bool:
        return self.guidance_scale > 1.0

    def check(self, model: DiffusionModel, *, text_guidance: bool = False) -> None:
        """Raise :class:`ConfigError` if these settings cannot run on ``model``.

        ``text_guidance``: the unconditional pass of guidance comes from negative prompt embeddings.
        """
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
    """Draws samples of any Plan from one model; installs the block switch once per model.

    Args:
        model: the diffusion model.
        settings: how samples are drawn.
        text: prompt embeddings, for a ``UNet2DConditionModel``.
        prefix_cache: where denoiser outputs of trajectory prefixes are kept (None: no caching).
            Its entries belong to this sampler (a cache shared by several samplers shares only its
            memory bound). It assumes the model does not change; call its ``clear()`` if it does.

    Counters (over the sampler's life): ``forward_passes``, the UNet calls (one batched call per
    step under guidance), and ``image_evaluations``, the images of those calls (an image with
    guidance counts once, although the UNet sees it twice).
    """

    def __init__(
        self,
        model: DiffusionModel,
        settings: SamplingSettings,
        text: TextConditioning | None = None,
        *,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        is_text_model = type(model.unet).__name__ == "UNet2DConditionModel"
        if is_text_model and text is None:
            raise ConfigError(f"{model.source} is a UNet2DConditionModel: give prompt embeddings (TextConditioning)")
        if is_text_model and settings.uses_guidance and text.negative_prompt_embeds is None:
            raise ConfigError("guidance on a UNet2DConditionModel needs negative_prompt_embeds (e.g. of the empty prompt)")
        if prefix_cache is not None and not isinstance(prefix_cache, PrefixCache):
            raise ConfigError(f"prefix_cache must be a PrefixCache or None, got {type(prefix_cache).__name__}")
        settings.check(model, text_guidance=is_text_model)
        self.model = model
        self.settings = settings
        self.text = text
        self.schedule = NoiseSchedule.from_scheduler_config(model.scheduler_config)
        self.solver = get_solver(settings.solver)
        self.switch = BlockSwitch(model.unet)
        self.prefix_cache = prefix_cache
        self.forward_passes = 0
        self.image_evaluations = 0
        # Stands for the model, settings and text in cache keys; never equal to another sampler's.
        self._cache_scope = object()

    def batches(self, plan: Plan, num_samples: int, *, start: int = 0, stop: int | None = None) -> Iterator[torch.Tensor]:
        """Yield images of ``plan`` in [-1, 1] (unclipped), batch by batch, for samples ``start..stop-1``.

        ``stop`` defaults to ``num_samples``, the size of the whole sample set. Batches begin at
        ``start`` and step by ``batch_size``. Noise, class labels (drawn for all ``num_samples``)
        and the DDPM generator follow absolute sample indices, so with ``start`` a multiple of
        ``batch_size`` these batches are exactly the later batches of the run from 0.
        """
        if plan.num_train_timesteps != self.schedule.num_train_timesteps:
            raise ConfigError(
                f"plan is for T = {plan.num_train_timesteps} but the model has T = {self.schedule.num_train_timesteps}"
            )
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= num_samples:
            raise ConfigError(f"start must be an integer in [0, num_samples = {num_samples}], got {start!r}")
        stop = num_samples if stop is None else stop
        if isinstance(stop, bool) or not isinstance(stop, int) or not start <= stop <= num_samples:
            raise ConfigError(f"stop must be an integer in [start = {start}, num_samples = {num_samples}], got {stop!r}")
        settings = self.settings
        labels = class_labels(settings.seed, num_samples, settings.num_classes) if settings.num_classes else None
        self.switch.follow(plan)
        try:
            with torch.inference_mode():
                for first in range(start, stop, settings.batch_size):
                    last = min(first + settings.batch_size, stop)
                    x = initial_noise(settings.seed, first, last, self.model.sample_shape).to(self.model.device)
                    batch_labels = labels[first:last].to(self.model.device) if labels is not None else None
                    denoise = self._counted(make_denoiser(self.model, self.schedule, settings, batch_labels, self.text))
                    generator = torch.Generator().manual_seed(settings.seed * 7 + first)
                    if self.prefix_cache is None:
                        yield self.solver(denoise, x, plan.timesteps, self.schedule, generator)
                    else:
                        # Labels are drawn for the whole set, so a batch's labels depend on num_samples.
                        batch = (first, last, num_samples if labels is not None else None)
                        yield self._solve_with_cache(plan, denoise, x, generator, batch)
        finally:
            self.switch.unfollow()

    def _counted(self, denoise: Denoise) -> Denoise:
        def counted(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            self.forward_passes += 1
            self.image_evaluations += len(x)
            return denoise(x, t)

        return counted

    def _solve_with_cache(
        self, plan: Plan, denoise: Denoise, x: torch.Tensor, generator: torch.Generator, batch: tuple[Hashable, ...]
    ) -> torch.Tensor:
        """Run the solver on one batch, taking the outputs of the longest cached prefix from the cache.

        The output at step i depends only on ``batch`` (fixed noise, labels and generator seed), the
        time steps 0..i and the block choices of steps 0..i, so those form its key. Not on the number
        of steps: every solver's denoiser input at step i is fixed by the steps so far (see
        :mod:`optuna_diffusion.solvers`), so plans of different lengths share their common prefix.
        """
        cache = self.prefix_cache
        assert cache is not None
        num_steps = plan.num_steps
        prefix = (self._cache_scope, str(x.device), *batch)
        keys = [prefix + (plan.timesteps[: i + 1], plan.skips[: i + 1], plan.reuses[: i + 1]) for i in range(num_steps)]
        resume = cache.prefix_length(keys)
        # A step that reuses blocks needs the block outputs of the UNet call before it, which the
        # block switch has only if that call ran: start the UNet at a step without reuses (step 0
        # never has any). Its input is bit-identical, so running it again gives the cached output.
        while resume < num_steps and plan.reuses[resume]:
            resume -= 1
        served = cache.fetch(keys[:resume])
        computed: list[torch.Tensor] = []
        calls = 0

        def cached_denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            nonlocal calls
            step, calls = calls, calls + 1
            if step >= num_steps or int(round(float(t))) != plan.timesteps[step]:
                raise RuntimeError(
                    f"internal error: solver {self.settings.solver!r} called the denoiser at t={float(t)} as call "
                    f"{step + 1}, but the prefix cache expects one call per plan step {list(plan.timesteps)}"
                )
            if step < resume:
                return served[step].clone()
            eps = denoise(x_t, t)
            computed.append(eps.clone())  # a copy, in case the solver updates its argument in place
            return eps

        x0 = self.solver(cached_denoise, x, plan.timesteps, self.schedule, generator)
        if calls != num_steps:
            raise RuntimeError(
                f"internal error: solver {self.settings.solver!r} called the denoiser {calls} times for a "
                f"{num_steps}-step plan; the prefix cache needs exactly one call per step"
            )
        # Stored only now, so a solver that broke the one-call-per-step rule leaves no wrong entries.
        for key, eps in zip(keys[resume:], computed):
            cache.store(key, eps)
        return x0

    def close(self) -> None:
        """Remove the block wrappers from the model."""
        self.switch.remove()

    def __enter__(self) -> "PlanSampler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
