"""Teacher distance: how far a plan's samples are from the same model's many-step samples.

The teacher is the same model, prompts, labels and initial noise sampled with many steps (default
``min(100, T)``, uniformly spaced, the study's solver) and no skipped or reused block. A plan is scored
by the distance of each of its samples to the teacher's sample of the same index, averaged:

* ``psnr``: ``-PSNR`` (dB) of the decoded 8-bit images, per image, averaged (a per-image PSNR is capped
  at 100 dB, an identical image); a video's frames count as images, its value their mean;
* ``ssim``: ``1 - SSIM`` of the decoded 8-bit images (torchmetrics, 11-pixel Gaussian window), averaged;
* ``mse``: mean squared error of the solver's final samples before decoding (a latent model's latents;
  a pixel model's images), which needs no VAE decode.

The teacher's samples of a sample set are generated once and kept in a :class:`TeacherStore`: a folder
of chunk files (:data:`CHUNK` samples each), named by a hash of everything they depend on (model,
sampling settings, prompts, sample count, teacher plan, representation). Each chunk is written to a
temporary file and renamed into place, so workers sharing the folder never read half a file; a worker
that finds a chunk missing generates it (two workers may both do so: common random numbers make them
write the same bytes). A search that stops mid-way resumes with the chunks already written.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..baselines import baseline_names, baseline_plan
from ..errors import ConfigError
from ..frames import frames_as_images
from ..plan import Plan
from ._base import Evaluator, FitnessMeter, to_uint8

DISTANCES = ("psnr", "ssim", "mse")
"""Values of ``[fitness] teacher_distance``."""
DEFAULT_TEACHER_STEPS = 100
CHUNK = 100
"""Samples per stored chunk of teacher outputs (the unit of resuming)."""
MAX_PSNR = 100.0
LABELS = {"psnr": "-PSNR", "ssim": "1-SSIM", "mse": "latent MSE"}
_FORMAT_VERSION = 1


def teacher_plan(evaluator: Evaluator, steps: int | None = None) -> Plan:
    """The teacher's plan: ``steps`` (default ``min(100, T)``) uniformly spaced steps, the full network."""
    schedule = evaluator.generator.schedule
    total = schedule.num_train_timesteps
    steps = min(DEFAULT_TEACHER_STEPS, total) if steps is None else steps
    if steps > total:
        raise ConfigError(f"fitness.teacher_steps = {steps} exceeds the model's {total} training time steps")
    return baseline_plan(baseline_names(schedule)[0], steps, schedule)


class TeacherStore:
    """Where teacher outputs live: ``folder/teacher-<hash>/chunk-<start>-<stop>.pt`` (None: memory only)."""

    def __init__(self, folder: Path | str | None) -> None:
        self.folder = Path(folder).expanduser() if folder is not None else None

    def load(self, key: str, start: int, stop: int) -> torch.Tensor | None:
        """The stored chunk, or None when it is not there (or unreadable: it is generated again)."""
        if self.folder is None:
            return None
        path = self._chunk_path(key, start, stop)
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a truncated file from a crash before rename cannot exist, but a foreign one can
            return None

    def save(self, key: str, start: int, stop: int, outputs: torch.Tensor, description: dict[str, Any]) -> None:
        """Write a chunk atomically (temporary file in the same folder, then rename)."""
        if self.folder is None:
            return
        folder = self.folder / f"teacher-{key}"
        folder.mkdir(parents=True, exist_ok=True)
        about = folder / "about.json"
        if not about.is_file():
            self._atomic_write(about, lambda handle: handle.write(json.dumps(description, indent=2).encode()))
        self._atomic_write(self._chunk_path(key, start, stop), lambda handle: torch.save(outputs.contiguous(), handle))

    def _chunk_path(self, key: str, start: int, stop: int) -> Path:
        assert self.folder is not None
        return self.folder / f"teacher-{key}" / f"chunk-{start:08d}-{stop:08d}.pt"

    @staticmethod
    def _atomic_write(path: Path, write: Any) -> None:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                write(stream)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


