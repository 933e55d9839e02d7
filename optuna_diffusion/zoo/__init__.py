"""Models that ship inside the package, so the default study runs offline.

``digits`` is a class-conditional DDPM of scikit-learn's 8x8 digits (diffusers format, in
``zoo/digits/``) with its FID feature network (``zoo/digits/features/``). The code that trained
both is :mod:`optuna_diffusion.zoo.training` (``optuna-diffusion zoo train digits --out DIR``).

``digits-dit`` is a class-conditional flow-matching transformer (``DiTTransformer2DModel`` with a
``FlowMatchEulerDiscreteScheduler`` config, in ``zoo/digits-dit/``) of the same digits; its FID uses
the digits feature network above. It was trained by :mod:`optuna_diffusion.zoo.dit_training`
(``optuna-diffusion zoo train digits-dit --out DIR``).

``digits-t2i`` is a latent text-to-image ``StableDiffusionPipeline`` of the same digits (a whole
pipeline folder, in ``zoo/digits-t2i/``: VAE, CLIP text encoder and a tokenizer generated for its
prompt language, cross-attention UNet, scheduler), loadable with ``StableDiffusionPipeline.from_pretrained``.
It was trained by :mod:`optuna_diffusion.zoo.t2i_training` (``optuna-diffusion zoo train digits-t2i --out DIR``).

``digits-video`` is a class-conditional flow-matching video transformer (a bare ``WanTransformer3DModel`` on
pixels with a ``FlowMatchEulerDiscreteScheduler`` config, in ``zoo/digits-video/``) of the same digits gliding
across a 16x16 frame for 8 frames (:mod:`optuna_diffusion.zoo.moving_digits`; label = digit * 4 + direction,
null class 40). It was trained by :mod:`optuna_diffusion.zoo.video_training`
(``optuna-diffusion zoo train digits-video --out DIR``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelLoadError

_ZOO_DIR = Path(__file__).resolve().parent

BUNDLED_MODELS: dict[str, str] = {
    "digits": "class-conditional DDPM of scikit-learn's 8x8 digits (10 classes + null class 10)",
    "digits-dit": "class-conditional rectified-flow DiT of scikit-learn's 8x8 digits (10 classes + null class 10)",
    "digits-t2i": "latent text-to-image Stable Diffusion pipeline of scikit-learn's digits (prompts: 'a thin, slanted 7')",
    "digits-video": "class-conditional rectified-flow Wan video transformer of moving digits (40 classes: digit * 4 + "
                    "direction right/left/down/up; null class 40)",
}

TRAINABLE_MODELS: tuple[str, ...] = tuple(BUNDLED_MODELS)
"""What ``optuna-diffusion zoo train`` trains: every bundled model."""


BUNDLED_REFERENCES: dict[str, str] = {
    "digits": "all 1,797 real digits",
    "digits-video": "every frame of the 7,188 real moving-digit clips (57,504 frames)",
}
"""Real data shipped with the package that ``[fid] reference`` can name (FID's reference statistics are computed
from it once and cached)."""


def bundled_reference_images(name: str) -> Any:
    """The real images of a bundled reference, ``(N, C, H, W)`` in [-1, 1] (videos ``(N, F, C, H, W)``)."""
    if name == "digits":
        from .data import load_digits_images

        return load_digits_images()[0]
    if name == "digits-video":
        from .moving_digits import load_moving_digits

        return load_moving_digits()[0].transpose(1, 2)  # (N, F, C, H, W): frames, as the model's are decoded
    raise ModelLoadError(f"unknown bundled reference {name!r}; bundled: {', '.join(BUNDLED_REFERENCES)}")


def bundled_model_path(name: str) -> Path:
    """Folder of a bundled model (``unet/`` or ``transformer/``, ``scheduler/``; ``digits`` also ``features/``;
    ``digits-t2i`` is a whole pipeline folder with its ``model_index.json``)."""
    if name not in BUNDLED_MODELS:
        raise ModelLoadError(f"unknown bundled model {name!r}; bundled: {', '.join(BUNDLED_MODELS)}")
    return _ZOO_DIR / name
