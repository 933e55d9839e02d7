"""Reading a diffusers model's files: a bare denoiser with its scheduler config, or a whole pipeline.

Each reader checks the files first and says in one line what is missing (diffusers would log warnings,
then name only the last file it tried); :mod:`optuna_diffusion.models` decides which to read for a
source and wraps the result in a :class:`~optuna_diffusion.models.DiffusionModel`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
from torch import nn

from .compat_diffusers import keeps_float32_modules, load_float32_keeping_model
from .errors import ModelLoadError, first_line
from .families import family_for_pipeline

DENOISER_CLASSES = (
    "UNet2DModel",
    "UNet2DConditionModel",
    "DiTTransformer2DModel",
    "PixArtTransformer2DModel",
    "SD3Transformer2DModel",
    "FluxTransformer2DModel",
    "WanTransformer3DModel",
)
DENOISER_FOLDERS = ("unet", "transformer")


def subfolder_of(folder: Path, names: tuple[str, ...], marker: str) -> str | None:
    for name in names:
        if (folder / name / marker).is_file():
            return name
    if (folder / marker).is_file():
        return None
    wanted = " or ".join(f"{name}/{marker}" for name in names)
    raise ModelLoadError(f"model folder {folder} has no {wanted} or {marker}")


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")
"""How a weights file of a diffusers or transformers component ends (sharded: its index)."""


def _ensure_dtype(components: Any, dtype: torch.dtype) -> None:
    """Cast diffusers models that ``from_pretrained`` left in float32 to ``dtype`` (its dtype argument notwithstanding).

    diffusers 0.42 without ``accelerate`` (``low_cpu_mem_usage=False``) loads a model's weights in float32
    whatever its dtype argument says; transformers' text encoders honour it (keeping their float32 modules).
    """
    from diffusers import ModelMixin

    for component in components:
        if isinstance(component, ModelMixin) and component.dtype == torch.float32 and dtype != torch.float32:
            component.to(dtype)


def check_weights(folder: Path, subfolder: str | None) -> None:
    """A one-line error when the denoiser folder holds a config but no weights file (diffusers would log
    two warnings, then name only the last file name it tried)."""
    weights_dir = folder / subfolder if subfolder else folder
    names = [p.name for p in weights_dir.iterdir() if p.is_file()]
    if not any(n.startswith("diffusion_pytorch_model") and n.endswith(WEIGHT_SUFFIXES) for n in names):
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


def _dtype_argument(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``from_pretrained``'s dtype keyword: diffusers 0.40 renamed ``torch_dtype`` to ``dtype`` and warns on the old name."""
    import diffusers
    from packaging.version import Version

    return {"dtype" if Version(diffusers.__version__) >= Version("0.40") else "torch_dtype": dtype}


def _load_keeping_float32(model_class: type, where: str | Path, subfolder: str | None, dtype: torch.dtype, **hub: Any) -> nn.Module:
    """A denoiser whose class keeps modules in float32 (Wan): diffusers loads it only with accelerate, so
    without accelerate a local folder's one safetensors file is read directly (in float32)."""
    if importlib.util.find_spec("accelerate") is not None:
        return model_class.from_pretrained(where, subfolder=subfolder, low_cpu_mem_usage=True, **_dtype_argument(dtype), **hub)
    folder = Path(where) / (subfolder or "")
    if not (folder / SAFETENSORS_WEIGHTS_NAME).is_file():
        raise ModelLoadError(
            f"diffusers loads a {model_class.__name__} only with the accelerate package (pip install accelerate); "
            f"without it only from a local folder with one {SAFETENSORS_WEIGHTS_NAME}"
        )
    return load_float32_keeping_model(model_class, folder)


def load_denoiser(
    where: str | Path, subfolder: str | None, dtype: torch.dtype, **hub: Any
) -> tuple[nn.Module, dict[str, Any]]:
    from diffusers import DDPMScheduler, UNet2DModel

    # Every diffusers model reads its config.json the same way; the class to load is named inside.
    config = dict(UNet2DModel.load_config(where, subfolder=subfolder, **hub))
    model_class = _denoiser_class(config)
    if keeps_float32_modules(model_class):
        denoiser = _load_keeping_float32(model_class, where, subfolder, dtype, **hub)
    else:
        denoiser = model_class.from_pretrained(
            where, subfolder=subfolder, low_cpu_mem_usage=False, **_dtype_argument(dtype), **hub
        )
    _ensure_dtype([denoiser], dtype)
    scheduler_sub = "scheduler" if subfolder else None
    scheduler_config = dict(DDPMScheduler.load_config(where, subfolder=scheduler_sub, **hub))
    return denoiser, scheduler_config


