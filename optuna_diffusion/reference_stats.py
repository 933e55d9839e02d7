"""The real side of FID, computed once per study: feature mean and covariance of real images.

:func:`reference_stats` turns real images into :class:`ReferenceStats` (streamed float64 statistics,
cached on disk, keyed by the images and the extractor) or :func:`load_reference_npz` reads them from an
``.npz`` file such as guided-diffusion's reference batches. :class:`~optuna_diffusion.fid.FIDMeter`
compares generated images against them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from optuna_diffusion.errors import OptunaDiffusionError, first_line
from optuna_diffusion.frames import frames_as_images

__all__ = ["ReferenceStats", "load_reference_npz", "reference_stats"]

_CACHE_VERSION = b"optuna-diffusion reference stats v1"


@dataclass(frozen=True, eq=False)
class ReferenceStats:
    """Mean and unbiased covariance of the features of real images.

    Attributes:
        mu: ``(d,)`` float64 feature mean.
        sigma: ``(d, d)`` float64 feature covariance (normalised by ``num_samples - 1``).
        num_samples: Number of real images behind the statistics; 0 when unknown (e.g. a foreign ``.npz``).
    """

    mu: np.ndarray
    sigma: np.ndarray
    num_samples: int = 0

    def __post_init__(self) -> None:
        mu = np.asarray(self.mu, dtype=np.float64)
        sigma = np.asarray(self.sigma, dtype=np.float64)
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise OptunaDiffusionError(
                "reference statistics need mu of shape (d,) and sigma of shape (d, d), "
                f"got {mu.shape} and {sigma.shape}"
            )
        if self.num_samples < 0:
            raise OptunaDiffusionError(f"reference statistics num_samples must be >= 0, got {self.num_samples}")
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "num_samples", int(self.num_samples))

    @property
    def num_features(self) -> int:
        """Feature dimension d."""
        return int(self.mu.shape[0])

    def save_npz(self, path: str | Path) -> Path:
        """Write the statistics to ``path`` (exactly that name) with keys ``mu``, ``sigma``, ``num_samples``.

        The file is written to a temporary name first and then renamed, so readers never see half a file.

        Args:
            path: Destination file; its folder is created if needed.

        Returns:
            The path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, mu=self.mu, sigma=self.sigma, num_samples=np.int64(self.num_samples))
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return path


def load_reference_npz(path: str | Path) -> ReferenceStats:
    """Read reference statistics from an ``.npz`` file with keys ``mu`` and ``sigma``.

    Reads files written by :meth:`ReferenceStats.save_npz` and guided-diffusion's reference batches
    (their ``arr_0`` images are ignored; without a ``num_samples`` key the count is stored as 0).

    Args:
        path: The ``.npz`` file.

    Returns:
        The statistics.

    Raises:
        OptunaDiffusionError: The file is missing, unreadable or lacks ``mu`` or ``sigma``.
    """
    path = Path(path)
    if not path.is_file():
        raise OptunaDiffusionError(f"reference statistics file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in ("mu", "sigma") if key not in data.files]
            if missing:
                found = ", ".join(data.files) or "nothing"
                raise OptunaDiffusionError(
                    f"reference statistics file {path} lacks {' and '.join(missing)} (has: {found})"
                )
            num_samples = int(data["num_samples"]) if "num_samples" in data.files else 0
            return ReferenceStats(mu=data["mu"], sigma=data["sigma"], num_samples=num_samples)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise OptunaDiffusionError(f"cannot read reference statistics file {path}: {first_line(error)}") from error


def _hash_tensor(digest: "hashlib._Hash", name: str, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().to("cpu").contiguous()
    digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def _cache_key(images: torch.Tensor, extractor: nn.Module) -> str:
    """sha256 over the images, the extractor's class name and its state-dict tensors."""
    digest = hashlib.sha256(_CACHE_VERSION)
    _hash_tensor(digest, "images", images)
    extractor_class = type(extractor)
    digest.update(f"{extractor_class.__module__}.{extractor_class.__qualname__}".encode())
    for key, value in extractor.state_dict().items():
        if isinstance(value, torch.Tensor):
            _hash_tensor(digest, key, value)
    return digest.hexdigest()


def module_device(module: nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _compute_stats(images: torch.Tensor, extractor: nn.Module, batch_size: int) -> ReferenceStats:
    """Streamed float64 mean and unbiased covariance of the features, shifted by the first batch's mean."""
    device = module_device(extractor)
    shift = total = scatter = None
    count = 0
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(device)
            features = extractor(batch).reshape(batch.shape[0], -1).double().cpu()
            if shift is None:
                shift = features.mean(dim=0)
                total = torch.zeros_like(shift)
                scatter = torch.zeros(shift.shape[0], shift.shape[0], dtype=torch.float64)
            centred = features - shift
            total += centred.sum(dim=0)
            scatter += centred.t() @ centred
            count += batch.shape[0]
    mean_offset = total / count
    sigma = (scatter - count * torch.outer(mean_offset, mean_offset)) / (count - 1)
    mu = shift + mean_offset
    if not (torch.isfinite(mu).all() and torch.isfinite(sigma).all()):
        raise OptunaDiffusionError("feature statistics of the reference images are not finite")
    return ReferenceStats(mu=mu.numpy(), sigma=sigma.numpy(), num_samples=count)


def reference_stats(
    images: torch.Tensor,
    extractor: nn.Module,
    *,
    cache_dir: str | Path | None = None,
    batch_size: int = 500,
) -> ReferenceStats:
    """Feature mean and unbiased covariance (float64) of real images, cached on disk.

    The cache file ``reference-<sha256>.npz`` in ``cache_dir`` is keyed by the image bytes, the
    extractor's class name and its state-dict tensors, so other data or another extractor never
    reuse a stale file. Features are computed in batches under ``torch.inference_mode()`` on the
    extractor's device.

    Args:
        images: Real images, ``(N, C, H, W)`` floats in [-1, 1], N >= 2 (videos ``(N, F, C, H, W)``: their frames).
        extractor: Feature network (see :func:`load_feature_extractor`), in eval mode.
        cache_dir: Folder of cached statistics; ``None`` disables the cache.
        batch_size: Images per forward pass.

    Returns:
        The statistics.

    Raises:
        OptunaDiffusionError: Fewer than 2 images, a bad batch size or non-finite features.
    """
    if images.dim() == 5:
        images = frames_as_images(images)[0]
    if images.dim() < 2 or images.shape[0] < 2:
        raise OptunaDiffusionError(f"reference statistics need at least 2 images, got shape {tuple(images.shape)}")
    if batch_size < 1:
        raise OptunaDiffusionError(f"batch_size must be >= 1, got {batch_size}")
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"reference-{_cache_key(images, extractor)}.npz"
        if cache_file.is_file():
            try:
                return load_reference_npz(cache_file)
            except OptunaDiffusionError:
                pass  # unreadable cache entry: recompute and overwrite it
    stats = _compute_stats(images, extractor, batch_size)
    if cache_file is not None:
        stats.save_npz(cache_file)
    return stats
