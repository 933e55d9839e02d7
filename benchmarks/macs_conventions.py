"""MACs of the full-size Stable Diffusion 1.5 UNet in both counting conventions.

Builds ``UNet2DConditionModel`` from SD 1.5's published ``unet/config.json`` values, written here (no
download), with zero weights (MACs do not depend on them), and counts one batch-1 call at 64x64 latents
(512x512 images) with 77 text tokens of width 768, in each of :data:`optuna_diffusion.macs.MACS_CONVENTIONS`:

* ``full`` (the project's default): attention's score and value products included, as torch's
  ``FlopCounterMode`` and the DiT paper count;
* ``linear-conv``: convolutions and linear layers only, with their bias terms, as thop and DeepCache's
  counter count (the Stable Diffusion acceleration papers' tables).

It also prints the linear-conv count without bias terms (calflops' MACs), to show what the bias adds.

Run: OMP_NUM_THREADS=1 python benchmarks/macs_conventions.py   (under two minutes on one CPU core)
"""

from __future__ import annotations

import time

import torch

from optuna_diffusion.macs import MACS_CONVENTIONS, FvcoreCounter, example_inputs

# SD 1.5's unet/config.json (runwayml/stable-diffusion-v1-5), every value that shapes the network.
SD15_UNET_CONFIG = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "center_input_sample": False,
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "mid_block_scale_factor": 1,
}


def sd15_unet() -> torch.nn.Module:
    """The full-size SD 1.5 UNet with zero weights (built on the meta device, then materialised)."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    unet = unet.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in (*unet.parameters(), *unet.buffers()):
            tensor.zero_()
    return unet.eval().requires_grad_(False)


def main() -> None:
    started = time.perf_counter()
    unet = sd15_unet()
    parameters = sum(p.numel() for p in unet.parameters())
    inputs = example_inputs(unet, text_length=77)
    print(f"SD 1.5 UNet ({parameters / 1e6:.1f} M parameters), one call at 64x64 latents, 77 text tokens:")
    counts = {convention: FvcoreCounter(convention).count(unet, inputs) for convention in MACS_CONVENTIONS}
    for convention, count in counts.items():
        print(f"  {convention:<12} {count.total / 1e9:8.1f} GMACs")
    full = counts["full"].by_operator
    no_bias = full.get("conv", 0) + full.get("linear", 0)
    print(f"  linear-conv without bias terms {no_bias / 1e9:.1f} GMACs; attention products in full "
          f"{full.get('scaled_dot_product_attention', 0) / 1e9:.1f} GMACs")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
