"""Reproducible training of ``digits-t2i``, a complete latent text-to-image pipeline on the digits.

``optuna-diffusion zoo train digits-t2i --out DIR`` writes a ``StableDiffusionPipeline`` folder:

* ``vae/``: an ``AutoencoderKL`` of the digits shown at 32x32 (each pixel a 4x4 block, so averaging
  4x4 blocks brings an image back to the 8x8 digits exactly), latents 8x8 with 4 channels;
* ``tokenizer/``: a ``CLIPTokenizer`` whose vocabulary is generated for the prompt language
  (:mod:`~optuna_diffusion.zoo.digit_prompts`, :mod:`~optuna_diffusion.zoo.clip_vocab`);
* ``text_encoder/``: a small ``CLIPTextModel``, trained with the UNet through the diffusion loss;
* ``unet/``: a ``UNet2DConditionModel`` with cross-attention at the 4x4 level, trained with prompt
  dropout (the empty prompt) so that classifier-free guidance works;
* ``scheduler/``: Stable Diffusion's ``PNDMScheduler`` configuration (scaled-linear betas).

Everything is seeded and runs on the CPU; ``training.json`` records the settings and the seconds.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .clip_vocab import write_clip_tokenizer
from .data import load_digits_images
from .digit_prompts import caption, language_words, measure_attributes

Log = Callable[[str], None]
PIXELS = 32  # the pipeline's image size; the digits are 8x8
LATENT_SIZE = 8
MAX_PROMPT_TOKENS = 16


def upscale(images: torch.Tensor) -> torch.Tensor:
    """8x8 digits to the pipeline's 32x32 images (each pixel a 4x4 block)."""
    return F.interpolate(images, size=PIXELS, mode="nearest")


def vae_config() -> dict:
    """``AutoencoderKL`` arguments: 1 channel, 32x32 -> 8x8x4."""
    return dict(
        in_channels=1, out_channels=1, latent_channels=4, sample_size=PIXELS,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 16, 16), layers_per_block=1, norm_num_groups=8,
    )


def text_encoder_config(vocab_size: int, bos: int, eos: int, pad: int) -> dict:
    """``CLIPTextConfig`` arguments of the small text encoder."""
    return dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=MAX_PROMPT_TOKENS, projection_dim=32, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
    )


def unet_config() -> dict:
    """``UNet2DConditionModel`` arguments: 8x8x4 latents, cross-attention at 4x4 and in the middle block.

    Attention only at the coarse level (as diffusers' own tiny Stable Diffusion test config) keeps the
    whole pipeline under 1 MB, so that the package ships within 8 MB."""
    return dict(
        sample_size=LATENT_SIZE, in_channels=4, out_channels=4, block_out_channels=(32, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )


def scheduler_config() -> dict:
    """Stable Diffusion 1.x's ``PNDMScheduler`` arguments."""
    return dict(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    )


@dataclass(frozen=True)
class T2ITraining:
    """Settings of the ``digits-t2i`` training run."""

    vae_steps: int = 3000
    vae_batch_size: int = 64
    vae_learning_rate: float = 2e-3
    kl_weight: float = 1e-6
    steps: int = 10000
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    prompt_dropout: float = 0.1
    seed: int = 0


def _cosine(warmup: int, total: int) -> Callable[[int], float]:
    return lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total))


def train_vae(images: torch.Tensor, settings: T2ITraining, log: Log):
    """Train the autoencoder on the upscaled digits; its ``scaling_factor`` makes latents unit variance."""
    from diffusers import AutoencoderKL

    generator = torch.Generator().manual_seed(settings.seed)
    vae = AutoencoderKL(**vae_config())
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.vae_learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(100, settings.vae_steps))
    pixels = upscale(images)
    vae.train()
    for step in range(settings.vae_steps):
        batch = pixels[torch.randint(0, len(pixels), (settings.vae_batch_size,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        loss = F.mse_loss(vae.decode(latents).sample, batch) + settings.kl_weight * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % 500 == 0:
            log(f"vae step {step + 1}/{settings.vae_steps}: loss {loss.item():.5f}")
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        std = vae.encode(pixels).latent_dist.mean.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    return vae


def train_denoiser(images, labels, vae, tokenizer, settings: T2ITraining, log: Log):
    """Train text encoder and UNet together on latents of the digits, captioned by the prompt language."""
    from diffusers import PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    generator = torch.Generator().manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_encoder_config(
        len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)))
    unet = UNet2DConditionModel(**unet_config())
    noise_schedule = PNDMScheduler(**scheduler_config())  # only its betas: the forward process
    with torch.no_grad():
        latents_all = vae.encode(upscale(images)).latent_dist.mean * vae.config.scaling_factor
    attributes = measure_attributes(images, labels)
    parameters = [*unet.parameters(), *text_encoder.parameters()]
    ema_unet = AveragedModel(unet, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay))
    ema_text = AveragedModel(text_encoder, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay))
    optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(settings.warmup_steps, settings.steps))
    alphas_cumprod = noise_schedule.alphas_cumprod
    started = time.perf_counter()
    unet.train()
    text_encoder.train()
    for step in range(settings.steps):
        batch = torch.randint(0, len(latents_all), (settings.batch_size,), generator=generator)
        texts = [
            "" if rng.random() < settings.prompt_dropout else caption(int(labels[i]), attributes[i], rng)
            for i in batch.tolist()
        ]
        ids = tokenizer(texts, padding="max_length", max_length=MAX_PROMPT_TOKENS, truncation=True, return_tensors="pt").input_ids
        x0 = latents_all[batch]
        t = torch.randint(0, noise_schedule.config.num_train_timesteps, (len(x0),), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        states = text_encoder(ids).last_hidden_state
        loss = F.mse_loss(unet(noisy, t, encoder_hidden_states=states).sample, noise)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        ema_unet.update_parameters(unet)
        ema_text.update_parameters(text_encoder)
        if (step + 1) % 500 == 0:
            log(f"denoiser step {step + 1}/{settings.steps}: loss {loss.item():.4f} ({time.perf_counter() - started:.0f}s)")
    return ema_text.module.eval().requires_grad_(False), ema_unet.module.eval().requires_grad_(False)


def train_digits_t2i(out_dir: str | Path, settings: T2ITraining = T2ITraining(), log: Log = print) -> dict:
    """Train the whole pipeline into ``out_dir`` (a ``StableDiffusionPipeline`` folder) and write ``training.json``."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    out_dir = Path(out_dir)
    torch.manual_seed(settings.seed)
    images, labels = load_digits_images()
    started = time.perf_counter()
    write_clip_tokenizer(out_dir / "tokenizer", language_words(), MAX_PROMPT_TOKENS)
    tokenizer = CLIPTokenizer.from_pretrained(out_dir / "tokenizer")
    vae = train_vae(images, settings, log)
    vae_seconds = time.perf_counter() - started
    text_encoder, unet = train_denoiser(images, labels, vae, tokenizer, settings, log)
    pipeline = StableDiffusionPipeline(
        # fp16 on disk halves the shipped size; diffusers loads it back as float32. transformers 5 would
        # keep a half text encoder half, so that one stays float32 (it is the smallest part).
        vae=vae.half(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet.half(),
        scheduler=PNDMScheduler(**scheduler_config()), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    report = {
        "settings": asdict(settings),
        "vae_seconds": round(vae_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    (out_dir / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