# Pipelines -------------------------------------------------------------------------------------------

SKIPPED_COMPONENTS = ("safety_checker", "feature_extractor", "image_encoder")
"""Components the engine never runs; loaded as None (no safety checker: the images are the raw decodes)."""


def check_pipeline_files(folder: Path, model_index: dict[str, Any]) -> None:
    """One line naming the first component that the folder's model_index.json lists but the folder lacks."""
    for name, entry in model_index.items():
        if name.startswith("_") or name in SKIPPED_COMPONENTS or not isinstance(entry, (list, tuple)):
            continue
        if len(entry) != 2 or entry[0] is None or entry[1] is None:
            continue
        library, class_name = entry
        where = folder / name
        if not where.is_dir():
            raise ModelLoadError(f"pipeline folder {folder} has no {name}/ (model_index.json lists a {class_name})")
        files = [path.name for path in where.iterdir() if path.is_file()]
        if "Scheduler" in class_name:
            needed, present = "scheduler_config.json", "scheduler_config.json" in files
        elif "Tokenizer" in class_name:
            needed, present = "tokenizer files", bool(files)
        elif library in ("diffusers", "transformers") and not class_name.endswith(("Processor", "Extractor")):
            if "config.json" not in files:
                needed, present = "config.json", False
            else:
                needed = "weights file (.safetensors or .bin)"
                present = any(n.endswith(WEIGHT_SUFFIXES) for n in files)
        else:
            continue
        if not present:
            raise ModelLoadError(f"pipeline folder {folder}: {name}/ has no {needed} (its {class_name})")


@contextlib.contextmanager
def _transformers_quiet() -> Iterator[None]:
    """transformers' log warnings off while a pipeline loads, back as they were after.

    Importing a pipeline module names every component class it may take: without torchvision,
    transformers 5 warns that ``CLIPImageProcessor`` (a safety checker's feature extractor, which this
    project never loads) falls back to its PIL version. Errors still show.
    """
    if importlib.util.find_spec("transformers") is None:
        yield
        return
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)


def load_pipeline(
    where: str | Path,
    model_index: dict[str, Any],
    source: str,
    device: str | torch.device,
    dtype: torch.dtype,
    offload: bool = False,
    **hub: Any,
) -> Any:
    """The diffusers pipeline in ``where`` on ``device`` in ``dtype`` (or under model CPU offload), ready to run:
    components the engine never runs left out, every module in eval mode without gradients, no progress bar."""
    from diffusers import DiffusionPipeline

    skipped: dict[str, Any] = {name: None for name in SKIPPED_COMPONENTS if name in model_index}
    if "safety_checker" in skipped:
        skipped["requires_safety_checker"] = False  # said on purpose, so diffusers does not warn about it
    try:
        with _transformers_quiet():
            pipeline = DiffusionPipeline.from_pretrained(where, **_dtype_argument(dtype), **skipped, **hub)
    except (OSError, ValueError, TypeError, AttributeError) as error:
        if "keep_in_fp32_modules" in str(error):  # Wan's transformer: diffusers needs accelerate to load it
            raise ModelLoadError(
                f"cannot load the pipeline {source}: diffusers loads its transformer (which keeps modules in float32) "
                "only with the accelerate package: pip install accelerate"
            ) from None
        raise ModelLoadError(f"cannot load the pipeline {source}: {first_line(error)}") from None
    _ensure_dtype(pipeline.components.values(), dtype)
    if offload:
        # diffusers' own hooks: each component moves to the accelerator only while it runs.
        pipeline.enable_model_cpu_offload(device=device)
    else:
        pipeline.to(device)
    for component in pipeline.components.values():
        if isinstance(component, nn.Module):
            component.eval().requires_grad_(False)
    if getattr(family_for_pipeline(pipeline), "upcasts_vae", False) and dtype == torch.float16 and pipeline.vae.config.force_upcast:
        pipeline.vae.to(torch.float32)  # as the pipeline decodes (it overflows in float16)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def hub_model_index(repo_id: str, local_files_only: bool) -> dict[str, Any] | None:
    """The hub repository's model_index.json, or None when it has none (or it cannot be had)."""
    from diffusers import DiffusionPipeline

    try:
        return dict(DiffusionPipeline.load_config(repo_id, local_files_only=local_files_only))
    except (OSError, ValueError):
        return None


def read_model_index(folder: Path) -> dict[str, Any] | None:
    path = folder / "model_index.json"
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"cannot read {path}: {first_line(error)}") from None
    if not isinstance(index, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return index
