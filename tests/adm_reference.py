"""An independent reference of guided-diffusion's forward passes, on raw ADM state dicts.

Written from guided-diffusion's ``unet.py`` (``ResBlock``, ``AttentionBlock`` with ``QKVAttention`` /
``QKVAttentionLegacy``, ``AttentionPool2d``, ``UNetModel.forward``, ``EncoderUNetModel.forward``) and
``nn.timestep_embedding``. It walks the ADM key names itself and shares no code with the converters,
so a wrong key mapping, q/k/v order or head split in a converter makes the tests fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

State = dict[str, Tensor]


@dataclass(frozen=True)
class Flags:
    """guided-diffusion constructor flags (``UNetModel`` / ``EncoderUNetModel`` argument meanings)."""

    image_size: int
    model_channels: int
    channel_mult: tuple[float, ...]
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]
    num_head_channels: int
    num_heads: int
    new_order: bool
    scale_shift: bool
    resblock_updown: bool

    def heads(self, channels: int) -> int:
        return self.num_heads if self.num_head_channels == -1 else channels // self.num_head_channels

    @property
    def attention_ds(self) -> set[int]:
        return {self.image_size // r for r in self.attention_resolutions}


def group_norm(p: State, key: str, x: Tensor) -> Tensor:
    return F.group_norm(x, 32, p[f"{key}.weight"], p[f"{key}.bias"], eps=1e-5)


def resblock(p: State, key: str, x: Tensor, emb: Tensor, scale_shift: bool, updown: str | None = None) -> Tensor:
    h = F.silu(group_norm(p, f"{key}.in_layers.0", x))
    if updown == "down":
        h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
    elif updown == "up":
        h, x = F.interpolate(h, scale_factor=2, mode="nearest"), F.interpolate(x, scale_factor=2, mode="nearest")
    h = F.conv2d(h, p[f"{key}.in_layers.2.weight"], p[f"{key}.in_layers.2.bias"], padding=1)
    emb_out = F.linear(F.silu(emb), p[f"{key}.emb_layers.1.weight"], p[f"{key}.emb_layers.1.bias"])[..., None, None]
    if scale_shift:
        scale, shift = torch.chunk(emb_out, 2, dim=1)
        h = group_norm(p, f"{key}.out_layers.0", h) * (1 + scale) + shift
    else:
        h = group_norm(p, f"{key}.out_layers.0", h + emb_out)
    h = F.conv2d(F.silu(h), p[f"{key}.out_layers.3.weight"], p[f"{key}.out_layers.3.bias"], padding=1)
    if f"{key}.skip_connection.weight" in p:
        x = F.conv2d(x, p[f"{key}.skip_connection.weight"], p[f"{key}.skip_connection.bias"])
    return x + h


def qkv_attention(qkv: Tensor, heads: int, new_order: bool) -> Tensor:
    """``QKVAttention`` (new order) or ``QKVAttentionLegacy`` on a ``(B, 3 * H * C, T)`` tensor."""
    b, width, length = qkv.shape
    ch = width // (3 * heads)
    if new_order:  # split q/k/v first, then heads
        q, k, v = (t.reshape(b * heads, ch, length) for t in qkv.chunk(3, dim=1))
    else:  # split heads first, then q/k/v
        q, k, v = qkv.reshape(b * heads, 3 * ch, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    return torch.einsum("bts,bcs->bct", weight, v).reshape(b, -1, length)


def attention(p: State, key: str, x: Tensor, heads: int, new_order: bool) -> Tensor:
    b, c, *spatial = x.shape
    x = x.reshape(b, c, -1)
    qkv = F.conv1d(group_norm(p, f"{key}.norm", x), p[f"{key}.qkv.weight"], p[f"{key}.qkv.bias"])
    h = F.conv1d(qkv_attention(qkv, heads, new_order), p[f"{key}.proj_out.weight"], p[f"{key}.proj_out.bias"])
    return (x + h).reshape(b, c, *spatial)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def time_embed(p: State, flags: Flags, t: Tensor, dtype: torch.dtype) -> Tensor:
    emb = timestep_embedding(t, flags.model_channels).to(dtype)
    emb = F.silu(F.linear(emb, p["time_embed.0.weight"], p["time_embed.0.bias"]))
    return F.linear(emb, p["time_embed.2.weight"], p["time_embed.2.bias"])


def _attend(p: State, flags: Flags, key: str, h: Tensor) -> Tensor:
    return attention(p, key, h, flags.heads(h.shape[1]), flags.new_order)


def encoder(p: State, flags: Flags, x: Tensor, emb: Tensor) -> tuple[Tensor, list[Tensor], int]:
    """``input_blocks`` and ``middle_block``: the output, the skip stack and the final downsample rate."""
    ss = flags.scale_shift
    h = F.conv2d(x, p["input_blocks.0.0.weight"], p["input_blocks.0.0.bias"], padding=1)
    hs, idx, ds = [h], 1, 1
    for level in range(len(flags.channel_mult)):
        for _ in range(flags.num_res_blocks):
            h = resblock(p, f"input_blocks.{idx}.0", h, emb, ss)
            if ds in flags.attention_ds:
                h = _attend(p, flags, f"input_blocks.{idx}.1", h)
            hs.append(h)
            idx += 1
        if level != len(flags.channel_mult) - 1:
            if flags.resblock_updown:
                h = resblock(p, f"input_blocks.{idx}.0", h, emb, ss, "down")
            else:
                key = f"input_blocks.{idx}.0.op"
                h = F.conv2d(h, p[f"{key}.weight"], p[f"{key}.bias"], stride=2, padding=1)
            hs.append(h)
            idx += 1
            ds *= 2
    h = resblock(p, "middle_block.0", h, emb, ss)
    h = _attend(p, flags, "middle_block.1", h)
    h = resblock(p, "middle_block.2", h, emb, ss)
    return h, hs, ds


def unet_forward(p: State, flags: Flags, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
    """``UNetModel.forward(x, timesteps, y)``."""
    ss = flags.scale_shift
    emb = time_embed(p, flags, t, x.dtype)
    if y is not None:
        emb = emb + p["label_emb.weight"][y]
    h, hs, ds = encoder(p, flags, x, emb)
    idx = 0
    for level in reversed(range(len(flags.channel_mult))):
        for i in range(flags.num_res_blocks + 1):
            h = resblock(p, f"output_blocks.{idx}.0", torch.cat([h, hs.pop()], dim=1), emb, ss)
            sub = 1
            if ds in flags.attention_ds:
                h = _attend(p, flags, f"output_blocks.{idx}.1", h)
                sub = 2
            if level and i == flags.num_res_blocks:
                key = f"output_blocks.{idx}.{sub}"
                if flags.resblock_updown:
                    h = resblock(p, key, h, emb, ss, "up")
                else:
                    h = F.interpolate(h, scale_factor=2, mode="nearest")
                    h = F.conv2d(h, p[f"{key}.conv.weight"], p[f"{key}.conv.bias"], padding=1)
                ds //= 2
            idx += 1
    h = F.silu(group_norm(p, "out.0", h))
    return F.conv2d(h, p["out.2.weight"], p["out.2.bias"], padding=1)


def attention_pool(p: State, key: str, x: Tensor, head_channels: int) -> Tensor:
    """``AttentionPool2d``: mean token prepended, positional embedding, ``QKVAttention``, token 0."""
    b, c, *_ = x.shape
    x = x.reshape(b, c, -1)
    x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
    x = x + p[f"{key}.positional_embedding"][None].to(x.dtype)
    qkv = F.conv1d(x, p[f"{key}.qkv_proj.weight"], p[f"{key}.qkv_proj.bias"])
    h = qkv_attention(qkv, c // head_channels, new_order=True)
    return F.conv1d(h, p[f"{key}.c_proj.weight"], p[f"{key}.c_proj.bias"])[:, :, 0]


def classifier_forward(p: State, flags: Flags, x: Tensor, t: Tensor) -> Tensor:
    """``EncoderUNetModel.forward(x, timesteps)`` with ``pool="attention"``: the logits."""
    emb = time_embed(p, flags, t, x.dtype)
    h, _, _ = encoder(p, flags, x, emb)
    h = F.silu(group_norm(p, "out.0", h))
    return attention_pool(p, "out.2", h, flags.num_head_channels)
