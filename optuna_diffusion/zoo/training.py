"""Reproducible training of the bundled digits models (`optuna-diffusion zoo train digits`).

Two models are trained, both seeded and on the CPU:

* a class-conditional DDPM (diffusers ``UNet2DModel`` + ``DDPMScheduler`` config) with an ADM-like
  layout: two residual blocks per resolution, attention at the lowest resolution and in the middle
  block, 10 digit classes plus one null class for classifier-free guidance;
* the digits feature network whose penultimate layer is the FID feature space of the digits study.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .data import (
    IMAGE_SIZE,
    NULL_CLASS,
    NUM_CLASSES,
    feature_net_split,
    load_digits_images,
)
from .feature_net import DigitsFeatureNet

Log = Callable[[str], None]


def digits_unet_config() -> dict:
    """``UNet2DModel`` arguments of the bundled digits model (8x8 -> 4x4, attention at 4x4 and in the middle)."""
    return dict(
        sample_size=IMAGE_SIZE,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=32,
        norm_num_groups=16,
        num_class_embeds=NUM_CLASSES + 1,
    )


BETA_SCHEDULES = ("linear", "squaredcos_cap_v2")
"""The noise schedules a digits model can be trained under: the bundled model's linear betas, or the
cosine schedule (diffusers' name for it)."""

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
"""What a digits model can be trained to predict: the noise (the bundled model), the velocity, or x0."""


def digits_scheduler_config(beta_schedule: str = "linear", prediction_type: str = "epsilon") -> dict:
    """``DDPMScheduler`` arguments: 1000 training steps, linear betas 1e-4..0.02 (or cosine), epsilon prediction (or another)."""
    return dict(
        num_train_timesteps=1000,
        beta_schedule=beta_schedule,
        beta_start=1e-4,
        beta_end=0.02,
        prediction_type=prediction_type,
        clip_sample=True,
    )


def training_target(prediction_type: str, x0: torch.Tensor, noise: torch.Tensor, alpha_prod: torch.Tensor) -> torch.Tensor:
    """What the denoiser learns to output for ``x_t = sqrt(a) x0 + sqrt(1 - a) noise``: noise, v or x0."""
    if prediction_type == "v_prediction":
        return alpha_prod.sqrt() * noise - (1 - alpha_prod).sqrt() * x0
    return x0 if prediction_type == "sample" else noise


@dataclass(frozen=True)
class DiffusionTraining:
    """Settings of the digits DDPM training run."""

    steps: int = 8000
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    label_dropout: float = 0.1
    seed: int = 0
    beta_schedule: str = "linear"
    prediction_type: str = "epsilon"

    def __post_init__(self) -> None:
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta schedule must be one of {', '.join(BETA_SCHEDULES)}, not {self.beta_schedule!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction type must be one of {', '.join(PREDICTION_TYPES)}, not {self.prediction_type!r}")


@dataclass(frozen=True)
class FeatureNetTraining:
    """Settings of the digits feature network training run."""

    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0


def train_feature_net(out_dir: str | Path, settings: FeatureNetTraining = FeatureNetTraining(), log: Log = print) -> float:
    """Train the feature network on the fixed split, save it to ``out_dir``; return held-out accuracy."""
    torch.manual_seed(settings.seed)
    images, labels = load_digits_images()
    train_idx, held_out_idx = feature_net_split(len(images))
    train_x, train_y = images[train_idx], labels[train_idx]
    net = DigitsFeatureNet()
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.learning_rate, weight_decay=1e-4)
    lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs)
    generator = torch.Generator().manual_seed(settings.seed)
    for epoch in range(settings.epochs):
        net.train()
        order = torch.randperm(len(train_x), generator=generator)
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            x = _random_shift(train_x[batch], generator)
            loss = F.cross_entropy(net.classify(x), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        lr_schedule.step()
        if (epoch + 1) % 10 == 0:
            log(f"feature net epoch {epoch + 1}: held-out accuracy {feature_net_accuracy(net):.4f}")
    net.eval().requires_grad_(False)
    net.save_pretrained(out_dir)
    return feature_net_accuracy(net)


def feature_net_accuracy(net: DigitsFeatureNet) -> float:
    """Accuracy of ``net`` on the held-out part of the fixed split."""
    images, labels = load_digits_images()
    _, held_out_idx = feature_net_split(len(images))
    net.eval()
    with torch.inference_mode():
        predictions = net.classify(images[held_out_idx]).argmax(dim=1)
    return (predictions == labels[held_out_idx]).float().mean().item()


def _random_shift(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to one pixel (background value -1 fills in), a cheap augmentation."""
    padded = F.pad(images, (1, 1, 1, 1), value=-1.0)
    dx, dy = torch.randint(0, 3, (2,), generator=generator).tolist()
    return padded[:, :, dy : dy + IMAGE_SIZE, dx : dx + IMAGE_SIZE]


def train_diffusion_model(out_dir: str | Path, settings: DiffusionTraining = DiffusionTraining(), log: Log = print) -> None:
    """Train the class-conditional digits DDPM and save it as a diffusers folder (``unet/``, ``scheduler/``)."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    images, labels = load_digits_images()
    scheduler = DDPMScheduler(**digits_scheduler_config(settings.beta_schedule, settings.prediction_type))
    unet = UNet2DModel(**digits_unet_config())
    ema = AveragedModel(unet, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay))
    optimizer = torch.optim.AdamW(unet.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    lr_lambda = lambda step: min(1.0, (step + 1) / settings.warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / settings.steps))
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    alphas_cumprod = scheduler.alphas_cumprod
    started = time.perf_counter()
    unet.train()
    for step in range(settings.steps):
        batch = torch.randint(0, len(images), (settings.batch_size,), generator=generator)
        x0, y = images[batch], labels[batch].clone()
        y[torch.rand(len(y), generator=generator) < settings.label_dropout] = NULL_CLASS
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = training_target(settings.prediction_type, x0, noise, a)
        loss = F.mse_loss(unet(noisy, t, class_labels=y).sample, target)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        ema.update_parameters(unet)
        if (step + 1) % 500 == 0:
            log(f"diffusion step {step + 1}/{settings.steps}: loss {loss.item():.4f} ({time.perf_counter() - started:.0f}s)")
    out_dir = Path(out_dir)
    ema.module.eval().save_pretrained(out_dir / "unet")
    scheduler.save_pretrained(out_dir / "scheduler")


def train_digits(
    out_dir: str | Path,
    seed: int = 0,
    diffusion_steps: int | None = None,
    log: Log = print,
    *,
    beta_schedule: str = "linear",
    prediction_type: str = "epsilon",
) -> dict:
    """Train both digits models into ``out_dir`` and write ``training.json`` with settings and results.

    ``beta_schedule`` and ``prediction_type`` train another model of the same digits (the bundled one is
    linear and epsilon), such as a second model to check that a search recipe was not tuned on one.
    """
    out_dir = Path(out_dir)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    feature_settings = FeatureNetTraining(seed=seed)
    steps = {} if diffusion_steps is None else {"steps": diffusion_steps}
    diffusion_settings = DiffusionTraining(seed=seed, beta_schedule=beta_schedule, prediction_type=prediction_type, **steps)
    started = time.perf_counter()
    accuracy = train_feature_net(out_dir / "features", feature_settings, log)
    feature_seconds = time.perf_counter() - started
    train_diffusion_model(out_dir, diffusion_settings, log)
    report = {
        "feature_net": {**asdict(feature_settings), "held_out_accuracy": accuracy, "seconds": round(feature_seconds, 1)},
        "diffusion": {**asdict(diffusion_settings), "seconds": round(time.perf_counter() - started - feature_seconds, 1)},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    (out_dir / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
