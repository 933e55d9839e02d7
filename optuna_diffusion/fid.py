"""FID against fixed reference statistics, with torchmetrics doing the math.

A study scores hundreds of sampling plans against the same real images, so the real side of FID is
computed once (:mod:`optuna_diffusion.reference_stats`: :func:`~optuna_diffusion.reference_stats.reference_stats` from real images,
cached on disk, or :func:`~optuna_diffusion.reference_stats.load_reference_npz` from a file such as guided-diffusion's reference batches). This module holds the feature extractors (:func:`load_feature_extractor`) and
:class:`FIDMeter`, which injects those statistics into the real-feature states of torchmetrics'
``FrechetInceptionDistance`` and streams only generated images through it.

Images follow the project convention everywhere: float tensors in [-1, 1] of shape ``(N, C, H, W)``;
videos ``(N, F, C, H, W)`` are scored frame by frame (:func:`~optuna_diffusion.frames.frames_as_images`).
Feature extractors from :func:`load_feature_extractor` take such images and return ``(N, d)`` features.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from optuna_diffusion.errors import ModelLoadError, OptunaDiffusionError, first_line
from optuna_diffusion.frames import frames_as_images
from optuna_diffusion.reference_stats import ReferenceStats, module_device
from optuna_diffusion.zoo.feature_net import DigitsFeatureNet
from optuna_diffusion.zoo.frame_features import InkWindowFeatures

__all__ = [
    "FEATURE_EXTRACTORS",
    "INCEPTION_WEIGHTS_FILE",
    "FIDMeter",
    "InceptionFeatures",
    "fid_of_images",
    "load_feature_extractor",
]

FEATURE_EXTRACTORS = ("digits", "digits-frames", "inception")
"""Names :func:`load_feature_extractor` knows (besides a path to a TorchScript ``.pt`` file)."""

DIGITS_FEATURES_DIR = Path(__file__).resolve().parent / "zoo" / "digits" / "features"

INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
"""pytorch-fid's InceptionV3 weights; torch-fidelity downloads the same weights under the next name."""
_INCEPTION_WEIGHTS_FILES = (INCEPTION_WEIGHTS_FILE, "weights-inception-2015-12-05-6726825d.pth")
_INCEPTION_INSTALL_HINT = "InceptionV3 features need torch-fidelity: pip install torch-fidelity"


