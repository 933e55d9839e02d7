"""Tiny random diffusers pipelines, built from configs the way diffusers' own pipeline tests build them.

diffusers' tests take their tokenizers from the hub (``hf-internal-testing/tiny-random-clip`` / ``-t5``),
which cannot be downloaded here: :func:`tiny_clip_tokenizer` and :func:`tiny_t5_tokenizer` build
character-level ones from a vocabulary written here. Every builder seeds torch, so two calls give the
same weights.

``tiny_<family>()`` returns a pipeline object; ``save_<preset>(folder)`` saves one with the component
layout of that preset's real pipeline (``save_pretrained``), so a preset can run on the folder in a test.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Callable

import torch

_CHARACTERS = sorted(set(string.ascii_lowercase + string.digits + ".,;:!?'-()&/"))
CLIP_LENGTH = 77  # CLIP's model_max_length, as the real tokenizers have it
T5_WIDTH = 32


def tiny_clip_tokenizer():
    """A character-level ``CLIPTokenizer`` (each character, and each character ending a word, is a token)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for character in _CHARACTERS:
            vocab[character + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CLIP_LENGTH)


def tiny_t5_tokenizer():
    """A character-level ``T5Tokenizer`` (a unigram vocabulary of characters, with and without the word marker)."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(character, -3.0) for character in _CHARACTERS]
    pieces += [("\u2581" + character, -2.5) for character in _CHARACTERS]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def _clip_config(**overrides: Any):
    from transformers import CLIPTextConfig

    values = dict(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05,
        num_attention_heads=4, num_hidden_layers=5, vocab_size=1000, hidden_act="gelu", projection_dim=32,
    )
    values.update(overrides)
    return CLIPTextConfig(**values)


def tiny_clip(seed: int = 0, *, projection: bool = False):
    """A 5-layer CLIP text encoder of width 32 (``CLIPTextModelWithProjection`` when ``projection``)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(_clip_config()).eval()


def tiny_t5(seed: int = 0):
    """A 2-layer T5 encoder of width 32, in the spirit of ``hf-internal-testing/tiny-random-t5``."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=128, d_model=T5_WIDTH, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    return T5EncoderModel(config).eval()


def _vae(seed: int = 0, **overrides: Any):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    values = dict(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], norm_num_groups=32,
    )
    values.update(overrides)
    return AutoencoderKL(**values).eval()


def _small_vae(seed: int = 0, latent_channels: int = 4, **overrides: Any):
    """The one-level VAE of diffusers' SD3/Flux tests (scale factor 1, shift factor)."""
    return _vae(
        seed, sample_size=32, block_out_channels=(4,), layers_per_block=1, latent_channels=latent_channels,
        norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
        scaling_factor=1.5035, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        **overrides,
    )


# Stable Diffusion 1.x ----------------------------------------------------------------------------------


def tiny_sd(seed: int = 0, scheduler: Any = None):
    """Stable Diffusion 1.x: a 2-level UNet on 4x16x16 latents (32x32 images), CLIP, a 2-level VAE."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    ).eval()
    scheduler = scheduler or PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet, scheduler=scheduler, vae=_vae(seed), text_encoder=tiny_clip(seed), tokenizer=tiny_clip_tokenizer(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# SDXL ----------------------------------------------------------------------------------------------------


def tiny_sdxl(seed: int = 0, scheduler: Any = None):
    """SDXL: the UNet of diffusers' SDXL tests (text_time additions) on 4x16x16 latents, two CLIP encoders."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=8,
    ).eval()
    scheduler = scheduler or EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear", timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        unet=unet, scheduler=scheduler, vae=_vae(seed, sample_size=128, force_upcast=True),
        text_encoder=tiny_clip(seed), tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=tiny_clip(seed + 1, projection=True), tokenizer_2=tiny_clip_tokenizer(),
        image_encoder=None, feature_extractor=None, add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# PixArt ----------------------------------------------------------------------------------------------------


def tiny_pixart(seed: int = 0, *, alpha: bool = False, scheduler: Any = None):
    """PixArt-Sigma (or alpha): 2 blocks on 4x8x8 latents of a one-level VAE, a T5 encoder of width 32.

    The alpha transformer has ``sample_size`` 128, for which the pipeline adds resolution and aspect-ratio
    conditions (run it at a small ``image_size``: the position embedding follows the latent size).
    """
    from diffusers import (
        DPMSolverMultistepScheduler,
        PixArtAlphaPipeline,
        PixArtSigmaPipeline,
        PixArtTransformer2DModel,
    )

    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        sample_size=128 if alpha else 8, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3,
        caption_channels=T5_WIDTH, in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6,
    ).eval()
    scheduler = scheduler or DPMSolverMultistepScheduler()
    vae = _vae(seed, block_out_channels=(32,), down_block_types=("DownEncoderBlock2D",),
               up_block_types=("UpDecoderBlock2D",))
    cls = PixArtAlphaPipeline if alpha else PixArtSigmaPipeline
    pipe = cls(transformer=transformer, vae=vae, scheduler=scheduler, text_encoder=tiny_t5(seed),
               tokenizer=tiny_t5_tokenizer())
    pipe.set_progress_bar_config(disable=True)
    return pipe


