"""MACs of one UNet evaluation, and of a sampling plan that skips or reuses blocks.

Counting is fvcore's :class:`~fvcore.nn.FlopCountAnalysis` on one traced UNet call of batch 1.
fvcore counts one fused multiply-add as one flop, so its numbers are MACs. Its default handles
count convolutions, linear layers and matrix products, plus the norms (group/layer/batch/instance)
and up-sampling it knows; pointwise ops (add, mul, silu, gelu, softmax, ...) stay uncounted, as
fvcore leaves them. Two handles are added here for the attention products it misses:

* ``aten::scaled_dot_product_attention`` (diffusers' default ``AttnProcessor2_0``):
  ``B * heads * Lq * Lk * d`` for ``Q @ K^T`` plus ``B * heads * Lq * Lk * d_v`` for ``attn @ V``;
* ``aten::baddbmm`` (the classic ``AttnProcessor``'s ``Q @ K^T``), counted like ``bmm``,

so a model counts the same whatever attention processor it runs. The count follows eager execution:
the JIT tracer would drop work whose result is discarded (the input of a reused block, computed and
then ignored), so every module input of the traced call is kept as an extra output.

:class:`MacsTable` is built from one trace: the MACs of a full evaluation and, per block of
:func:`~optuna_diffusion.blocks.find_blocks`, what skipping or reusing it saves. A skipped residual
block still runs its 1x1 ``conv_shortcut`` when it has one; a reused block, or a reused branch
``up.i``, runs nothing. :meth:`MacsTable.plan_macs` then prices any :class:`~optuna_diffusion.plan.Plan`
without tracing again.
"""

from __future__ import annotations

import inspect
import math
import warnings
from numbers import Real
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from .blocks import Block, find_blocks
from .errors import ConfigError, PlanError
from .plan import Plan

__all__ = ["MacsTable", "count_macs", "macs_analysis"]

_TABLE_FORMAT = "optuna-diffusion macs table v1"


# --------------------------------------------------------------------------------------------------
# fvcore handles
# --------------------------------------------------------------------------------------------------


def _shape(value: Any) -> list[int]:
    from fvcore.nn.jit_handles import get_shape  # fvcore.nn is imported (quietly) by macs_analysis

    shape = get_shape(value)
    if shape is None:
        raise ConfigError("fvcore could not read a tensor shape in the traced UNet; trace with concrete inputs")
    return list(shape)


def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """``scaled_dot_product_attention(q, k, v, ...)``: ``Q @ K^T`` and ``attn @ V``, per query head."""
    query, key, value = (_shape(v) for v in inputs[:3])
    out = _shape(outputs[0])
    batch_heads = math.prod(out[:-2])  # broadcast batch/head dims (query heads under GQA)
    lq, d = query[-2], query[-1]
    lk, dv = key[-2], value[-1]
    return batch_heads * lq * lk * (d + dv)


def _baddbmm_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """``baddbmm(input, batch1, batch2, beta, alpha)``: the ``batch1 @ batch2`` product, like ``bmm``."""
    b, n, m = _shape(inputs[1])
    p = _shape(inputs[2])[-1]
    return b * n * m * p


_EXTRA_HANDLES = {
    "aten::scaled_dot_product_attention": _sdpa_macs,
    "aten::baddbmm": _baddbmm_macs,
}


# --------------------------------------------------------------------------------------------------
# Tracing one UNet call
# --------------------------------------------------------------------------------------------------


class _UNetCall(nn.Module):
    """``unet(sample, timestep, **conditioning)`` with tensor arguments only, for JIT tracing."""

    def __init__(self, unet: nn.Module, conditioning_names: Sequence[str]) -> None:
        super().__init__()
        self.unet = unet  # traced module paths read "unet.<path in the UNet>"
        self.conditioning_names = tuple(conditioning_names)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, *conditioning: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        kwargs = dict(zip(self.conditioning_names, conditioning))
        # The tracer drops ops whose results reach no output. Eager PyTorch runs them anyway (the
        # input of a reused block is computed, then ignored), so every module input is an output too.
        consumed: dict[int, torch.Tensor] = {}

        def keep_inputs(module: nn.Module, args: tuple, module_kwargs: dict) -> None:
            for tensor in _tensors((args, module_kwargs)):
                if _is_traced(tensor):
                    consumed.setdefault(id(tensor), tensor)

        tracing = torch._C._get_tracing_state() is not None
        modules = list(self.unet.modules()) if tracing else []
        handles = [m.register_forward_pre_hook(keep_inputs, with_kwargs=True) for m in modules]
        try:
            output = self.unet(sample, timestep, **kwargs, return_dict=False)[0]
        finally:
            for handle in handles:
                handle.remove()
        return (output, *consumed.values())


