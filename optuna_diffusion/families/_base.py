"""What the engine needs to know about one kind of denoiser: its inputs, its output, its sample space.

A *family* is stateless; every method takes the :class:`~optuna_diffusion.models.DiffusionModel`.
The image generator (:mod:`optuna_diffusion.generation`) asks it for the initial noise of samples,
for the prediction at a step (classifier-free guidance done the way the model's pipeline does it),
and for the images of the final samples. Everything else -- common random numbers, solvers, the
block switch, classifier guidance, prefix caching -- is the generator's, the same for every family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..pipelines import CallTemplate
    from ..protocols import ModelLike as DiffusionModel  # what a family reads of models.DiffusionModel
    from ..protocols import SettingsLike as SamplingSettings  # what it reads of generation.SamplingSettings

_NOISE_CHUNK = 64


def chunked_noise(seed: int, start: int, stop: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Noise of samples ``start..stop-1``, drawn in fixed chunks: sample i's noise does not depend on batching."""
    first_chunk, last_chunk = start // _NOISE_CHUNK, (stop - 1) // _NOISE_CHUNK
    chunks = [
        torch.randn((_NOISE_CHUNK, *shape), generator=torch.Generator().manual_seed(seed * 1_000_003 + chunk))
        for chunk in range(first_chunk, last_chunk + 1)
    ]
    offset = first_chunk * _NOISE_CHUNK
    return torch.cat(chunks)[start - offset : stop - offset]


@dataclass(frozen=True)
class Conditions:
    """What the samples of one batch are conditioned on.

    Attributes:
        size: the number of samples.
        labels: class labels, ``(size,)`` (class-conditional models).
        prompts: the batch's indices into the study's prompt set (text-to-image pipelines).
        text: fixed prompt embeddings shared by the batch (a bare ``UNet2DConditionModel``), or, for a
            text-to-image pipeline, the prompt set's embeddings by prompt index
            (:class:`~optuna_diffusion.pipelines.EncodedPrompts`).
    """

    size: int
    labels: torch.Tensor | None = None
    prompts: tuple[int, ...] | None = None
    text: Any = None


class ModelFamily:
    """Base of the families: a denoiser called as ``denoiser(x, t, **inputs)``, guidance by batching.

    Subclasses name the denoiser classes they serve and override what differs.
    """

    name = "base"
    denoisers: tuple[str, ...] = ()
    guidance_order = ("unconditional", "conditional")
    """How a guided call stacks its halves (the model's pipeline's order)."""
    uses_prompts = False
    """Whether the model is conditioned on a prompt set its pipeline encodes (else on class labels or nothing)."""
    call_template: CallTemplate | None = None
    """The Python call that runs an exported plan in the family's pipeline (None: export writes none)."""

    # Sample space --------------------------------------------------------------------------------

    def sample_shape(self, model: DiffusionModel) -> tuple[int, ...]:
        """Shape of one sample in the solver's space (pixels or latents)."""
        config = model.denoiser.config
        size = config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return (int(config.in_channels), int(height), int(width))

    def initial_noise(self, model: DiffusionModel, seed: int, start: int, stop: int) -> torch.Tensor:
        """Initial noise of samples ``start..stop-1`` (common random numbers)."""
        return chunked_noise(seed, start, stop, self.sample_shape(model))

    def decode(self, model: DiffusionModel, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (unclipped) of final samples ``x``, in float32; pixel models return ``x`` itself."""
        return x.float()

    # Conditioning --------------------------------------------------------------------------------

    def check(self, model: DiffusionModel, settings: SamplingSettings, *, text: Any = None) -> None:
        """Raise ConfigError if ``settings`` (and fixed prompt embeddings ``text``) cannot run on ``model``."""

    def inputs(
        self, model: DiffusionModel, conditions: Conditions, settings: SamplingSettings, *, unconditional: bool
    ) -> dict[str, Any]:
        """Keyword inputs of the denoiser for a batch (the unconditional pass of guidance when asked)."""
        return {}

    def uses_guidance(self, settings: SamplingSettings) -> bool:
        """Whether a step evaluates the denoiser twice (classifier-free guidance)."""
        return settings.guidance_scale > 1.0

    # Prediction ----------------------------------------------------------------------------------

    def call(self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        """The denoiser's raw output for ``x`` at ``t``, cut to the prediction (learned-variance channels dropped)."""
        output = model.denoiser(x, t, **inputs, return_dict=False)[0]
        return output[:, : x.shape[1]]

    def predict(
        self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor, conditions: Conditions, settings: SamplingSettings
    ) -> torch.Tensor:
        """The prediction at ``t`` in solver units (epsilon / v / x0 as trained, or the velocity), guided."""
        conditional = self.inputs(model, conditions, settings, unconditional=False)
        if not self.uses_guidance(settings):
            return self.call(model, x, t, conditional)
        unconditional = self.inputs(model, conditions, settings, unconditional=True)
        halves = {"conditional": conditional, "unconditional": unconditional}
        first, second = (halves[name] for name in self.guidance_order)
        both = {key: stack(first[key], second[key]) for key in first}
        outputs = dict(zip(self.guidance_order, self.call(model, torch.cat([x, x]), t, both).chunk(2)))
        return outputs["unconditional"] + settings.guidance_scale * (outputs["conditional"] - outputs["unconditional"])

    def example_inputs(self, model: DiffusionModel, settings: SamplingSettings) -> dict[str, Any] | None:
        """Batch-1 keyword inputs of one denoiser call for the MACs count (None: the count's defaults)."""
        return None

    def shift_mu(self, model: DiffusionModel) -> float | None:
        """The ``mu`` the model's pipeline passes to ``set_timesteps`` under dynamic shifting (None: none).

        Only the flow-matching ``scheduler`` baseline and the export to the pipeline depend on it: plans
        hold their sigmas themselves.
        """
        return None


def stack(first: Any, second: Any) -> Any:
    """Two halves of a guided batch stacked along the batch dimension (dicts key by key)."""
    if isinstance(first, dict):
        return {key: stack(first[key], second[key]) for key in first}
    if isinstance(first, torch.Tensor):
        return torch.cat([first, second])
    if first is None and second is None:
        return None
    raise ConfigError(f"cannot stack guidance inputs of type {type(first).__name__}")


def labels_of(conditions: Conditions, settings: SamplingSettings, *, unconditional: bool) -> torch.Tensor:
    """The batch's class labels, or the null class for the unconditional pass."""
    labels = conditions.labels
    if labels is None:
        raise ConfigError("a class-conditional model needs class labels (set sampling.num_classes)")
    return torch.full_like(labels, settings.null_class) if unconditional else labels
