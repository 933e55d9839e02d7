"""Reproducible training of the bundled moving-digits video model (`optuna-diffusion zoo train digits-video`).

A class-conditional diffusers ``WanTransformer3DModel`` on pixels (one channel, no VAE) trained with
rectified flow on moving digits (:mod:`optuna_diffusion.zoo.moving_digits`: 40 classes, digit and
direction, plus the null class 40), seeded and on the CPU, as the digits DiT is trained
(:mod:`optuna_diffusion.zoo.dit_training`):

* ``x_s = (1 - s) x0 + s noise``, the model sees the time step ``1000 s`` and predicts ``noise - x0``;
* the label enters as one one-hot token of ``text_dim = 41`` (:func:`~optuna_diffusion.families._wan_classes.class_tokens`),
  which the transformer's text projection turns into a learned label embedding; it is dropped to the
  null class with probability ``label_dropout``;
* AdamW with linear warm-up and cosine decay; the exponential moving average of the weights is saved.

The saved folder holds ``transformer/`` (weights in ``weights_dtype``; its config carries the sample
shape ``_sample_shape``), ``scheduler/`` (the digits DiT's ``FlowMatchEulerDiscreteScheduler`` config)
and ``training.json`` (settings, seconds, torch version, threads).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from ..families._wan_classes import SAMPLE_SHAPE_KEY, class_tokens
from .flow_training import (
    WEIGHTS_DTYPES,
    Log,
    save_flow_model,
    train_rectified_flow,
    write_training_report,
)
from .moving_digits import FRAME_SIZE, NUM_FRAMES, VIDEO_NULL_CLASS, load_moving_digits


def digits_video_config(
    *, width: int = 96, heads: int = 4, layers: int = 4, ffn: int = 256, patch_size: tuple[int, int, int] = (2, 4, 4)
) -> dict[str, Any]:
    """``WanTransformer3DModel`` arguments of the moving-digits model (defaults: the bundled model's).

    Args:
        width: the token width (``heads * attention_head_dim``).
        heads: attention heads; ``width`` must be a multiple of ``6 * heads`` (Wan's rotary embedding
            splits a head into frame, row and column parts).
        layers: transformer blocks.
        ffn: hidden width of each block's feed-forward.
        patch_size: (frames, rows, columns) per token; must divide (8, 16, 16).
    """
    if width % heads or (width // heads) % 6:
        raise ValueError(f"`width` ({width}) must be a multiple of 6 * `heads` ({heads})")
    if any(size % p for size, p in zip((NUM_FRAMES, FRAME_SIZE, FRAME_SIZE), patch_size)):
        raise ValueError(f"`patch_size` {list(patch_size)} must divide the video's (frames, height, width) "
                         f"({NUM_FRAMES}, {FRAME_SIZE}, {FRAME_SIZE})")
    return dict(
        patch_size=tuple(patch_size),
        num_attention_heads=heads,
        attention_head_dim=width // heads,
        in_channels=1,
        out_channels=1,
        text_dim=VIDEO_NULL_CLASS + 1,  # one-hot label tokens: 40 classes and the null class 40
        freq_dim=64,
        ffn_dim=ffn,
        num_layers=layers,
        rope_max_seq_len=32,
    )


@dataclass(frozen=True)
class VideoTraining:
    """Settings of the digits-video training run.

    Attributes:
        width, heads, layers, ffn, patch_size: the transformer (:func:`digits_video_config`).
        steps: optimiser steps; batch_size: clips per step (drawn with replacement).
        learning_rate: peak AdamW learning rate after ``warmup_steps``, then cosine decay to 0.
        ema_decay: decay of the saved exponential moving average of the weights.
        label_dropout: probability of training a clip with the null class.
        weights_dtype: ``"float16"`` or ``"float32"``, how the weights are stored.
        seed: seed of the data's placement, the initialisation, batches, labels dropped, ``s`` and noise.
    """

    width: int = 96
    heads: int = 4
    layers: int = 4
    ffn: int = 256
    patch_size: tuple[int, int, int] = (2, 4, 4)
    steps: int = 9000
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    label_dropout: float = 0.1
    weights_dtype: str = "float16"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("width", "heads", "layers", "ffn", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)}")
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"`label_dropout` must be in [0, 1), got {self.label_dropout}")
        if self.weights_dtype not in WEIGHTS_DTYPES:
            raise ValueError(f"`weights_dtype` must be one of {', '.join(WEIGHTS_DTYPES)}, got {self.weights_dtype!r}")
        self.model_config()

    def model_config(self) -> dict[str, Any]:
        """The ``WanTransformer3DModel`` arguments these settings train."""
        return digits_video_config(
            width=self.width, heads=self.heads, layers=self.layers, ffn=self.ffn, patch_size=tuple(self.patch_size)
        )


def video_flow_loss(
    model: torch.nn.Module, x0: torch.Tensor, labels: torch.Tensor, s: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """Rectified-flow loss on videos ``(B, C, F, H, W)``: MSE of the predicted velocity against ``noise - x0``."""
    s_ = s.view(-1, 1, 1, 1, 1)
    noisy = (1 - s_) * x0 + s_ * noise
    tokens = class_tokens(labels, model.config.text_dim)
    prediction = model(noisy, timestep=s * 1000, encoder_hidden_states=tokens, return_dict=False)[0]
    return F.mse_loss(prediction, noise - x0)


def train_video_model(settings: VideoTraining = VideoTraining(), log: Log = print, log_every: int = 250) -> torch.nn.Module:
    """Train the moving-digits model and return the EMA model in float32, eval mode."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(settings.seed)
    videos, labels = load_moving_digits(settings.seed)
    model = WanTransformer3DModel(**settings.model_config())
    model.train()
    return train_rectified_flow(
        model, videos, labels, settings=settings, null_class=VIDEO_NULL_CLASS, loss=video_flow_loss,
        draw_s=lambda size, generator: torch.rand(size, generator=generator), name="video", log=log, log_every=log_every,
    )


def save_video_model(model: torch.nn.Module, out_dir: str | Path, weights_dtype: str = "float16") -> Path:
    """Write ``transformer/`` (weights in ``weights_dtype``, the sample shape in its config) and ``scheduler/``."""
    model.register_to_config(**{SAMPLE_SHAPE_KEY: [1, NUM_FRAMES, FRAME_SIZE, FRAME_SIZE]})
    return save_flow_model(model, out_dir, weights_dtype)


def train_digits_video(out_dir: str | Path, settings: VideoTraining = VideoTraining(), log: Log = print) -> dict[str, Any]:
    """Train the moving-digits model into ``out_dir`` (``transformer/``, ``scheduler/``) and write ``training.json``."""
    started = time.perf_counter()
    model = train_video_model(settings, log)
    seconds = time.perf_counter() - started
    save_video_model(model, out_dir, settings.weights_dtype)
    record = {**asdict(settings), "patch_size": list(settings.patch_size)}
    return write_training_report(out_dir, "video", record, model, seconds)
