"""The function the search optimises: a Plan in, (FID, MACs) out.

Data flows one way: model + Plan -> samples (batch by batch) -> fitness (FID by default, or another
:mod:`~optuna_diffusion.fitness` metric); MACs come from the model's per-block table. Samples that turn
NaN/inf give an infinitely bad value and a reason, so a search records the failure and goes on.

Memory: samples are generated, decoded and scored one batch at a time. A batch that runs out of memory
(:func:`~optuna_diffusion.memory.is_out_of_memory`) is generated again at half the size, with the same
samples (common random numbers: noise and labels follow sample indices), so the result is the same;
the evaluator keeps the smaller size for later plans and each Evaluation records the size it used.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, OptunaDiffusionError
from .fid import load_feature_extractor
from .fitness import FIDFitness, FitnessMeter
from .generation import ImageGenerator, SamplingSettings
from .macs import DEFAULT_MACS_CONVENTION, FvcoreCounter, MacsTable, check_macs_convention, count_macs, input_gradient_macs
from .memory import is_out_of_memory, release_memory
from .models import DiffusionModel, load_diffusion_model
from .pipelines import component_macs
from .plan import Plan
from .prefix_cache import PrefixCache
from .prompts import PromptSet
from .reference_stats import ReferenceStats, reference_stats
from .zoo.data import load_digits_images


@dataclass(frozen=True)
class Evaluation:
    """Outcome of one plan: its fitness value (``inf`` on failure), MACs for one image, samples used, wall time.

    ``fid`` holds the value of the evaluator's fitness metric, named by ``metric``: FID by default, else
    e.g. ``-PSNR`` to a teacher (lower is better either way). ``batch_size`` is the largest batch
    that fitted (smaller than the settings' after an out-of-memory retry).
    """

    fid: float
    macs: int
    num_samples: int
    seconds: float
    failure: str | None = None
    images: torch.Tensor | None = field(default=None, repr=False, compare=False)
    """The first generated images in [-1, 1], when asked for (``keep_images``)."""
    metric: str = "fid"
    batch_size: int | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and math.isfinite(self.fid)

    @property
    def value(self) -> float:
        """The fitness value (the same as ``fid``, whatever the metric)."""
        return self.fid


@dataclass(frozen=True)
class PlanMacs:
    """MACs of one image of any plan of one model, by component, in one counting convention.

    A plan's MACs are those of its denoiser calls (twice per step under classifier-free guidance) plus,
    under classifier guidance, the classifier's forward and the backward pass of its input gradient at
    every step (:func:`~optuna_diffusion.macs.input_gradient_macs`), plus, for a pipeline, what every
    image pays once: its prompt's (and negative prompt's) text encoding and the VAE decode
    (:func:`~optuna_diffusion.pipelines.component_macs`).

    Attributes:
        table: the denoiser's per-block MACs table.
        classifier_step: MACs of one classifier-guidance step (0 without a classifier).
        per_image: MACs every image pays once, by component (``text_encoders``, ``vae_decoder``).
        guidance: whether the denoiser runs twice per step (classifier-free guidance).
        convention: what was counted (:data:`~optuna_diffusion.macs.MACS_CONVENTIONS`).
    """

    table: MacsTable
    classifier_step: int
    per_image: dict[str, int]
    guidance: bool
    convention: str = DEFAULT_MACS_CONVENTION

    @classmethod
    def for_model(
        cls,
        model: DiffusionModel,
        settings: SamplingSettings,
        *,
        classifier: nn.Module | None = None,
        prompts: PromptSet | None = None,
        convention: str = DEFAULT_MACS_CONVENTION,
    ) -> "PlanMacs":
        """Count ``model`` (and ``classifier``, text encoders, VAE) once, batch 1, in ``convention``."""
        check_macs_convention(convention)
        inputs = model.family.example_inputs(model, settings)
        shape = model.sample_shape if inputs is None else None
        table = MacsTable.for_model(model.denoiser, shape, inputs=inputs, counter=FvcoreCounter(convention))
        step = 0 if classifier is None else classifier_step_macs(classifier, model.sample_shape, convention=convention)
        per_image = component_macs(model, settings, prompts=prompts, convention=convention)
        return cls(table, step, per_image, model.family.uses_guidance(settings), convention)

    def parts(self, plan: Plan) -> dict[str, int]:
        """MACs of one image of ``plan``, by component: ``denoiser``, ``classifier``, then :attr:`per_image`'s."""
        return {
            "denoiser": self.table.plan_macs(plan, guidance=self.guidance),
            "classifier": plan.num_steps * self.classifier_step,
            **self.per_image,
        }

    def total(self, plan: Plan) -> int:
        """MACs to generate one image with ``plan``: the sum of :meth:`parts`."""
        return sum(self.parts(plan).values())


