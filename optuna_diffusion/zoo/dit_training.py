"""Reproducible training of the bundled digits DiT (`optuna-diffusion zoo train digits-dit`).

A class-conditional diffusion transformer (diffusers ``DiTTransformer2DModel``, 10 digit classes plus
the null class 10 for classifier-free guidance) trained with rectified flow on scikit-learn's 8x8
digits, seeded and on the CPU:

* ``x_s = (1 - s) x0 + s noise`` with ``s`` in (0, 1), the model sees the time step ``1000 s`` and
  predicts the velocity ``v = noise - x0`` (what ``FlowMatchEulerDiscreteScheduler`` integrates);
* labels are dropped to the null class with probability ``label_dropout`` (by this loop, seeded; the
  per-block label dropout diffusers' ``LabelEmbedding`` does in training mode is switched off);
* AdamW with linear warm-up and cosine decay, an exponential moving average of the weights is saved.

The saved folder holds ``transformer/`` (weights stored in ``weights_dtype``; diffusers loads them into
the dtype asked for), ``scheduler/`` (a ``FlowMatchEulerDiscreteScheduler`` config) and
``training.json`` (settings, seconds, torch version, threads). The FID features are the digits UNet's
(``zoo/digits/features/``), shared.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from .data import IMAGE_SIZE, NULL_CLASS, NUM_CLASSES, load_digits_images
from .flow_training import (
    WEIGHTS_DTYPES,
    Log,
    save_flow_model,
    train_rectified_flow,
    write_training_report,
)

TIMESTEP_SAMPLINGS = ("uniform", "logit-normal")


def digits_dit_config(
    *, width: int = 96, heads: int = 4, layers: int = 4, patch_size: int = 2
) -> dict[str, Any]:
    """``DiTTransformer2DModel`` arguments of the digits DiT (defaults: the bundled model's).

    Args:
        width: the token width (``heads * attention_head_dim``).
        heads: attention heads; ``width`` must be a multiple.
        layers: transformer blocks.
        patch_size: pixels per token side (1: 64 tokens of an 8x8 digit; 2: 16 tokens).
    """
    if width % heads:
        raise ValueError(f"`width` ({width}) must be a multiple of `heads` ({heads})")
    if IMAGE_SIZE % patch_size:
        raise ValueError(f"`patch_size` must divide the image size {IMAGE_SIZE}, got {patch_size}")
    return dict(
        sample_size=IMAGE_SIZE,
        in_channels=1,
        out_channels=1,
        patch_size=patch_size,
        num_attention_heads=heads,
        attention_head_dim=width // heads,
        num_layers=layers,
        num_embeds_ada_norm=NUM_CLASSES,  # the label table has one more row: the null class 10
        norm_type="ada_norm_zero",
        norm_num_groups=1,
    )


@dataclass(frozen=True)
class DiTTraining:
    """Settings of the digits DiT training run (model size, optimiser, rectified-flow sampling of ``s``).

    Attributes:
        width, heads, layers, patch_size: the transformer (:func:`digits_dit_config`).
        steps: optimiser steps; batch_size: digits per step (drawn with replacement).
        learning_rate: peak AdamW learning rate after ``warmup_steps``, then cosine decay to 0.
        weight_decay: AdamW weight decay.
        ema_decay: decay of the saved exponential moving average of the weights.
        label_dropout: probability of training a sample with the null class.
        timestep_sampling: ``"uniform"`` or ``"logit-normal"`` (SD3's, mean 0, std 1) draws of ``s``.
        weights_dtype: ``"float16"`` or ``"float32"``, how the weights are stored.
        seed: seed of the initialisation, batches, labels dropped, ``s`` and noise.
    """

    width: int = 96
    heads: int = 4
    layers: int = 4
    patch_size: int = 2
    steps: int = 8000
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    label_dropout: float = 0.1
    timestep_sampling: str = "uniform"
    weights_dtype: str = "float16"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("width", "heads", "layers", "patch_size", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)}")
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"`label_dropout` must be in [0, 1), got {self.label_dropout}")
        if self.timestep_sampling not in TIMESTEP_SAMPLINGS:
            raise ValueError(f"`timestep_sampling` must be one of {', '.join(TIMESTEP_SAMPLINGS)}, got {self.timestep_sampling!r}")
        if self.weights_dtype not in WEIGHTS_DTYPES:
            raise ValueError(f"`weights_dtype` must be one of {', '.join(WEIGHTS_DTYPES)}, got {self.weights_dtype!r}")
        digits_dit_config(width=self.width, heads=self.heads, layers=self.layers, patch_size=self.patch_size)

    def model_config(self) -> dict[str, Any]:
        """The ``DiTTransformer2DModel`` arguments these settings train."""
        return digits_dit_config(width=self.width, heads=self.heads, layers=self.layers, patch_size=self.patch_size)


def _label_dropout_off(model: torch.nn.Module) -> None:
    """Put diffusers' label embeddings in eval mode: each block would drop labels on its own, unseeded."""
    from diffusers.models.embeddings import LabelEmbedding

    for module in model.modules():
        if isinstance(module, LabelEmbedding):
            module.eval()


def _draw_s(settings: DiTTraining, size: int, generator: torch.Generator) -> torch.Tensor:
    if settings.timestep_sampling == "logit-normal":
        return torch.sigmoid(torch.randn(size, generator=generator))
    return torch.rand(size, generator=generator)


def flow_matching_loss(
    model: torch.nn.Module, x0: torch.Tensor, labels: torch.Tensor, s: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """Rectified-flow loss: mean squared error of the predicted velocity against ``noise - x0`` at ``x_s``."""
    s_ = s.view(-1, 1, 1, 1)
    noisy = (1 - s_) * x0 + s_ * noise
    prediction = model(noisy, timestep=s * 1000, class_labels=labels, return_dict=False)[0]
    return F.mse_loss(prediction, noise - x0)


def train_dit_model(settings: DiTTraining = DiTTraining(), log: Log = print, log_every: int = 500) -> torch.nn.Module:
    """Train the digits DiT and return the EMA model in float32, eval mode."""
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(settings.seed)
    images, labels = load_digits_images()
    model = DiTTransformer2DModel(**settings.model_config())
    model.train()
    _label_dropout_off(model)
    return train_rectified_flow(
        model, images, labels, settings=settings, null_class=NULL_CLASS, loss=flow_matching_loss,
        draw_s=lambda size, generator: _draw_s(settings, size, generator), weight_decay=settings.weight_decay,
        name="dit", log=log, log_every=log_every,
    )


def train_digits_dit(out_dir: str | Path, settings: DiTTraining = DiTTraining(), log: Log = print) -> dict[str, Any]:
    """Train the digits DiT into ``out_dir`` (``transformer/``, ``scheduler/``) and write ``training.json``."""
    started = time.perf_counter()
    model = train_dit_model(settings, log)
    seconds = time.perf_counter() - started
    save_flow_model(model, out_dir, settings.weights_dtype)
    return write_training_report(out_dir, "dit", asdict(settings), model, seconds)