# SD3 -------------------------------------------------------------------------------------------------------


def tiny_sd3(seed: int = 0, *, shift: float = 3.0, scheduler: Any = None):
    """SD3: the transformer of diffusers' SD3 tests on 4x16x16 latents, two CLIP encoders and T5."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=T5_WIDTH, pooled_projection_dim=64, out_channels=4,
    ).eval()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=scheduler or FlowMatchEulerDiscreteScheduler(shift=shift),
        vae=_small_vae(seed), text_encoder=tiny_clip(seed, projection=True), tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=tiny_clip(seed + 1, projection=True), tokenizer_2=tiny_clip_tokenizer(),
        text_encoder_3=tiny_t5(seed), tokenizer_3=tiny_t5_tokenizer(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# Flux ------------------------------------------------------------------------------------------------------


def tiny_flux(seed: int = 0, *, guidance_embeds: bool = False, dynamic_shifting: bool = False, scheduler: Any = None):
    """Flux (schnell, or dev with ``guidance_embeds``): the transformer of diffusers' Flux tests, CLIP and T5.

    Latents have 4 channels (16 tokens of 16 channels at 8x8 latents); the default image size is the
    pipeline's 128 x VAE factor 1, so give the model a small ``image_size`` (e.g. 16).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=T5_WIDTH, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
        guidance_embeds=guidance_embeds,
    ).eval()
    if scheduler is None:
        scheduler = FlowMatchEulerDiscreteScheduler(
            shift=1.0 if not dynamic_shifting else 3.0, use_dynamic_shifting=dynamic_shifting,
            base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096,
        )
    pipe = FluxPipeline(
        transformer=transformer, scheduler=scheduler, vae=_small_vae(seed), text_encoder=tiny_clip(seed),
        tokenizer=tiny_clip_tokenizer(), text_encoder_2=tiny_t5(seed), tokenizer_2=tiny_t5_tokenizer(),
        image_encoder=None, feature_extractor=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# DiT -------------------------------------------------------------------------------------------------------


def tiny_dit(seed: int = 0, scheduler: Any = None):
    """DiT: 2 AdaLN-zero blocks with learned sigma on 4x8x8 latents of a one-level VAE, 1000 classes."""
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(seed)
    transformer = DiTTransformer2DModel(
        sample_size=8, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=2, in_channels=4,
        out_channels=8, attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
        norm_type="ada_norm_zero", norm_elementwise_affine=False,
    ).eval()
    vae = _vae(seed, block_out_channels=(32,), down_block_types=("DownEncoderBlock2D",),
               up_block_types=("UpDecoderBlock2D",))
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler or DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


TINY_PIPELINES: dict[str, Callable[..., Any]] = {
    "sd": tiny_sd,
    "sdxl": tiny_sdxl,
    "pixart-alpha": lambda seed=0, **kw: tiny_pixart(seed, alpha=True, **kw),
    "pixart-sigma": tiny_pixart,
    "sd3": tiny_sd3,
    "flux-schnell": tiny_flux,
    "flux-dev": lambda seed=0, **kw: tiny_flux(seed, guidance_embeds=True, **kw),
    "dit": tiny_dit,
}
"""A builder per pipeline family."""

IMAGE_SIZES: dict[str, int | None] = {"pixart-alpha": 16, "flux-schnell": 16, "flux-dev": 16}
"""The image size to give a family's tiny model (None: the pipeline's default)."""


# Stand-ins for the presets: a saved pipeline with the real one's component layout ---------------------------


def _save(pipe: Any, folder: str | Path) -> Path:
    folder = Path(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def save_sd15(folder: str | Path) -> Path:
    """``sd15``: StableDiffusionPipeline with a PNDM scheduler, no safety checker."""
    return _save(tiny_sd(), folder)


def save_sdxl(folder: str | Path) -> Path:
    """``sdxl``: StableDiffusionXLPipeline with an Euler scheduler and two text encoders."""
    return _save(tiny_sdxl(), folder)


def save_pixart_sigma(folder: str | Path) -> Path:
    """``pixart-sigma``: PixArtSigmaPipeline with a DPM-Solver++ scheduler and T5."""
    return _save(tiny_pixart(), folder)


def save_sd3_medium(folder: str | Path) -> Path:
    """``sd3-medium``: StableDiffusion3Pipeline with a shifted (3.0) flow-matching Euler scheduler, three encoders."""
    return _save(tiny_sd3(), folder)


def save_flux_schnell(folder: str | Path) -> Path:
    """``flux-schnell``: FluxPipeline without guidance embedding, unshifted flow-matching Euler scheduler."""
    return _save(tiny_flux(), folder)


def save_dit_xl_256(folder: str | Path) -> Path:
    """``dit-xl-256``: DiTPipeline (learned sigma, 1000 classes) with a DDIM scheduler."""
    return _save(tiny_dit(), folder)


STAND_INS: dict[str, Callable[[str | Path], Path]] = {
    "sd15": save_sd15,
    "sdxl": save_sdxl,
    "pixart-sigma": save_pixart_sigma,
    "sd3-medium": save_sd3_medium,
    "flux-schnell": save_flux_schnell,
    "dit-xl-256": save_dit_xl_256,
}
"""A function per preset that saves its tiny stand-in pipeline to a folder."""