def _is_traced(tensor: torch.Tensor) -> bool:
    """True when ``tensor`` is computed in the current trace (not a constant such as a cached output)."""
    try:
        return torch._C._get_value_trace(tensor).node().kind() != "prim::Constant"
    except (AttributeError, RuntimeError):  # private API gone: trace without keeping inputs alive
        return False


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    return []


_PREFIX = "unet."


def _requires(unet: nn.Module, argument: str) -> bool:
    parameters = inspect.signature(type(unet).forward).parameters
    return argument in parameters and parameters[argument].default is inspect.Parameter.empty


def _default_sample_shape(unet: nn.Module) -> tuple[int, ...]:
    config = getattr(unet, "config", None)
    channels, size = getattr(config, "in_channels", None), getattr(config, "sample_size", None)
    if channels is None or size is None:
        raise ConfigError(f"{type(unet).__name__} has no in_channels/sample_size config; pass sample_shape=(C, H, W)")
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return (int(channels), int(height), int(width))


def _sample_shape(unet: nn.Module, sample_shape: Sequence[int] | None) -> tuple[int, int, int]:
    shape = _default_sample_shape(unet) if sample_shape is None else tuple(sample_shape)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
        raise ConfigError(f"sample_shape must be (C, H, W) or (1, C, H, W) of positive integers, got {sample_shape!r}")
    return shape  # type: ignore[return-value]


def _conditioning(
    unet: nn.Module,
    class_labels: bool | int | torch.Tensor | None,
    encoder_hidden_states: torch.Tensor | Sequence[int] | None,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """Batch-1 conditioning tensors for the traced call, by keyword."""
    conditioning: dict[str, torch.Tensor] = {}
    if class_labels is None:
        class_labels = getattr(unet, "class_embedding", None) is not None
    if isinstance(class_labels, torch.Tensor):
        if class_labels.numel() != 1:
            raise ConfigError(f"class_labels must hold one label (batch 1), got shape {tuple(class_labels.shape)}")
        conditioning["class_labels"] = class_labels.reshape(1).to(device)
    elif class_labels is True:
        conditioning["class_labels"] = torch.zeros(1, dtype=torch.long, device=device)
    elif isinstance(class_labels, int) and not isinstance(class_labels, bool):
        conditioning["class_labels"] = torch.tensor([class_labels], dtype=torch.long, device=device)
    elif class_labels is not False:
        raise ConfigError(f"class_labels must be True/False, an integer label or a tensor, got {class_labels!r}")

    if encoder_hidden_states is None:
        if _requires(unet, "encoder_hidden_states"):
            raise ConfigError(
                f"{type(unet).__name__} needs encoder_hidden_states: pass a (1, L, D) tensor or its shape (L, D)"
            )
    elif isinstance(encoder_hidden_states, torch.Tensor):
        if encoder_hidden_states.dim() == 2:
            encoder_hidden_states = encoder_hidden_states[None]
        if encoder_hidden_states.dim() != 3 or encoder_hidden_states.shape[0] != 1:
            raise ConfigError(
                f"encoder_hidden_states must be (1, L, D) (batch 1), got {tuple(encoder_hidden_states.shape)}"
            )
        conditioning["encoder_hidden_states"] = encoder_hidden_states.to(device=device, dtype=dtype)
    else:
        shape = tuple(encoder_hidden_states)
        if len(shape) == 3 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) != 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
            raise ConfigError(f"encoder_hidden_states shape must be (L, D), got {encoder_hidden_states!r}")
        conditioning["encoder_hidden_states"] = torch.zeros(1, *shape, device=device, dtype=dtype)
    return conditioning


