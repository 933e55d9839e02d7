"""The base of the families of text-to-image diffusers pipelines (one family per pipeline class).

A pipeline model (:func:`~optuna_diffusion.models.load_diffusion_model` of a pipeline folder) keeps its
pipeline, and its family does, per step, what that pipeline's ``__call__`` does around the denoiser:

* prompts are encoded by the pipeline's own ``encode_prompt`` (the family's :meth:`encode`), once per
  distinct prompt and negative prompt, through the model's
  :class:`~optuna_diffusion.pipelines.PromptEncoder`;
* the denoiser is called with the keyword inputs the pipeline passes (pooled projections, time ids,
  attention masks, ...), classifier-free guidance stacking the halves in the pipeline's order;
* the initial noise has the latent shape the pipeline's ``prepare_latents`` makes, drawn per sample
  (common random numbers);
* the VAE decodes the final latents with the factors the pipeline applies.

A batch's :class:`~optuna_diffusion.families.Conditions` carries the prompt indices (``prompts``) and,
as ``text``, the prompt set seen through the encoder (:class:`~optuna_diffusion.pipelines.EncodedPrompts`).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError
from ..pipelines import EncodedPrompts
from ..prompts import PromptSet
from ._base import Conditions, ModelFamily, chunked_noise

if TYPE_CHECKING:
    from ..protocols import ModelLike as DiffusionModel  # what a family reads of models.DiffusionModel
    from ..protocols import SettingsLike as SamplingSettings  # what it reads of generation.SamplingSettings


def call_default(pipeline: Any, argument: str) -> Any:
    """The default of ``argument`` in the pipeline's ``__call__`` (what a plain ``pipe(prompt)`` uses)."""
    parameter = inspect.signature(type(pipeline).__call__).parameters.get(argument)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise ConfigError(f"{type(pipeline).__name__}.__call__ has no default for {argument!r}")
    return parameter.default