class TeacherFitness(FitnessMeter):
    """Distance of a plan's samples to the teacher's samples of the same index (see the module notes).

    Args:
        distance: ``"psnr"``, ``"ssim"`` or ``"mse"``.
        steps: the teacher's steps (default ``min(100, T)``).
        store: where teacher outputs are kept (default: in memory only, for this evaluator's life).
    """

    metric = "teacher"

    def __init__(self, distance: str = "psnr", *, steps: int | None = None, store: TeacherStore | None = None) -> None:
        if distance not in DISTANCES:
            raise ConfigError(f"teacher distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 2):
            raise ConfigError(f"teacher steps must be an integer >= 2, got {steps!r}")
        self.distance = distance
        self.steps = steps
        self.store = store or TeacherStore(None)
        self.label = LABELS[distance]
        self.decoded = distance != "mse"
        self.evaluator: Evaluator | None = None
        self.plan: Plan | None = None
        self._targets: dict[int, torch.Tensor] = {}
        self._current = torch.empty(0)
        self._total = 0.0
        self._count = 0

    def bind(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        self.plan = teacher_plan(evaluator, self.steps)

    # Targets -----------------------------------------------------------------------------------

    def describe(self, num_samples: int) -> dict[str, Any]:
        """Everything the teacher's outputs of a sample set depend on (hashed into the store's key)."""
        evaluator = self._bound()
        generator, model = evaluator.generator, evaluator.model
        settings = {k: v for k, v in evaluator.settings.to_dict().items() if k not in ("batch_size", "prefix_cache_mb")}
        prompts = generator.prompts
        texts = (prompts.texts(0, num_samples), prompts.negatives(0, num_samples)) if prompts is not None else None
        return {
            "format": _FORMAT_VERSION,
            "model": model.source,
            "sample_shape": list(model.sample_shape),
            "dtype": str(next(model.denoiser.parameters()).dtype),
            "settings": settings,
            "prompts": hashlib.sha256(json.dumps(texts).encode()).hexdigest() if texts is not None else None,
            "num_samples": num_samples,
            "plan": self.plan.to_dict() if self.plan is not None else None,
            "representation": "uint8 images" if self.decoded else "float32 final samples (latents)",
        }

    def targets(self, num_samples: int) -> torch.Tensor:
        """The teacher's outputs of samples ``0..num_samples-1``, from the store or generated now."""
        if num_samples in self._targets:
            return self._targets[num_samples]
        evaluator = self._bound()
        description = self.describe(num_samples)
        key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:20]
        chunks = []
        for start in range(0, num_samples, CHUNK):
            stop = min(start + CHUNK, num_samples)
            chunk = self.store.load(key, start, stop)
            if chunk is None:
                assert self.plan is not None
                outputs = evaluator.generate(self.plan, num_samples, start, stop, decoded=self.decoded, use_cache=False)
                chunk = to_uint8(outputs) if self.decoded else outputs.float().cpu()
                self.store.save(key, start, stop, chunk, description)
            chunks.append(chunk)
        self._targets = {num_samples: torch.cat(chunks)}  # one sample set at a time
        return self._targets[num_samples]

    def _bound(self) -> Evaluator:
        if self.evaluator is None:
            raise ConfigError("TeacherFitness is not bound to an evaluator (PlanEvaluator(..., fitness=...) binds it)")
        return self.evaluator

    # Scoring -----------------------------------------------------------------------------------

    def begin(self, num_samples: int) -> None:
        self._current = self.targets(num_samples)
        self._total, self._count = 0.0, 0

    def update(self, samples: torch.Tensor, start: int, stop: int) -> None:
        target = self._current[start:stop].to(samples.device)
        self._total += float(distances(samples, target, self.distance).double().sum())
        self._count += stop - start

    def compute(self) -> float:
        if self._count == 0:
            raise ConfigError("teacher distance of no samples")
        return self._total / self._count


def distances(samples: torch.Tensor, target: torch.Tensor, distance: str) -> torch.Tensor:
    """Per-sample values (lower is better) of ``distance`` between samples and the teacher's outputs.

    ``psnr`` and ``ssim`` compare 8-bit images (``samples`` in [-1, 1], ``target`` uint8 or in [-1, 1]);
    ``mse`` compares raw final samples. Videos (``(N, F, C, H, W)`` frames) are scored frame by frame, and a
    video's value is the mean over its frames.
    """
    if distance == "mse":
        return (samples.float() - target.float()).pow(2).flatten(1).mean(1)
    if samples.dim() == 5:
        frames, per_sample = frames_as_images(samples)
        return distances(frames, frames_as_images(target)[0], distance).view(-1, per_sample).mean(1)
    pred = to_uint8(samples).float() / 255.0
    real = to_uint8(target).float() / 255.0
    if distance == "psnr":
        mse = (pred - real).pow(2).flatten(1).mean(1)
        return -(10.0 * torch.log10(1.0 / mse.clamp_min(10 ** (-MAX_PSNR / 10))))
    from torchmetrics.functional.image import structural_similarity_index_measure

    # torchmetrics' Gaussian window (sigma 1.5, 11 pixels), narrowed for images under 6 pixels (its padding must fit).
    kernel = min(11, 2 * min(pred.shape[-2:]) - 1)
    sigma = 1.5 if kernel == 11 else (kernel - 1) / 7
    ssim = structural_similarity_index_measure(pred, real, data_range=1.0, sigma=sigma, kernel_size=kernel, reduction="none")
    return 1.0 - ssim
