"""MACs of one image of a pipeline model beyond its denoiser: text encoders and the VAE decoder.

Counted with the project's fvcore counter (:class:`~optuna_diffusion.macs.FvcoreCounter`) on the calls the
engine makes: the family's ``encode`` of one prompt (every text encoder the pipeline runs for it, on
tokens padded to the pipeline's fixed length, so any prompt costs the same) and ``vae.decode`` of one
latent. Per image of a plan: the prompt's encoding, plus the negative prompt's under classifier-free
guidance (none where the pipeline uses zeros instead, SDXL without a negative prompt), plus one decode.
The denoiser's share stays in :class:`~optuna_diffusion.macs.MacsTable` (twice per step under guidance).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ConfigError
from ..macs import DEFAULT_MACS_CONVENTION, FvcoreCounter
from ..prompts import PromptSet, default_prompts

if TYPE_CHECKING:
    from ..protocols import ModelLike as DiffusionModel  # what a family reads of models.DiffusionModel
    from ..protocols import SettingsLike as SamplingSettings  # what it reads of generation.SamplingSettings

TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
"""The attribute names of a pipeline's text encoders."""


class _EncodePrompt(nn.Module):
    """One prompt's encoding, as the model's family does it, as a module call (for tracing)."""

    def __init__(self, model: DiffusionModel, text: str, *, negative: bool) -> None:
        super().__init__()
        pipe = model.pipeline
        # Registered as children, so the count attributes their MACs to them by name.
        self.encoders = nn.ModuleDict(
            {name: getattr(pipe, name) for name in TEXT_ENCODERS if getattr(pipe, name, None) is not None}
        )
        self._model, self._text, self._negative = model, text, negative

    def forward(self, anchor: torch.Tensor, return_dict: bool = False) -> tuple[torch.Tensor]:
        family, model = self._model.family, self._model
        # The tracer drops work whose result reaches no output, but eager encoders run every layer even where
        # the pipeline keeps a penultimate hidden state: every module output becomes part of the output.
        outputs: list[torch.Tensor] = []

        def keep(module: nn.Module, args: tuple, output: object) -> None:
            outputs.extend(_tensors(output))

        handles = [module.register_forward_hook(keep) for module in self.encoders.modules()]
        try:
            if self._negative:
                embeddings = family.encode_negative(model, self._text)
            else:
                embeddings = family.encode(model, self._text)
        finally:
            for handle in handles:
                handle.remove()
        kept = [*embeddings.values(), *outputs]
        return (torch.cat([tensor.flatten().float() for tensor in kept]),)


class _DecodeLatents(nn.Module):
    """``vae.decode(latents)`` as a module call (for tracing)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor, return_dict: bool = False) -> tuple[torch.Tensor]:
        return (self.vae.decode(latents, return_dict=False)[0],)


def _tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [tensor for item in value for tensor in _tensors(item)]
    if isinstance(value, dict):
        return [tensor for item in value.values() for tensor in _tensors(item)]
    return []


def _count(module: nn.Module, inputs: dict, convention: str) -> tuple[int, dict[str, int]]:
    count = FvcoreCounter(convention).count(module, inputs)
    return count.total, dict(count.by_module)


def text_encoder_macs(
    model: DiffusionModel,
    *,
    negative: str | None = None,
    unconditional: bool = False,
    convention: str = DEFAULT_MACS_CONVENTION,
) -> dict[str, int]:
    """MACs of encoding one prompt, per text encoder (``"text_encoder"``, ``"text_encoder_2"`` ...).

    Args:
        model: a text-to-image pipeline model.
        negative: with ``unconditional``, the negative prompt whose encoding is counted (None: the
            pipeline's default unconditional pass, which costs nothing where it is zeros).
        unconditional: count the unconditional pass's encoding instead of a prompt's.
        convention: what counts (:data:`~optuna_diffusion.macs.MACS_CONVENTIONS`).
    """
    if getattr(model, "prompt_encoder", None) is None:
        raise ConfigError(f"{model.source} encodes no prompts")
    text = negative if unconditional else "an example prompt"
    module = _EncodePrompt(model, text, negative=unconditional)
    anchor = torch.zeros(1, device=model.device)
    _, by_module = _count(module, {"anchor": anchor}, convention)
    return {name: by_module.get(f"encoders.{name}", 0) for name in module.encoders}


def vae_decoder_macs(model: DiffusionModel, *, convention: str = DEFAULT_MACS_CONVENTION) -> int:
    """MACs of decoding one image: ``vae.decode`` of a batch-1 latent of the model's latent shape (in ``convention``)."""
    if model.vae is None:
        raise ConfigError(f"{model.source} has no VAE")
    family = model.family
    shape = family.latent_shape(model) if hasattr(family, "latent_shape") else family.sample_shape(model)
    reference = next(model.vae.parameters())
    latents = torch.zeros(1, *shape, device=reference.device, dtype=reference.dtype)
    total, _ = _count(_DecodeLatents(model.vae), {"latents": latents}, convention)
    return total


def component_macs(
    model: DiffusionModel,
    settings: SamplingSettings,
    *,
    prompts: PromptSet | None = None,
    convention: str = DEFAULT_MACS_CONVENTION,
) -> dict[str, int]:
    """MACs of one image beyond the denoiser: ``{"text_encoders": ..., "vae_decoder": ...}``.

    ``text_encoders`` is one prompt's encoding, plus one negative prompt's under classifier-free
    guidance (``model.family.uses_guidance(settings)``) unless every prompt of ``prompts`` (default: the
    shipped set) leaves it to a pipeline that uses zeros for it. A model without text encoders
    (DiT) has 0; a pixel-space model has no VAE and 0 for ``vae_decoder``. ``convention``: what counts
    (:data:`~optuna_diffusion.macs.MACS_CONVENTIONS`).
    """
    text = 0
    if getattr(model, "prompt_encoder", None) is not None:
        text = sum(text_encoder_macs(model, convention=convention).values())
        if model.family.uses_guidance(settings):
            prompts = prompts if prompts is not None else default_prompts()
            given = [prompt.negative for prompt in prompts]
            # Every negative prompt is padded to the same length, so one of each kind (default, text) is priced.
            kinds = ([None] if None in given else []) + [n for n in given if n is not None][:1]
            text += max(
                sum(text_encoder_macs(model, negative=n, unconditional=True, convention=convention).values())
                for n in kinds
            )
    vae = vae_decoder_macs(model, convention=convention) if model.vae is not None else 0
    return {"text_encoders": text, "vae_decoder": vae}