def concat(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-prompt embeddings (batch 1 each) concatenated into one batch, key by key."""
    return {key: torch.cat([item[key] for item in items]) for key in items[0]}


class PipelineFamily(ModelFamily):
    """A text-to-image pipeline: latents decoded by a VAE, prompts encoded by the pipeline.

    Subclasses name the pipeline classes they serve (``pipelines``) and implement :meth:`encode` and
    :meth:`inputs`; they override what their pipeline does differently.
    """

    name = "pipeline"
    pipelines: tuple[str, ...] = ()
    uses_prompts = True
    main_input = "hidden_states"
    """The denoiser's argument for the noisy latents (``"sample"`` for UNets)."""
    expand_timestep = True
    """Whether the pipeline passes one time step per sample (transformers) or a scalar (UNets)."""
    upcasts_vae = False
    """Whether the pipeline decodes in float32 a float16 VAE whose config says ``force_upcast`` (SDXL)."""

    # Sample space --------------------------------------------------------------------------------

    def vae_scale_factor(self, model: DiffusionModel) -> int:
        """Pixels per latent pixel: ``2 ** (len(vae.config.block_out_channels) - 1)``, as the pipelines compute it."""
        return int(2 ** (len(model.vae.config.block_out_channels) - 1))

    def default_image_size(self, model: DiffusionModel) -> tuple[int, int]:
        """The ``(height, width)`` a plain ``pipe(prompt)`` makes."""
        size = getattr(model.pipeline, "default_sample_size", None) or model.denoiser.config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        factor = self.vae_scale_factor(model)
        return int(height) * factor, int(width) * factor

    def latent_multiple(self, model: DiffusionModel) -> int:
        """What the latent height and width must be multiples of (the transformer's patch size)."""
        return int(getattr(model.denoiser.config, "patch_size", None) or 1)

    def image_size(self, model: DiffusionModel) -> tuple[int, int]:
        """The model's image size (``model.image_size``, default the pipeline's), checked to fit the latents."""
        height, width = model.image_size or self.default_image_size(model)
        multiple = self.vae_scale_factor(model) * self.latent_multiple(model)
        if height % multiple or width % multiple:
            raise ConfigError(
                f"image size {height}x{width} of {model.source} must be a multiple of {multiple} "
                f"(VAE factor {self.vae_scale_factor(model)} times {self.latent_multiple(model)})"
            )
        return height, width

    def latent_shape(self, model: DiffusionModel) -> tuple[int, int, int]:
        """``(C, h, w)`` of one sample's latents, as the pipeline's ``prepare_latents`` makes them."""
        height, width = self.image_size(model)
        factor = self.vae_scale_factor(model)
        return int(model.denoiser.config.in_channels), height // factor, width // factor

    def sample_shape(self, model: DiffusionModel) -> tuple[int, ...]:
        return self.latent_shape(model)

    def initial_noise(self, model: DiffusionModel, seed: int, start: int, stop: int) -> torch.Tensor:
        return chunked_noise(seed, start, stop, self.latent_shape(model))

    def unscale_latents(self, model: DiffusionModel, latents: torch.Tensor) -> torch.Tensor:
        """Final latents as the VAE takes them (the pipeline's ``latents / scaling_factor``)."""
        return latents / model.vae.config.scaling_factor

    def decode(self, model: DiffusionModel, x: torch.Tensor) -> torch.Tensor:
        vae = model.vae
        reference = next(vae.parameters())
        latents = self.unscale_latents(model, x.to(device=reference.device, dtype=reference.dtype))
        return vae.decode(latents, return_dict=False)[0].float()

    # Prompts -------------------------------------------------------------------------------------

    def encode(self, model: DiffusionModel, text: str) -> dict[str, torch.Tensor]:
        """Embeddings of one prompt (batch 1 each), by the pipeline's ``encode_prompt``."""
        raise NotImplementedError

    def encode_negative(self, model: DiffusionModel, text: str | None) -> dict[str, torch.Tensor]:
        """Embeddings of the unconditional pass: the negative prompt, or the pipeline's default (``""``)."""
        return self.encode(model, "" if text is None else text)

    def check(self, model: DiffusionModel, settings: SamplingSettings, *, text: Any = None) -> None:
        if not isinstance(text, EncodedPrompts):
            raise ConfigError(f"{model.source} is a text-to-image pipeline: give the image generator a prompt set")
        if settings.num_classes is not None:
            raise ConfigError(
                f"{model.source} is conditioned on prompts, not class labels: unset sampling.num_classes"
            )
        self.image_size(model)

    def embeddings(self, conditions: Conditions, *, unconditional: bool) -> dict[str, torch.Tensor]:
        """The batch's prompt (or negative prompt) embeddings, from the encoder's cache."""
        table, indices = conditions.text, conditions.prompts
        if indices is None or len(indices) != conditions.size:
            raise ConfigError("a text-to-image batch needs one prompt index per sample")
        items = [table.negative(i) if unconditional else table.positive(i) for i in indices]
        return concat(items)

    # The denoiser call ---------------------------------------------------------------------------

    def timestep_input(self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The ``timestep`` argument the pipeline passes at ``t`` for a batch ``x``."""
        t = torch.as_tensor(t, device=x.device)
        if not self.expand_timestep:
            return t
        return t.reshape(-1)[:1].expand(len(x))

    def call_kwargs(self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor, inputs: dict[str, Any]) -> dict:
        """Every keyword argument of one denoiser call (the latents in the denoiser's dtype)."""
        x = x.to(model.denoiser.dtype)
        return {self.main_input: x, "timestep": self.timestep_input(model, x, t), **inputs}

    def call(self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        output = model.denoiser(**self.call_kwargs(model, x, t, inputs), return_dict=False)[0]
        return output[:, : x.shape[1]]  # learned-variance channels cut (PixArt), as the pipelines do

    def example_inputs(self, model: DiffusionModel, settings: SamplingSettings) -> dict[str, Any] | None:
        """The keyword arguments of one batch-1 denoiser call, as the engine makes it (for MACs)."""
        encoded = model.prompt_encoder.bind(PromptSet(["an example prompt"], source="the MACs example"))
        conditions = Conditions(size=1, prompts=(0,), text=encoded)
        inputs = self.inputs(model, conditions, settings, unconditional=False)
        x = torch.zeros(1, *self.sample_shape(model), device=model.device)
        return self.call_kwargs(model, x, torch.tensor(500.0, device=model.device), inputs)
