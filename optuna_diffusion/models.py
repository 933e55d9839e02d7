"""Load a diffusion model for a study: a bundled name, a local diffusers folder, or a hub id.

A model is a denoiser -- a UNet (``UNet2DModel``, ``UNet2DConditionModel``) or a transformer
(``DiTTransformer2DModel`` ...) -- plus the config of its noise schedule, and the family that says
how to call it (:mod:`optuna_diffusion.families`). Folders may hold them as a pipeline (``unet/`` or
``transformer/`` and ``scheduler/`` sub-folders) or flat (the denoiser's ``config.json`` and
``scheduler_config.json`` side by side, as ``google/ddpm-*`` repositories do).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ModelLoadError, first_line
from .families import ModelFamily, family_for
from .schedules import schedule_from_config
from .zoo import BUNDLED_MODELS, bundled_model_path

DENOISER_CLASSES = (
    "UNet2DModel",
    "UNet2DConditionModel",
    "DiTTransformer2DModel",
    "PixArtTransformer2DModel",
    "SD3Transformer2DModel",
    "FluxTransformer2DModel",
)
_DENOISER_FOLDERS = ("unet", "transformer")


@dataclass
class DiffusionModel:
    """A denoiser, the config of the noise schedule it was trained with, and how to call it.

    Attributes:
        denoiser: the UNet or transformer that runs at every step.
        scheduler_config: its scheduler's config (DDPM-style betas, or flow matching).
        source: where it came from (for messages).
        family: how to call it (default: by the denoiser's class).
        vae: the decoder of a latent model (None: the denoiser works on pixels).
        pipeline: the diffusers pipeline it came from, when it came from one.
    """

    denoiser: nn.Module
    scheduler_config: dict[str, Any]
    source: str
    family: ModelFamily = field(default=None)  # type: ignore[assignment]
    vae: nn.Module | None = None
    pipeline: Any = None

    def __post_init__(self) -> None:
        if self.family is None:
            self.family = family_for(self.denoiser)

    @property
    def schedule(self):
        """The noise schedule (:class:`~optuna_diffusion.schedules.NoiseSchedule` or ``FlowSchedule``)."""
        return schedule_from_config(self.scheduler_config)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample in the solver's space (``(C, H, W)`` of pixels or latents)."""
        return self.family.sample_shape(self)

    @property
    def num_class_embeds(self) -> int | None:
        return getattr(self.denoiser.config, "num_class_embeds", None)

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def _subfolder_of(folder: Path, names: tuple[str, ...], marker: str) -> str | None:
    for name in names:
        if (folder / name / marker).is_file():
            return name
    if (folder / marker).is_file():
        return None
    wanted = " or ".join(f"{name}/{marker}" for name in names)
    raise ModelLoadError(f"model folder {folder} has no {wanted} or {marker}")


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


def _check_weights(folder: Path, subfolder: str | None) -> None:
    """A one-line error when the denoiser folder holds a config but no weights file (diffusers would log
    two warnings, then name only the last file name it tried)."""
    weights_dir = folder / subfolder if subfolder else folder
    names = [p.name for p in weights_dir.iterdir() if p.is_file()]
    if not any(n.startswith("diffusion_pytorch_model") and n.endswith(_WEIGHT_SUFFIXES) for n in names):
        kind = "UNet" if subfolder in (None, "unet") else subfolder
        raise ModelLoadError(
            f"model folder {folder} has no {kind} weights: expected diffusion_pytorch_model.safetensors "
            f"(or .bin) next to {weights_dir / 'config.json'}"
        )


def _denoiser_class(config: dict[str, Any]) -> type:
    import diffusers

    class_name = config.get("_class_name", "UNet2DModel")
    if class_name not in DENOISER_CLASSES:
        raise ModelLoadError(f"model is a {class_name}; optuna-diffusion runs {', '.join(DENOISER_CLASSES)}")
    return getattr(diffusers, class_name)


def _load_denoiser(
    where: str | Path, subfolder: str | None, dtype: torch.dtype, **hub: Any
) -> tuple[nn.Module, dict[str, Any]]:
    from diffusers import DDPMScheduler, UNet2DModel

    # Every diffusers model reads its config.json the same way; the class to load is named inside.
    config = dict(UNet2DModel.load_config(where, subfolder=subfolder, **hub))
    denoiser = _denoiser_class(config).from_pretrained(
        where, subfolder=subfolder, torch_dtype=dtype, low_cpu_mem_usage=False, **hub
    )
    scheduler_sub = "scheduler" if subfolder else None
    scheduler_config = dict(DDPMScheduler.load_config(where, subfolder=scheduler_sub, **hub))
    return denoiser, scheduler_config


def _load_from_folder(folder: Path, device: str | torch.device, dtype: torch.dtype) -> DiffusionModel:
    denoiser_sub = _subfolder_of(folder, _DENOISER_FOLDERS, "config.json")
    _subfolder_of(folder, ("scheduler",), "scheduler_config.json")
    _check_weights(folder, denoiser_sub)
    try:
        denoiser, scheduler_config = _load_denoiser(folder, denoiser_sub, dtype)
    except (OSError, ValueError, EnvironmentError) as error:
        raise ModelLoadError(f"cannot load the model in {folder}: {first_line(error)}") from None
    return DiffusionModel(denoiser.to(device).eval().requires_grad_(False), scheduler_config, str(folder))


def _load_from_hub(repo_id: str, device: str | torch.device, dtype: torch.dtype, local_files_only: bool) -> DiffusionModel:
    last_error: Exception | None = None
    for subfolder in (*_DENOISER_FOLDERS, None):
        try:
            denoiser, scheduler_config = _load_denoiser(repo_id, subfolder, dtype, local_files_only=local_files_only)
        except (OSError, ValueError, EnvironmentError) as error:
            last_error = error
            continue
        return DiffusionModel(denoiser.to(device).eval().requires_grad_(False), scheduler_config, repo_id)
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
    """Load a denoiser and its noise schedule from a bundled name, a local folder, or a hub id.

    Args:
        source: a bundled name (``"digits"`` ...), a path to a diffusers folder, or a Hugging Face hub id.
        device: where the denoiser runs.
        dtype: parameter dtype of the denoiser.
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
