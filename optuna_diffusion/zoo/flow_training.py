"""The rectified-flow training loop of the bundled flow models (the digits DiT and digits-video).

Each model brings its data, its loss and how it draws the flow time ``s``; the loop is the same: batches
drawn with replacement, labels dropped to the null class for classifier-free guidance, AdamW with a
linear warm-up and cosine decay, gradients clipped at 1, an exponential moving average of the weights.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

Log = Callable[[str], None]
WEIGHTS_DTYPES = {"float32": torch.float32, "float16": torch.float16}
"""How a bundled flow model's weights may be stored."""
FlowLoss = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss(model, x0, labels, s, noise)``: the model's loss on clean samples ``x0`` at flow times ``s``."""


class FlowTrainingSettings(Protocol):
    """What the loop reads of a model's training settings."""

    steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    ema_decay: float
    label_dropout: float
    seed: int


def cosine_with_warmup(steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The learning-rate factor at each step: linear warm-up over ``warmup_steps``, cosine decay to 0."""

    def factor(step: int) -> float:
        warmup = min(1.0, (step + 1) / max(1, warmup_steps))
        return warmup * 0.5 * (1 + math.cos(math.pi * step / steps))

    return factor


def train_rectified_flow(
    model: torch.nn.Module,
    data: torch.Tensor,
    labels: torch.Tensor,
    *,
    settings: FlowTrainingSettings,
    null_class: int,
    loss: FlowLoss,
    draw_s: Callable[[int, torch.Generator], torch.Tensor],
    weight_decay: float = 0.0,
    name: str = "flow",
    log: Log = print,
    log_every: int = 500,
) -> torch.nn.Module:
    """Train ``model`` (already in train mode) on ``data`` and return its EMA copy in float32, eval mode.

    Randomness comes from one generator seeded with ``settings.seed``, drawn in a fixed order per step
    (batch, labels dropped, ``s``, noise), so a run is reproducible on the same machine and thread count.
    """
    generator = torch.Generator().manual_seed(settings.seed)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=weight_decay)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(settings.steps, settings.warmup_steps))
    started = time.perf_counter()
    running = 0.0
    for step in range(settings.steps):
        batch = torch.randint(0, len(data), (settings.batch_size,), generator=generator)
        x0, y = data[batch], labels[batch].clone()
        y[torch.rand(len(y), generator=generator) < settings.label_dropout] = null_class
        s = draw_s(len(x0), generator)
        noise = torch.randn(x0.shape, generator=generator)
        value = loss(model, x0, y, s, noise)
        optimizer.zero_grad()
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        ema.update_parameters(model)
        running += value.item()
        if (step + 1) % log_every == 0 or step + 1 == settings.steps:
            done = (step + 1) % log_every or log_every
            log(f"{name} step {step + 1}/{settings.steps}: loss {running / done:.4f} ({time.perf_counter() - started:.0f}s)")
            running = 0.0
    return ema.module.float().eval().requires_grad_(False)


def digits_flow_scheduler_config() -> dict[str, Any]:
    """``FlowMatchEulerDiscreteScheduler`` arguments: 1000 time-step units, no shift (as trained)."""
    return dict(num_train_timesteps=1000, shift=1.0)


def save_flow_model(model: torch.nn.Module, out_dir: str | Path, weights_dtype: str = "float16") -> Path:
    """Write ``transformer/`` (weights in ``weights_dtype``) and ``scheduler/`` into ``out_dir``; return it."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.utils import logging as diffusers_logging

    out_dir = Path(out_dir)
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # no advice on keeping modules in float32: none needs it here
    try:
        model.to(WEIGHTS_DTYPES[weights_dtype]).save_pretrained(out_dir / "transformer")
    finally:
        model.float()
        diffusers_logging.set_verbosity(verbosity)
    FlowMatchEulerDiscreteScheduler(**digits_flow_scheduler_config()).save_pretrained(out_dir / "scheduler")
    return out_dir


def write_training_report(
    out_dir: str | Path, section: str, settings: dict[str, Any], model: torch.nn.Module, seconds: float
) -> dict[str, Any]:
    """Write ``training.json`` (the settings under ``section``, the model's size, the time, the scheduler,
    torch and its threads) into ``out_dir``; return it."""
    report = {
        section: {**settings, "parameters": sum(p.numel() for p in model.parameters()), "seconds": round(seconds, 1)},
        "scheduler": digits_flow_scheduler_config(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    (Path(out_dir) / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