# --------------------------------------------------------------------------------------------------
# Feature extractors
# --------------------------------------------------------------------------------------------------


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Map [-1, 1] floats to the [0, 255] uint8 pixels Inception expects (uint8 input passes through)."""
    if images.dtype == torch.uint8:
        return images
    return ((images.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


class InceptionFeatures(nn.Module):
    """Adapter giving an InceptionV3 the project's image convention.

    Takes ``(N, C, H, W)`` images in [-1, 1] with 1 or 3 channels (grey is repeated to RGB), converts
    them to uint8 [0, 255] and returns the ``(N, num_features)`` float pool features of the wrapped
    network (torchmetrics' ``NoTrainInceptionV3``, which resizes to 299x299 itself).

    Args:
        inception: Network mapping uint8 ``(N, 3, H, W)`` images to ``(N, num_features)`` features.
        num_features: Width of the returned features.
    """

    def __init__(self, inception: nn.Module, num_features: int = 2048) -> None:
        super().__init__()
        self.inception = inception
        self.num_features = num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise OptunaDiffusionError(
                f"InceptionV3 features need (N, 1 or 3, H, W) images, got shape {tuple(images.shape)}"
            )
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        features = self.inception(_to_uint8(images))
        return features.reshape(images.shape[0], -1).float()


class _ScriptedFeatures(nn.Module):
    """Wraps a user's TorchScript feature extractor so torchmetrics sees an ``int`` ``num_features``."""

    def __init__(self, scripted: nn.Module, num_features: int) -> None:
        super().__init__()
        self.scripted = scripted
        self.num_features = num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.scripted(images)
        return features.reshape(images.shape[0], -1).float()


def _torch_fidelity_available() -> bool:
    return importlib.util.find_spec("torch_fidelity") is not None


def _new_inception(weights_path: str | None) -> nn.Module:
    """torchmetrics' InceptionV3 with the 2048-d pool features ``FrechetInceptionDistance(feature=2048)`` uses."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    return NoTrainInceptionV3(
        name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=weights_path
    )


def _hub_checkpoints_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _missing_inception_weights_message(reason: str) -> str:
    return (
        f"InceptionV3 weights are not available ({reason}): place {INCEPTION_WEIGHTS_FILE} in "
        f"{_hub_checkpoints_dir()} ($TORCH_HOME/hub/checkpoints/) or pass its path with weights_path "
        "(CLI: --feature-weights)"
    )


def inception_unavailable(weights_path: str | None = None) -> str | None:
    """What InceptionV3 features lack here, as a noun phrase with how to supply it, or None when they load offline.

    The phrase completes "study NAME needs ...", e.g. ``"torch-fidelity for InceptionV3 features (pip
    install torch-fidelity)"``.
    """
    if not _torch_fidelity_available():
        return "torch-fidelity for InceptionV3 features (pip install torch-fidelity)"
    if weights_path is not None:
        if Path(weights_path).is_file():
            return None
        return f"the InceptionV3 weights: {weights_path} does not exist (--feature-weights)"
    if any((_hub_checkpoints_dir() / name).is_file() for name in _INCEPTION_WEIGHTS_FILES):
        return None
    return (
        f"the InceptionV3 weights (not downloaded: place {INCEPTION_WEIGHTS_FILE} in {_hub_checkpoints_dir()}, "
        "or pass its path with --feature-weights)"
    )


def _load_inception(weights_path: str | None) -> nn.Module:
    if not _torch_fidelity_available():
        raise ModelLoadError(_INCEPTION_INSTALL_HINT)
    if weights_path is not None:
        if not Path(weights_path).is_file():
            raise ModelLoadError(f"InceptionV3 weights file not found: {weights_path}")
    else:
        found = [_hub_checkpoints_dir() / name for name in _INCEPTION_WEIGHTS_FILES]
        found = [path for path in found if path.is_file()]
        weights_path = str(found[0]) if found else None
    try:
        inception = _new_inception(weights_path)
    except (OSError, RuntimeError, ValueError) as error:  # URLError is an OSError
        if weights_path is None:
            raise ModelLoadError(_missing_inception_weights_message(first_line(error))) from error
        raise ModelLoadError(f"cannot load InceptionV3 weights from {weights_path}: {first_line(error)}") from error
    return InceptionFeatures(inception, num_features=2048)


def _load_digits(weights_path: str | None) -> nn.Module:
    folder = Path(weights_path) if weights_path is not None else DIGITS_FEATURES_DIR
    try:
        return DigitsFeatureNet.from_pretrained(folder)
    except FileNotFoundError as error:
        raise ModelLoadError(
            f"digits feature network not found in {folder} (needs model.safetensors and config.json)"
        ) from error
    except (OSError, RuntimeError, ValueError, TypeError) as error:
        raise ModelLoadError(f"cannot load the digits feature network from {folder}: {first_line(error)}") from error


def _load_torchscript(path: Path) -> nn.Module:
    if not path.is_file():
        raise ModelLoadError(f"TorchScript feature extractor not found: {path}")
    try:
        with warnings.catch_warnings():
            # The user chose a TorchScript file; torch 2.14 deprecates loading one (a FutureWarning) but still does.
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=FutureWarning)
            scripted = torch.jit.load(str(path), map_location="cpu")
    except (OSError, RuntimeError, ValueError) as error:
        raise ModelLoadError(f"cannot load TorchScript feature extractor {path}: {first_line(error)}") from error
    num_features = getattr(scripted, "num_features", None)
    if isinstance(num_features, torch.Tensor):
        num_features = int(num_features.item())
    if not isinstance(num_features, int) or num_features < 1:
        raise ModelLoadError(f"TorchScript feature extractor {path} must define a positive int attribute num_features")
    return _ScriptedFeatures(scripted, num_features)


def load_feature_extractor(name: str, *, weights_path: str | None = None) -> nn.Module:
    """Load the feature network FID is measured in.

    Every returned module is in eval mode, takes ``(N, C, H, W)`` float images in [-1, 1], returns
    ``(N, d)`` float features and has an ``int`` attribute ``num_features`` (= d).

    Args:
        name: ``"digits"`` (the bundled 64-d ``DigitsFeatureNet``), ``"digits-frames"`` (the same network on
            the 8x8 window centred on the ink of a 16x16 moving-digit frame: ``InkWindowFeatures``), ``"inception"`` (InceptionV3 2048-d
            pool features as torchmetrics' ``FrechetInceptionDistance(feature=2048)`` uses them; needs
            torch-fidelity) or a path to a TorchScript ``.pt`` file whose module follows the convention
            above and defines ``num_features``.
        weights_path: For ``"digits"`` and ``"digits-frames"``, a folder with ``model.safetensors`` and ``config.json``
            (default: the bundled one); for ``"inception"``, the weights file
            ``pt_inception-2015-12-05-6726825d.pth`` (default: looked up in ``$TORCH_HOME/hub/checkpoints``,
            else downloaded). Ignored for TorchScript files.

    Returns:
        The feature extractor.

    Raises:
        ModelLoadError: The name is unknown, torch-fidelity is missing or weights cannot be found or loaded.
    """
    if name == "digits":
        extractor = _load_digits(weights_path)
    elif name == "digits-frames":
        extractor = InkWindowFeatures(_load_digits(weights_path))
    elif name == "inception":
        extractor = _load_inception(weights_path)
    elif name.endswith(".pt"):
        extractor = _load_torchscript(Path(name))
    else:
        known = ", ".join(FEATURE_EXTRACTORS)
        raise ModelLoadError(f"unknown feature extractor {name!r}; known: {known}, or a path to a TorchScript .pt file")
    return extractor.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------------------------------


class FIDMeter:
    """FID of streamed generated images against fixed reference statistics.

    Holds one torchmetrics ``FrechetInceptionDistance(feature=extractor, reset_real_features=False)``
    whose real-feature states are set from ``stats`` so that torchmetrics recovers ``stats.mu`` and
    ``stats.sigma``: ``real_features_sum = n * mu`` and
    ``real_features_cov_sum = (n - 1) * sigma + n * mu mu^T`` with ``n = stats.num_samples``
    (2 when the count is unknown; any n >= 2 gives the same mean and covariance). ``reset``,
    ``update`` and ``compute`` run under ``torch.inference_mode()``, so the metric states stay
    consistent whether or not the caller is in inference mode.

    Args:
        stats: Reference statistics in the extractor's feature space.
        extractor: Feature network with an ``int`` ``num_features`` equal to ``stats.num_features``.
        device: Where the metric and the extractor run; default: the extractor's device.

    Raises:
        OptunaDiffusionError: The extractor lacks ``num_features`` or its width differs from the stats'.
    """

    def __init__(
        self, stats: ReferenceStats, extractor: nn.Module, *, device: torch.device | str | None = None
    ) -> None:
        num_features = getattr(extractor, "num_features", None)
        if not isinstance(num_features, int):
            name = type(extractor).__name__
            raise OptunaDiffusionError(f"feature extractor {name} needs an int attribute num_features")
        if num_features != stats.num_features:
            raise OptunaDiffusionError(
                f"reference statistics have {stats.num_features} features but the extractor gives {num_features}"
            )
        self.stats = stats
        self.extractor = extractor
        self.device = torch.device(device) if device is not None else module_device(extractor)
        self._metric = FrechetInceptionDistance(feature=extractor, reset_real_features=False).to(self.device)
        self._inject_real_stats(stats)

    def _inject_real_stats(self, stats: ReferenceStats) -> None:
        n = stats.num_samples if stats.num_samples >= 2 else 2
        mu = torch.as_tensor(stats.mu, dtype=torch.float64, device=self.device)
        sigma = torch.as_tensor(stats.sigma, dtype=torch.float64, device=self.device)
        self._metric.real_features_sum = n * mu
        self._metric.real_features_cov_sum = (n - 1) * sigma + n * torch.outer(mu, mu)
        self._metric.real_features_num_samples = torch.tensor(n, dtype=torch.long, device=self.device)

    @property
    def num_samples(self) -> int:
        """Generated images seen since the last :meth:`reset`."""
        return int(self._metric.fake_features_num_samples.item())

    @torch.inference_mode()
    def reset(self) -> None:
        """Forget the generated images; the reference statistics stay."""
        self._metric.reset()

    @torch.inference_mode()
    def update(self, fake_images: torch.Tensor) -> None:
        """Add one batch of generated images, ``(N, C, H, W)`` floats in [-1, 1] (videos ``(N, F, C, H, W)``: their frames)."""
        if fake_images.dim() not in (4, 5) or fake_images.shape[0] == 0:
            shape = tuple(fake_images.shape)
            raise OptunaDiffusionError(f"FID needs a non-empty (N, C, H, W) image batch, got shape {shape}")
        self._metric.update(frames_as_images(fake_images)[0].to(self.device), real=False)

    @torch.inference_mode()
    def compute(self) -> float:
        """FID of the generated images seen since the last :meth:`reset`.

        Raises:
            OptunaDiffusionError: Fewer than 2 generated images, or a non-finite result.
        """
        if self.num_samples < 2:
            raise OptunaDiffusionError(f"FID needs at least 2 generated images, got {self.num_samples}")
        value = float(self._metric.compute())
        if not np.isfinite(value):
            raise OptunaDiffusionError("FID is not finite (the generated images gave non-finite features)")
        return value


def fid_of_images(
    images: torch.Tensor,
    stats: ReferenceStats,
    extractor: nn.Module,
    batch_size: int = 500,
    *,
    device: torch.device | str | None = None,
) -> float:
    """FID of generated images against reference statistics, fed to a :class:`FIDMeter` in batches.

    Args:
        images: Generated images, ``(N, C, H, W)`` floats in [-1, 1], N >= 2.
        stats: Reference statistics in the extractor's feature space.
        extractor: Feature network, in eval mode.
        batch_size: Images per forward pass.
        device: Where to run; default: the extractor's device.

    Returns:
        The FID.
    """
    if batch_size < 1:
        raise OptunaDiffusionError(f"batch_size must be >= 1, got {batch_size}")
    meter = FIDMeter(stats, extractor, device=device)
    for start in range(0, images.shape[0], batch_size):
        meter.update(images[start : start + batch_size])
    return meter.compute()