class PlanEvaluator:
    """Scores plans of one model against fixed reference statistics.

    MACs of a plan are priced by :class:`PlanMacs` (denoiser steps, classifier guidance, text encoding
    and VAE decode); :meth:`macs_parts` gives them apart.

    Args:
        model: the diffusion model.
        settings: solver, guidance, labels, common-random-number seed and (first) batch size.
        extractor: feature network of the FID (its ``num_features`` must match ``reference``); None with ``fitness``.
        reference: feature statistics of the real data; None with ``fitness``.
        prefix_cache: a :class:`PrefixCache` for the generator, or a byte bound for a new one (0: no cache).
        classifier: the noisy-image classifier of classifier guidance, or None.
        prompts: the prompt set of a text-to-image pipeline (default: the shipped everyday scenes).
        fitness: what a plan is scored by (default: FID of ``extractor`` against ``reference``);
            the evaluator binds it (:meth:`FitnessMeter.bind`).
        macs_convention: what its MACs count (:data:`~optuna_diffusion.macs.MACS_CONVENTIONS`; a
            search compares plans in the default, ``"full"``).
    """

    def __init__(
        self,
        model: DiffusionModel,
        settings: SamplingSettings,
        extractor: nn.Module | None = None,
        reference: ReferenceStats | None = None,
        *,
        prefix_cache: PrefixCache | int = 0,
        classifier: nn.Module | None = None,
        prompts: PromptSet | None = None,
        fitness: FitnessMeter | None = None,
        macs_convention: str = DEFAULT_MACS_CONVENTION,
    ) -> None:
        check_macs_convention(macs_convention)
        self.model = model
        self.settings = settings
        if prefix_cache is not None and not isinstance(prefix_cache, PrefixCache):
            prefix_cache = PrefixCache(prefix_cache) if prefix_cache != 0 else None
        self.generator = ImageGenerator(
            model, settings, prefix_cache=prefix_cache, classifier=classifier, prompts=prompts
        )
        if fitness is None:
            if extractor is None or reference is None:
                raise ConfigError("PlanEvaluator needs an extractor and reference statistics (FID), or fitness=...")
            fitness = FIDFitness(reference, extractor)
        self.batch_size = settings.batch_size
        """Images per batch now: the settings' until a batch ran out of memory, then half as many each time."""
        try:
            self.fitness = self.bind(fitness)
        except BaseException:
            self.generator.close()  # the block switch stays on the model otherwise
            raise
        self.rescore_fitness: FitnessMeter | None = None
        """A second, bound metric that re-scores a stage's final front (``[fitness] rescore``), or None."""
        self.pricing = PlanMacs.for_model(
            model, settings, classifier=classifier, prompts=self.generator.prompts, convention=macs_convention
        )
        self.macs_table = self.pricing.table
        self.classifier_step_macs = self.pricing.classifier_step
        self.per_image_macs = self.pricing.per_image

    @property
    def uses_guidance(self) -> bool:
        """Whether each step runs the denoiser twice: the family's rule (``family.uses_guidance``), which
        generation follows too; Flux-dev takes its guidance scale as an input and runs once."""
        return self.model.family.uses_guidance(self.settings)

    def cheapest_step_macs(self) -> int:
        """Denoiser MACs of one step with every skippable block skipped (twice if :attr:`uses_guidance`):
        no plan costs less."""
        table = self.macs_table
        return table.step_macs(skips=tuple(table.skip_savings)) * (2 if self.uses_guidance else 1)

    def release_text_encoders(self) -> tuple[str, ...]:
        """Encode the generator's prompt set (and, under guidance, its negative prompts), then free the text encoders.

        A pipeline model's encoders run once per distinct prompt and never again during a search, so
        their memory (T5-XXL's 4.7B parameters for SD3 and Flux) goes back before the search starts;
        the embeddings stay cached and every result is unchanged. Call it after the MACs are counted
        (they count the encoders once per image). Returns the names of the components dropped.
        """
        encoder = self.model.prompt_encoder
        if encoder is None or self.generator.prompts is None:
            return ()
        encoder.encode_all(self.generator.prompts, negatives=self.model.family.uses_guidance(self.settings))
        dropped = encoder.release()
        release_memory()
        return dropped

    def macs_parts(self, plan: Plan) -> dict[str, int]:
        """MACs of one image of ``plan``, by component: ``denoiser`` (every step, twice under
        classifier-free guidance), ``classifier`` (classifier guidance), ``text_encoders`` and
        ``vae_decoder`` (once per image)."""
        return self.pricing.parts(plan)

    def macs(self, plan: Plan) -> int:
        """MACs to generate one image with ``plan``: the sum of :meth:`macs_parts`."""
        return sum(self.macs_parts(plan).values())

    def bind(self, fitness: FitnessMeter) -> FitnessMeter:
        """``fitness``, bound to this evaluator (a metric may check the model or generate targets with it)."""
        if not isinstance(fitness, FitnessMeter):
            raise ConfigError(f"fitness must be a FitnessMeter, got {type(fitness).__name__}")
        fitness.bind(self)
        return fitness

    @property
    def meter(self) -> Any:
        """The FID meter of an FID fitness (its ``extractor`` ...), else None."""
        return getattr(self.fitness, "meter", None)

    def evaluate(
        self, plan: Plan, num_samples: int, *, keep_images: int = 0, fitness: FitnessMeter | None = None
    ) -> Evaluation:
        """Fitness of ``num_samples`` images of ``plan`` and its MACs; ``keep_images`` first images ride along.

        ``fitness``: another bound metric instead of the evaluator's own (re-scoring).
        """
        return list(self.evaluate_progressively(plan, [num_samples], keep_images=keep_images, fitness=fitness))[-1]

    def evaluate_progressively(
        self, plan: Plan, sample_counts: Sequence[int], *, keep_images: int = 0, fitness: FitnessMeter | None = None
    ) -> Iterator[Evaluation]:
        """Fitness of ``plan`` after each of the increasing ``sample_counts``, generating each sample once.

        Sample i is the same whatever the counts: the counts are prefixes of one sample set of
        ``sample_counts[-1]`` images. Stop iterating to stop generating (e.g. when a small-sample FID
        already shows the plan is not worth the full count). A failure ends the iteration.
        """
        counts = list(sample_counts)
        if not counts or any(b <= a for a, b in zip(counts, counts[1:])) or counts[0] < 2:
            raise ConfigError(f"sample_counts must increase from at least 2, got {counts}")
        meter = self.fitness if fitness is None else fitness
        started = time.perf_counter()
        macs = self.macs(plan)
        total = counts[-1]
        kept: list[torch.Tensor] = []
        meter.begin(total)
        used = self.batch_size
        done = 0

        def consume(samples: torch.Tensor, first: int, last: int) -> str | None:
            if not torch.isfinite(samples).all():
                return "samples became NaN or inf"
            images = samples.clamp(-1, 1) if meter.decoded else samples
            missing = keep_images - sum(len(k) for k in kept)
            keep = None
            if missing > 0:
                keep = images[:missing] if meter.decoded else self.model.family.decode(self.model, samples[:missing]).clamp(-1, 1)
            meter.update(images, first, last)  # may run out of memory: nothing above is stored yet
            if keep is not None:
                kept.append(keep)
            return None

        for count in counts:
            failure = self._run_batches(plan, total, done, count, decoded=meter.decoded, consume=consume)
            used = min(used, self.batch_size)
            elapsed = time.perf_counter() - started
            if failure:
                yield Evaluation(math.inf, macs, count, elapsed, failure, metric=meter.metric, batch_size=used)
                return
            done = count
            value = meter.compute()
            failure = None if math.isfinite(value) else f"{meter.label} is not finite"
            first = torch.cat(kept) if kept else None
            yield Evaluation(
                value, macs, count, time.perf_counter() - started, failure, images=first, metric=meter.metric,
                batch_size=used,
            )
            if failure:
                return

    def generate(
        self, plan: Plan, num_samples: int, start: int, stop: int, *, decoded: bool = True, use_cache: bool = True
    ) -> torch.Tensor:
        """Samples ``start..stop-1`` of ``plan``'s set of ``num_samples`` (on the CPU), out-of-memory safe.

        ``decoded=False``: the solver's final samples before decoding. ``use_cache=False`` keeps them
        out of the prefix cache (a teacher's long plan would only evict the search's prefixes).
        """
        parts: list[torch.Tensor] = []

        def collect(samples: torch.Tensor, first: int, last: int) -> None:
            parts.append(samples.cpu())

        cache = self.generator.prefix_cache
        if not use_cache:
            self.generator.prefix_cache = None
        try:
            self._run_batches(plan, num_samples, start, stop, decoded=decoded, consume=collect)
        finally:
            self.generator.prefix_cache = cache
        return torch.cat(parts)

    def _run_batches(
        self, plan: Plan, num_samples: int, start: int, stop: int, *, decoded: bool,
        consume: Callable[[torch.Tensor, int, int], str | None],
    ) -> str | None:
        """Generate samples ``start..stop-1`` batch by batch and hand each to ``consume``.

        A batch (generation, decoding and ``consume``) that runs out of memory is redone at half the
        size, from the same first sample; the smaller size stays for later batches and plans.
        Returns the first failure ``consume`` reports (None: all consumed).
        """
        first = start
        while first < stop:
            last = min(first + self.batch_size, stop)
            try:
                (samples,) = self.generator.batches(
                    plan, num_samples, start=first, stop=last, batch_size=last - first, decoded=decoded
                )
                failure = consume(samples, first, last)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                del error
                release_memory()
                if last - first == 1:
                    raise OptunaDiffusionError(
                        "out of memory with a batch of 1 image: use a smaller model or image size, or another device"
                    ) from None
                self.batch_size = max(1, (last - first) // 2)
                continue
            if failure:
                return failure
            first = last
        return None

    def samples(self, plan: Plan, num_samples: int) -> torch.Tensor:
        """The first ``num_samples`` images of ``plan`` in [-1, 1] (for previews), on the CPU."""
        return self.generate(plan, num_samples, 0, num_samples).clamp(-1, 1)

    def close(self) -> None:
        """Remove the block switch from the model."""
        self.generator.close()


def classifier_step_macs(
    classifier: nn.Module, sample_shape: Sequence[int], *, convention: str = DEFAULT_MACS_CONVENTION
) -> int:
    """MACs of one classifier-guidance step (batch 1): the classifier's forward (fvcore) plus the backward
    pass of its input gradient (counted by torch, :func:`~optuna_diffusion.macs.input_gradient_macs`),
    both in ``convention``."""
    device = next(classifier.parameters()).device
    inputs = {"sample": torch.randn(1, *sample_shape, device=device), "timestep": torch.tensor([500], device=device)}
    forward = count_macs(classifier, inputs=inputs, counter=FvcoreCounter(convention))
    return forward + input_gradient_macs(classifier, inputs, convention=convention)


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
    extractor = load_feature_extractor("digits")
    images, _ = load_digits_images()
    reference = reference_stats(images, extractor, cache_dir=cache_dir or default_cache_dir())
    return PlanEvaluator(load_diffusion_model(model), settings, extractor, reference, prefix_cache=prefix_cache)