def macs_analysis(
    unet: nn.Module,
    sample_shape: Sequence[int] | None = None,
    *,
    class_labels: bool | int | torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | Sequence[int] | None = None,
    timestep: int = 500,
) -> Any:
    """fvcore's ``FlopCountAnalysis`` of one batch-1 UNet call, with this module's extra handles.

    The analysis is lazy; its first query traces the model once. Module names in ``by_module()``
    read ``"unet." + <module path in the UNet>``.

    Args:
        unet: a diffusers ``UNet2DModel`` / ``UNet2DConditionModel`` (any installed
            :class:`~optuna_diffusion.blocks.BlockSwitch` is honoured: skipped or reused blocks
            are not counted).
        sample_shape: ``(C, H, W)`` of one sample; default from the UNet's config.
        class_labels: ``True`` passes label 0, an integer or one-element tensor passes that label,
            ``False`` passes none; default: a label iff the UNet has a class embedding.
        encoder_hidden_states: ``(1, L, D)`` tensor or its shape ``(L, D)``; needed by
            ``UNet2DConditionModel`` (MACs of cross-attention grow with ``L``).
        timestep: the time step of the traced call (MACs do not depend on it).
    """
    with warnings.catch_warnings():  # fvcore.nn's import scripts a loss with the deprecated torch.jit.script
        warnings.simplefilter("ignore", DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis

    reference = next(unet.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.float32
    shape = _sample_shape(unet, sample_shape)
    conditioning = _conditioning(unet, class_labels, encoder_hidden_states, device, dtype)
    inputs = (
        torch.randn(1, *shape, device=device, dtype=dtype),
        torch.tensor([timestep], device=device),
        *conditioning.values(),
    )
    analysis = FlopCountAnalysis(_UNetCall(unet, list(conditioning)), inputs)
    for name, handle in _EXTRA_HANDLES.items():
        analysis.set_op_handle(name, handle)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    _trace_quietly(analysis)
    return analysis


def _trace_quietly(analysis: Any) -> None:
    """Run the (lazy) trace now, without fvcore's or the JIT tracer's warnings."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        analysis.total()


def count_macs(
    unet: nn.Module,
    sample_shape: Sequence[int] | None = None,
    *,
    class_labels: bool | int | torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | Sequence[int] | None = None,
) -> int:
    """MACs of one batch-1 UNet evaluation (see :func:`macs_analysis` for the arguments)."""
    analysis = macs_analysis(
        unet, sample_shape, class_labels=class_labels, encoder_hidden_states=encoder_hidden_states
    )
    return _as_macs(analysis.total(), "total")


def _as_macs(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Real) or value != int(value) or value < 0:
        raise ConfigError(f"MACs of {what} must be a non-negative integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------------
# Per-block table
# --------------------------------------------------------------------------------------------------


def _inside(inner: Block, outer: Block) -> bool:
    """True when every module of ``inner`` lies in one of ``outer``'s member subtrees."""
    return all(any(p == m or p.startswith(m + ".") for m in outer.members) for p in inner.members)


@dataclass(frozen=True)
class MacsTable:
    """MACs of a full UNet evaluation (batch 1) and what each block saves when skipped or reused.

    Attributes:
        full: MACs of one full evaluation.
        skip_savings: per skippable block (residual and attention blocks), MACs saved by skipping it
            (a residual block's 1x1 ``conv_shortcut``, when it has one, still runs).
        reuse_savings: per block and per branch ``up.i``, MACs saved by reusing its previous output.
        branch_blocks: per branch, the names of the blocks (and smaller branches) inside it, which do
            not run anyway when the branch is reused.
        sample_shape: ``(C, H, W)`` the table was counted at.

    The dictionaries are not copied on access; treat them as read-only.
    """

    full: int
    skip_savings: dict[str, int]
    reuse_savings: dict[str, int]
    branch_blocks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sample_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "full", _as_macs(self.full, "the full evaluation"))
        for attr in ("skip_savings", "reuse_savings"):
            savings = getattr(self, attr)
            if not isinstance(savings, Mapping):
                raise ConfigError(f"{attr} must map block names to MACs, got {type(savings).__name__}")
            checked = {str(name): _as_macs(value, f"block {name!r}") for name, value in savings.items()}
            for name, value in checked.items():
                if value > self.full:
                    raise ConfigError(f"{attr}[{name!r}] = {value} exceeds the full evaluation's {self.full} MACs")
            object.__setattr__(self, attr, checked)
        if not isinstance(self.branch_blocks, Mapping):
            raise ConfigError("branch_blocks must map branch names to lists of block names")
        branches = {str(name): tuple(map(str, inner)) for name, inner in self.branch_blocks.items()}
        unknown = [name for name in branches if name not in self.reuse_savings]
        if unknown:
            raise ConfigError(f"branches {unknown} have no reuse saving")
        object.__setattr__(self, "branch_blocks", branches)
        object.__setattr__(self, "sample_shape", tuple(int(n) for n in self.sample_shape))

    @classmethod
    def for_model(
        cls,
        unet: nn.Module,
        sample_shape: Sequence[int] | None = None,
        *,
        class_labels: bool | int | torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | Sequence[int] | None = None,
    ) -> "MacsTable":
        """Count ``unet`` once (batch 1) and price every block of :func:`find_blocks`.

        A :class:`~optuna_diffusion.blocks.BlockSwitch` may be installed but must choose nothing
        (every block runs); otherwise :class:`ConfigError` is raised.
        """
        blocks = find_blocks(unet)
        active = [
            path for path, module in unet.named_modules()
            if getattr(vars(module).get("forward"), "mode", "run") != "run"  # a BlockSwitch wrapper
        ]
        if active:
            raise ConfigError(f"a block switch skips or reuses {active[0]}; build the MACs table on the full network")
        analysis = macs_analysis(
            unet, sample_shape, class_labels=class_labels, encoder_hidden_states=encoder_hidden_states
        )
        by_module = analysis.by_module()

        def macs(path: str) -> int:
            return _as_macs(by_module.get(_PREFIX + path, 0), f"module {path!r}")

        modules = dict(unet.named_modules())
        skip_savings: dict[str, int] = {}
        reuse_savings: dict[str, int] = {}
        branch_blocks: dict[str, tuple[str, ...]] = {}
        for block in blocks:
            reuse_savings[block.name] = sum(macs(path) for path in block.members)
            if block.kind == "resnet":
                (path,) = block.members
                shortcut = getattr(modules[path], "conv_shortcut", None)
                kept = macs(f"{path}.conv_shortcut") if shortcut is not None else 0
                skip_savings[block.name] = macs(path) - kept
            elif block.kind == "attention":
                skip_savings[block.name] = reuse_savings[block.name]
            else:
                branch_blocks[block.name] = tuple(
                    other.name for other in blocks if other is not block and _inside(other, block)
                )
        return cls(
            full=_as_macs(analysis.total(), "the full evaluation"),
            skip_savings=skip_savings,
            reuse_savings=reuse_savings,
            branch_blocks=branch_blocks,
            sample_shape=_sample_shape(unet, sample_shape),
        )

    @property
    def block_names(self) -> tuple[str, ...]:
        """Every block the table prices."""
        return tuple(self.reuse_savings)

    def step_macs(self, skips: Iterable[str] = (), reuses: Iterable[str] = ()) -> int:
        """MACs of one batch-1 evaluation that skips ``skips`` and reuses ``reuses``.

        Blocks inside a branch reused at the same step are not subtracted again.
        """
        skipped, reused = _names(skips, "skips"), _names(reuses, "reuses")
        for name in sorted(skipped | reused):
            if name not in self.reuse_savings:
                raise PlanError(f"unknown block {name!r}; known blocks: {', '.join(self.reuse_savings)}")
        for name in sorted(skipped):
            if name not in self.skip_savings:
                raise PlanError(f"block {name!r} can only be reused, not skipped")
        if skipped & reused:
            raise PlanError(f"blocks {sorted(skipped & reused)} are both skipped and reused")
        covered = {inner for name in reused if name in self.branch_blocks for inner in self.branch_blocks[name]}
        saved = sum(self.reuse_savings[name] for name in reused - covered)
        saved += sum(self.skip_savings[name] for name in skipped - covered)
        return self.full - saved

    def plan_macs(self, plan: Plan, *, guidance: bool = False) -> int:
        """MACs of sampling with ``plan`` (batch 1): its steps' costs, twice under classifier-free guidance."""
        total = sum(self.step_macs(skipped, reused) for skipped, reused in zip(plan.skips, plan.reuses))
        return total * (2 if guidance else 1)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reads it back."""
        return {
            "format": _TABLE_FORMAT,
            "full": self.full,
            "sample_shape": list(self.sample_shape),
            "skip_savings": dict(self.skip_savings),
            "reuse_savings": dict(self.reuse_savings),
            "branch_blocks": {name: list(inner) for name, inner in self.branch_blocks.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MacsTable":
        if not isinstance(data, Mapping) or data.get("format") != _TABLE_FORMAT:
            raise ConfigError(f"not a MACs table (expected format {_TABLE_FORMAT!r})")
        unknown = set(data) - {"format", "full", "sample_shape", "skip_savings", "reuse_savings", "branch_blocks"}
        if unknown:
            raise ConfigError(f"unknown MACs table fields {sorted(unknown)}")
        missing = {"full", "skip_savings", "reuse_savings"} - set(data)
        if missing:
            raise ConfigError(f"MACs table lacks {sorted(missing)}")
        branch_blocks = data.get("branch_blocks") or {}
        if not isinstance(branch_blocks, Mapping) or any(isinstance(v, (str, bytes)) for v in branch_blocks.values()):
            raise ConfigError("branch_blocks must map branch names to lists of block names")
        return cls(
            full=data["full"],
            skip_savings=data["skip_savings"],
            reuse_savings=data["reuse_savings"],
            branch_blocks=branch_blocks,
            sample_shape=tuple(data.get("sample_shape") or ()),
        )


def _names(names: Iterable[str], what: str) -> frozenset[str]:
    if isinstance(names, (str, bytes)):
        raise PlanError(f"{what} must be a list of block names, got {names!r}")
    return frozenset(names)
