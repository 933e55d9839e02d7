"""Tiny random diffusers video pipelines, built from the configs of diffusers' own pipeline tests.

The text encoder and tokenizer are the T5 stand-ins of :mod:`tests.tiny_pipelines` (diffusers' tests take
``hf-internal-testing/tiny-random-t5`` from the hub). Every builder seeds torch, so two calls give the same
weights. ``tiny_<family>()`` returns a pipeline object; ``save_<preset>(folder)`` saves one with the
component layout of that preset's real pipeline, so a preset can run on the folder in a test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from .tiny_pipelines import T5_WIDTH, tiny_t5, tiny_t5_tokenizer

WAN_SIZE = dict(image_size=16, num_frames=9)
"""The video size to give the tiny Wan model: 9 frames of 16 x 16 (3 latent frames of 2 x 2)."""


def tiny_wan(seed: int = 0, *, flow_shift: float = 3.0, scheduler: Any = None):
    """Wan 2.1 text-to-video: the transformer and 3D VAE of diffusers' Wan tests, a T5 encoder of width 32.

    The scheduler is Wan 2.1's own, ``UniPCMultistepScheduler`` on flow sigmas with ``flow_shift``.
    """
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
    ).eval()
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=T5_WIDTH, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    ).eval()
    scheduler = scheduler or UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=flow_shift,
    )
    pipe = WanPipeline(
        tokenizer=tiny_t5_tokenizer(), text_encoder=tiny_t5(seed), vae=vae, scheduler=scheduler,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


COGVIDEOX_SIZE = dict(image_size=16, num_frames=9)
"""The video size to give the tiny CogVideoX model: 9 frames of 16 x 16 (3 latent frames of 2 x 2)."""


def tiny_cogvideox(seed: int = 0, *, rotary: bool = False, scheduler: Any = None):
    """CogVideoX: the transformer and 3D VAE of diffusers' CogVideoX tests, a T5 encoder of width 32.

    The scheduler is CogVideoX-2b's: ``CogVideoXDDIMScheduler`` with v-prediction, SNR shift 3 and zero terminal
    SNR. The transformer takes the pipeline's 226 text tokens; ``rotary``: 3D rotary embeddings (5B style).
    """
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(
        # 3D rotary embeddings split a head's width over time, height and width: 16 wide heads for them.
        num_attention_heads=2 if rotary else 4, attention_head_dim=16 if rotary else 8, in_channels=4, out_channels=4, time_embed_dim=2,
        text_embed_dim=T5_WIDTH, num_layers=2, sample_width=2, sample_height=2, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=226, use_rotary_positional_embeddings=rotary,
    ).eval()
    torch.manual_seed(seed)
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
    ).eval()
    scheduler = scheduler or CogVideoXDDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction",
        rescale_betas_zero_snr=True, snr_shift_scale=3.0, timestep_spacing="trailing", clip_sample=False,
        set_alpha_to_one=True, steps_offset=0,
    )
    pipe = CogVideoXPipeline(
        tokenizer=tiny_t5_tokenizer(), text_encoder=tiny_t5(seed), vae=vae, transformer=transformer, scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


LTX_SIZE = dict(image_size=32, num_frames=9)
"""The video size to give the tiny LTX model: 9 frames of 32 x 32 (3 latent frames of 8 x 8; its VAE compresses 4x)."""


def tiny_ltx(seed: int = 0, *, scheduler: Any = None):
    """LTX-Video: the transformer and 3D VAE of diffusers' LTX tests, a T5 encoder of width 32.

    The scheduler is LTX-Video's: flow-matching Euler with dynamic shifting by the video's token count.
    """
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel

    torch.manual_seed(seed)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4, attention_head_dim=8,
        cross_attention_dim=32, num_layers=2, caption_channels=T5_WIDTH,
    ).eval()
    torch.manual_seed(seed)
    vae = AutoencoderKLLTXVideo(
        latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        spatio_temporal_scaling=(True, True, False, False), decoder_spatio_temporal_scaling=(True, True, False, False),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1), patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=False,
    ).eval()
    scheduler = scheduler or FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024, max_image_seq_len=4096,
    )
    pipe = LTXPipeline(
        tokenizer=tiny_t5_tokenizer(), text_encoder=tiny_t5(seed), vae=vae, transformer=transformer, scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _save(pipe: Any, folder: str | Path) -> Path:
    folder = Path(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def save_wan21_t2v(folder: str | Path) -> Path:
    """``wan2.1-t2v-1.3b``: WanPipeline with a flow UniPC scheduler (shift 3), T5, no second transformer."""
    return _save(tiny_wan(), folder)


def save_cogvideox_2b(folder: str | Path) -> Path:
    """``cogvideox-2b``: CogVideoXPipeline with CogVideoX-2b's DDIM scheduler (v-prediction, SNR shift 3), T5."""
    return _save(tiny_cogvideox(), folder)


def save_ltx_video(folder: str | Path) -> Path:
    """``ltx-video``: LTXPipeline with a dynamically shifted flow-matching Euler scheduler, T5."""
    return _save(tiny_ltx(), folder)


VIDEO_STAND_INS: dict[str, Callable[[str | Path], Path]] = {
    "wan2.1-t2v-1.3b": save_wan21_t2v,
    "cogvideox-2b": save_cogvideox_2b,
    "ltx-video": save_ltx_video,
}
"""A function per video preset that saves its tiny stand-in pipeline to a folder."""
