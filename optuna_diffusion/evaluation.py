"""The function the search optimises: a Plan in, (FID, MACs) out.

Data flows one way: model + Plan -> samples (batch by batch) -> features -> FID; MACs come from the
model's per-block table. Samples that turn NaN/inf give an infinitely bad FID and a reason, so a
search records the failure and goes on.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError
from .fid import FIDMeter, ReferenceStats
from .macs import MacsTable
from .models import DiffusionModel
from .plan import Plan
from .prefix_cache import PrefixCache
from .prompts import PromptSet
from .sampling import ImageGenerator, SamplingSettings


@dataclass(frozen=True)
class Evaluation:
    """Outcome of one plan: FID (``inf`` on failure), MACs for one image, samples used, wall time."""

    fid: float
    macs: int
    num_samples: int
    seconds: float
    failure: str | None = None
    images: torch.Tensor | None = field(default=None, repr=False, compare=False)
    """The first generated images in [-1, 1], when asked for (``keep_images``)."""

    @property
    def ok(self) -> bool:
        return self.failure is None and math.isfinite(self.fid)


class PlanEvaluator:
    """Scores plans of one model against fixed reference statistics.

    MACs of a plan are those of its denoiser calls (twice per step under classifier-free guidance)
    plus, under classifier guidance, the classifier's forward and the backward pass of its input
    gradient at every step (:func:`~optuna_diffusion.macs.input_gradient_macs`), plus, for a pipeline,
    what every image pays once: its prompt's (and negative prompt's) text encoding and the VAE decode
    (:func:`~optuna_diffusion.pipelines.component_macs`). :meth:`macs_parts` gives them apart.

    Args:
        model: the diffusion model.
        settings: solver, guidance, labels and common-random-number seed.
        extractor: feature network of the FID (its ``num_features`` must match ``reference``).
        reference: feature statistics of the real data.
        prefix_cache: a :class:`PrefixCache` for the generator, or a byte bound for a new one (0: no cache).
        classifier: the noisy-image classifier of classifier guidance, or None.
        prompts: the prompt set of a text-to-image pipeline (default: the shipped everyday scenes).
    """

    def __init__(
        self,
        model: DiffusionModel,
        settings: SamplingSettings,
        extractor: nn.Module,
        reference: ReferenceStats,
        *,
        prefix_cache: PrefixCache | int = 0,
        classifier: nn.Module | None = None,
        prompts: PromptSet | None = None,
    ) -> None:
        from .pipelines import component_macs

        self.model = model
        self.settings = settings
        if prefix_cache is not None and not isinstance(prefix_cache, PrefixCache):
            prefix_cache = PrefixCache(prefix_cache) if prefix_cache != 0 else None
        self.generator = ImageGenerator(
            model, settings, prefix_cache=prefix_cache, classifier=classifier, prompts=prompts
        )
        self.meter = FIDMeter(reference, extractor)
        inputs = model.family.example_inputs(model, settings)
        shape = model.sample_shape if inputs is None else None
        self.macs_table = MacsTable.for_model(model.denoiser, shape, inputs=inputs)
        self.classifier_step_macs = classifier_step_macs(classifier, model.sample_shape) if classifier is not None else 0
        self.per_image_macs = component_macs(model, settings, prompts=self.generator.prompts)

    def macs_parts(self, plan: Plan) -> dict[str, int]:
        """MACs of one image of ``plan``, by component: ``denoiser`` (every step, twice under
        classifier-free guidance), ``classifier`` (classifier guidance), ``text_encoders`` and
        ``vae_decoder`` (once per image)."""
        guided = self.model.family.uses_guidance(self.settings)
        return {
            "denoiser": self.macs_table.plan_macs(plan, guidance=guided),
            "classifier": plan.num_steps * self.classifier_step_macs,
            **self.per_image_macs,
        }

    def macs(self, plan: Plan) -> int:
        """MACs to generate one image with ``plan``: the sum of :meth:`macs_parts`."""
        return sum(self.macs_parts(plan).values())

    def evaluate(self, plan: Plan, num_samples: int, *, keep_images: int = 0) -> Evaluation:
        """FID of ``num_samples`` images of ``plan`` and its MACs; ``keep_images`` first images ride along."""
        return list(self.evaluate_progressively(plan, [num_samples], keep_images=keep_images))[-1]

    def evaluate_progressively(
        self, plan: Plan, sample_counts: Sequence[int], *, keep_images: int = 0
    ) -> Iterator[Evaluation]:
        """FID of ``plan`` after each of the increasing ``sample_counts``, generating each sample once.

        Sample i is the same whatever the counts: the counts are prefixes of one sample set of
        ``sample_counts[-1]`` images. Stop iterating to stop generating (e.g. when a small-sample FID
        already shows the plan is not worth the full count). A failure ends the iteration.
        """
        counts = list(sample_counts)
        if not counts or any(b <= a for a, b in zip(counts, counts[1:])) or counts[0] < 2:
            raise ConfigError(f"sample_counts must increase from at least 2, got {counts}")
        started = time.perf_counter()
        macs = self.macs(plan)
        total = counts[-1]
        kept: list[torch.Tensor] = []
        self.meter.reset()
        done = 0
        for count in counts:
            for images in self.generator.batches(plan, total, start=done, stop=count):
                if not torch.isfinite(images).all():
                    yield Evaluation(math.inf, macs, count, time.perf_counter() - started, "samples became NaN or inf")
                    return
                images = images.clamp(-1, 1)
                missing = keep_images - sum(len(k) for k in kept)
                if missing > 0:
                    kept.append(images[:missing])
                self.meter.update(images)
            done = count
            fid = self.meter.compute()
            failure = None if math.isfinite(fid) else "FID is not finite"
            first = torch.cat(kept) if kept else None
            yield Evaluation(fid, macs, count, time.perf_counter() - started, failure, images=first)
            if failure:
                return

    def samples(self, plan: Plan, num_samples: int) -> torch.Tensor:
        """The first ``num_samples`` images of ``plan`` in [-1, 1] (for previews)."""
        return torch.cat(list(self.generator.batches(plan, num_samples))).clamp(-1, 1)

    def close(self) -> None:
        """Remove the block switch from the model."""
        self.generator.close()


def classifier_step_macs(classifier: nn.Module, sample_shape: Sequence[int]) -> int:
    """MACs of one classifier-guidance step (batch 1): the classifier's forward (fvcore) plus the backward
    pass of its input gradient (counted by torch, :func:`~optuna_diffusion.macs.input_gradient_macs`)."""
    from .macs import count_macs, input_gradient_macs

    device = next(classifier.parameters()).device
    inputs = {"sample": torch.randn(1, *sample_shape, device=device), "timestep": torch.tensor([500], device=device)}
    return count_macs(classifier, inputs=inputs) + input_gradient_macs(classifier, inputs)


DIGITS_SETTINGS = SamplingSettings(num_classes=10, null_class=10)
DIGITS_DIT_SETTINGS = SamplingSettings(solver="flow-euler", num_classes=10, null_class=10)


def default_cache_dir() -> Path:
    """Where reference statistics are cached: ``$XDG_CACHE_HOME/optuna-diffusion`` (or ``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "optuna-diffusion"


def digits_evaluator(
    settings: SamplingSettings = DIGITS_SETTINGS,
    *,
    cache_dir: Path | None = None,
    prefix_cache: PrefixCache | int = 0,
    model: str = "digits",
) -> PlanEvaluator:
    """Evaluator of a digits model: FID in the digits feature space against all 1,797 digits.

    ``prefix_cache`` as for :class:`PlanEvaluator` (it changes the speed, never the results). ``model``
    is a bundled digits model (``"digits"``, the DDPM UNet; ``"digits-dit"``, the flow-matching DiT, which
    needs a flow solver such as :data:`DIGITS_DIT_SETTINGS`'s) or a folder of one.
    """
    from .fid import load_feature_extractor, reference_stats
    from .models import load_diffusion_model
    from .zoo.data import load_digits_images

    extractor = load_feature_extractor("digits")
    images, _ = load_digits_images()
    reference = reference_stats(images, extractor, cache_dir=cache_dir or default_cache_dir())
    return PlanEvaluator(load_diffusion_model(model), settings, extractor, reference, prefix_cache=prefix_cache)
