"""Load a diffusion model for a study: a bundled name, a local diffusers folder, or a hub id.

A model is a UNet (``UNet2DModel`` or ``UNet2DConditionModel``) plus its noise-schedule config.
Folders may hold them as a pipeline (``unet/`` and ``scheduler/`` sub-folders) or flat (the UNet's
``config.json`` and ``scheduler_config.json`` side by side, as ``google/ddpm-*`` repositories do).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ModelLoadError, first_line
from .zoo import BUNDLED_MODELS, bundled_model_path

_UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")


@dataclass
class DiffusionModel:
    """A UNet and the config of the noise schedule it was trained with."""

    unet: nn.Module
    scheduler_config: dict[str, Any]
    source: str

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one sample."""
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return (self.unet.config.in_channels, height, width)

    @property
    def num_class_embeds(self) -> int | None:
        return getattr(self.unet.config, "num_class_embeds", None)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def _subfolder_of(folder: Path, name: str, marker: str) -> str | None:
    if (folder / name / marker).is_file():
        return name
    if (folder / marker).is_file():
        return None
    raise ModelLoadError(f"model folder {folder} has no {name}/{marker} or {marker}")


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


def _check_weights(folder: Path, subfolder: str | None) -> None:
    """A one-line error when the UNet folder holds a config but no weights file (diffusers would log
    two warnings, then name only the last file name it tried)."""
    unet_dir = folder / subfolder if subfolder else folder
    names = [p.name for p in unet_dir.iterdir() if p.is_file()]
    if not any(n.startswith("diffusion_pytorch_model") and n.endswith(_WEIGHT_SUFFIXES) for n in names):
        raise ModelLoadError(
            f"model folder {folder} has no UNet weights: expected diffusion_pytorch_model.safetensors "
            f"(or .bin) next to {unet_dir / 'config.json'}"
        )


def _unet_class(config: dict[str, Any]) -> type:
    import diffusers

    class_name = config.get("_class_name", "UNet2DModel")
    if class_name not in _UNET_CLASSES:
        raise ModelLoadError(f"model is a {class_name}; optuna-diffusion runs {' or '.join(_UNET_CLASSES)}")
    return getattr(diffusers, class_name)


def _load_from_folder(folder: Path, device: str | torch.device, dtype: torch.dtype) -> DiffusionModel:
    from diffusers import DDPMScheduler, UNet2DModel

    unet_sub = _subfolder_of(folder, "unet", "config.json")
    scheduler_sub = _subfolder_of(folder, "scheduler", "scheduler_config.json")
    _check_weights(folder, unet_sub)
    try:
        unet_config = UNet2DModel.load_config(folder, subfolder=unet_sub)
        unet = _unet_class(unet_config).from_pretrained(folder, subfolder=unet_sub, torch_dtype=dtype, low_cpu_mem_usage=False)
        scheduler_config = dict(DDPMScheduler.load_config(folder, subfolder=scheduler_sub))
    except (OSError, ValueError, EnvironmentError) as error:
        raise ModelLoadError(f"cannot load the model in {folder}: {first_line(error)}") from None
    return DiffusionModel(unet.to(device).eval().requires_grad_(False), scheduler_config, str(folder))


def _load_from_hub(repo_id: str, device: str | torch.device, dtype: torch.dtype, local_files_only: bool) -> DiffusionModel:
    from diffusers import DDPMScheduler, UNet2DModel

    last_error: Exception | None = None
    for unet_sub, scheduler_sub in (("unet", "scheduler"), (None, None)):
        try:
            config = UNet2DModel.load_config(repo_id, subfolder=unet_sub, local_files_only=local_files_only)
            unet = _unet_class(config).from_pretrained(
                repo_id, subfolder=unet_sub, torch_dtype=dtype, local_files_only=local_files_only, low_cpu_mem_usage=False
            )
            scheduler_config = dict(
                DDPMScheduler.load_config(repo_id, subfolder=scheduler_sub, local_files_only=local_files_only)
            )
        except (OSError, ValueError, EnvironmentError) as error:
            last_error = error
            continue
        return DiffusionModel(unet.to(device).eval().requires_grad_(False), scheduler_config, repo_id)
    where = "in the local Hugging Face cache" if local_files_only else "on the Hugging Face Hub or in its cache"
    raise ModelLoadError(
        f"model {repo_id!r} is not a bundled model ({', '.join(BUNDLED_MODELS)}), not a local folder, "
        f"and could not be loaded {where} ({first_line(last_error)}); download it where there is internet "
        f"(huggingface-cli download {repo_id} --local-dir DIR) and pass the folder instead"
    )


def load_diffusion_model(
    source: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    local_files_only: bool | None = None,
) -> DiffusionModel:
    """Load a UNet and its noise schedule from a bundled name, a local folder, or a hub id.

    Args:
        source: ``"digits"`` (bundled), a path to a diffusers folder, or a Hugging Face hub id.
        device: where the UNet runs.
        dtype: parameter dtype of the UNet.
        local_files_only: for hub ids, only look in the local cache. Defaults to ``HF_HUB_OFFLINE``.

    Raises:
        ModelLoadError: one line naming what is missing and how to supply it.
    """
    if source in BUNDLED_MODELS:
        return _load_from_folder(bundled_model_path(source), device, dtype)
    folder = Path(source).expanduser()
    if folder.is_dir():
        return _load_from_folder(folder, device, dtype)
    if source.startswith((".", "/", "~")) or os.sep in source.strip("/").replace("/", "", 1):
        raise ModelLoadError(f"model folder {source} does not exist")
    if local_files_only is None:
        local_files_only = _offline()
    return _load_from_hub(source, device, dtype, local_files_only)
