"""fvcore's ``FlopCountAnalysis`` of one traced denoiser call: the project's MACs counter.

fvcore counts one fused multiply-add as one flop, so its numbers are MACs. Its default handles count
convolutions, linear layers and matrix products, plus the norms it knows (group/layer/batch/instance)
and up-sampling; pointwise ops (add, mul, silu, gelu, softmax, ...) and ``aten::rms_norm`` stay
uncounted, as fvcore leaves them. Three handles are set here:

* ``aten::scaled_dot_product_attention`` (diffusers' default attention), which fvcore counts as zero:
  ``B * heads * Lq * Lk * d`` for ``Q @ K^T`` plus ``B * heads * Lq * Lk * d_v`` for ``attn @ V``;
* ``aten::baddbmm`` (the classic ``AttnProcessor``'s ``Q @ K^T``), counted like ``bmm``, so a model
  counts the same whatever attention processor it runs;
* ``aten::einsum`` with one operand (DiT, SD3 and PixArt unpatchify with ``einsum("nhwpqc->nchpwq")``):
  a permutation or a sum, zero MACs (fvcore's handle prices it as a contraction); einsums of two or
  more operands keep fvcore's count.

Under the ``"linear-conv"`` convention (:mod:`optuna_diffusion.macs._convention`) the linear and
convolution handles also count one MAC per output element for a bias, as thop does, and
:class:`FvcoreCounter` keeps those two operators only.

The count follows eager execution: the JIT tracer would drop work whose result is discarded (the
input of a reused block, computed and then ignored), so every module input of the traced call is
kept as an extra output. Per-module MACs are fvcore's "caller" attribution: the ops run while a
module is being called (see :class:`~optuna_diffusion.macs.MacsCount`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ..compat_torch import computed_in_trace as _computed_in_trace  # torch._C._get_value_trace, fenced
from ..errors import ConfigError
from ._convention import DEFAULT_MACS_CONVENTION, check_macs_convention, counts_fvcore_operator
from ._counter_protocol import MacsCount


def _shape(value: Any) -> list[int]:
    from fvcore.nn.jit_handles import get_shape  # fvcore.nn is imported (quietly) by fvcore_analysis

    shape = get_shape(value)
    if shape is None:
        raise ConfigError("fvcore could not read a tensor shape in the traced model; trace with concrete inputs")
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


def _einsum_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """``einsum(equation, operands)``: zero for one operand (no products), fvcore's count otherwise."""
    from fvcore.nn.jit_handles import einsum_flop_jit

    equation = str(inputs[0].toIValue()).replace(" ", "")
    if "," not in equation.split("->")[0]:
        return 0
    return int(einsum_flop_jit(inputs, outputs))


EXTRA_HANDLES = {
    "aten::scaled_dot_product_attention": _sdpa_macs,
    "aten::baddbmm": _baddbmm_macs,
    "aten::einsum": _einsum_macs,
}


def _bias_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """One MAC per output element when the layer has a bias (``inputs[2]``, None for none), as thop counts."""
    from fvcore.nn.jit_handles import get_shape

    return math.prod(_shape(outputs[0])) if get_shape(inputs[2]) is not None else 0


def _linear_with_bias_macs(inputs: list[Any], outputs: list[Any]) -> Any:
    """``linear(input, weight, bias)``: fvcore's count plus the bias term."""
    from collections import Counter

    from fvcore.nn.jit_handles import linear_flop_jit

    return Counter({"linear": int(linear_flop_jit(inputs, outputs)) + _bias_macs(inputs, outputs)})


def _conv_with_bias_macs(inputs: list[Any], outputs: list[Any]) -> Any:
    """``_convolution(input, weight, bias, ...)``: fvcore's count plus the bias term."""
    from collections import Counter

    from fvcore.nn.jit_handles import conv_flop_jit

    return Counter({"conv": int(conv_flop_jit(inputs, outputs)["conv"]) + _bias_macs(inputs, outputs)})


def _handles(convention: str) -> dict[str, Any]:
    """The op handles set on fvcore's defaults under ``convention``: linear-conv adds the layers' bias terms
    (the operators it does not count are dropped from the result, :func:`counts_fvcore_operator`)."""
    if convention == "linear-conv":
        return {**EXTRA_HANDLES, "aten::linear": _linear_with_bias_macs, "aten::_convolution": _conv_with_bias_macs}
    return dict(EXTRA_HANDLES)


# --------------------------------------------------------------------------------------------------
# Tracing one call
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    """Where a tensor of the flat traced inputs goes back into the keyword arguments."""

    index: int


def _flatten(value: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        tensors.append(value)
        return _Slot(len(tensors) - 1)
    if isinstance(value, dict):
        return {key: _flatten(item, tensors) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_flatten(item, tensors) for item in value)
    return value


def _unflatten(structure: Any, tensors: tuple[torch.Tensor, ...]) -> Any:
    if isinstance(structure, _Slot):
        return tensors[structure.index]
    if isinstance(structure, dict):
        return {key: _unflatten(item, tensors) for key, item in structure.items()}
    if isinstance(structure, (list, tuple)):
        return type(structure)(_unflatten(item, tensors) for item in structure)
    return structure


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    return []


def model_prefix(model: nn.Module) -> str:
    """``"unet"`` for UNets, ``"transformer"`` otherwise: the traced name of the model, as a pipeline names it."""
    return "unet" if hasattr(model, "down_blocks") and hasattr(model, "up_blocks") else "transformer"


class _ModelCall(nn.Module):
    """``model(**inputs)`` taking its tensors as positional arguments, for JIT tracing."""

    def __init__(self, model: nn.Module, structure: Mapping[str, Any]) -> None:
        super().__init__()
        self.prefix = model_prefix(model)
        self.add_module(self.prefix, model)  # traced module paths read "<prefix>.<path in the model>"
        self.structure = structure

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kwargs = _unflatten(dict(self.structure), tensors)
        model = getattr(self, self.prefix)
        # The tracer drops ops whose results reach no output. Eager PyTorch runs them anyway (the
        # input of a reused block is computed, then ignored), so every module input is an output too.
        consumed: dict[int, torch.Tensor] = {}

        def keep_inputs(module: nn.Module, args: tuple, module_kwargs: dict) -> None:
            for tensor in _tensors((args, module_kwargs)):
                if _computed_in_trace(tensor):
                    consumed.setdefault(id(tensor), tensor)

        modules = list(model.modules()) if torch.jit.is_tracing() else []
        handles = [m.register_forward_pre_hook(keep_inputs, with_kwargs=True) for m in modules]
        try:
            output = model(**kwargs, return_dict=False)[0]
        finally:
            for handle in handles:
                handle.remove()
        return (output, *consumed.values())


def fvcore_analysis(model: nn.Module, inputs: Mapping[str, Any], convention: str = DEFAULT_MACS_CONVENTION) -> Any:
    """fvcore's ``FlopCountAnalysis`` of ``model(**inputs)`` with this module's handles, traced now.

    Module names in its ``by_module()`` read ``"<prefix>.<module path>"`` (see :func:`model_prefix`),
    attributed in fvcore's ``"caller"`` ancestor mode. Under ``convention`` ``"linear-conv"`` the linear
    and conv handles add their bias terms; every other operator is still counted (filter with
    :func:`~optuna_diffusion.macs._convention.counts_fvcore_operator`).
    """
    with warnings.catch_warnings():
        # fvcore.nn's import scripts a loss with torch.jit.script, which torch deprecates (a FutureWarning
        # since torch 2.14): fvcore's doing, nothing the user can act on.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    tensors: list[torch.Tensor] = []
    structure = _flatten(dict(inputs), tensors)
    analysis = FlopCountAnalysis(_ModelCall(model, structure), tuple(tensors))
    for name, handle in _handles(check_macs_convention(convention)).items():
        analysis.set_op_handle(name, handle)
    analysis.ancestor_mode("caller")
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    # Run the lazy trace now, without fvcore's or the tracer's warnings.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        analysis.total()
    return analysis


def as_macs(value: Any, what: str) -> int:
    """``value`` as a non-negative integer number of MACs, or :class:`ConfigError`."""
    from numbers import Real

    if isinstance(value, bool) or not isinstance(value, Real) or value != int(value) or value < 0:
        raise ConfigError(f"MACs of {what} must be a non-negative integer, got {value!r}")
    return int(value)


class FvcoreCounter:
    """The project's :class:`~optuna_diffusion.macs.MacsCounter`: fvcore on one JIT-traced call.

    Args:
        convention: what counts (:data:`~optuna_diffusion.macs.MACS_CONVENTIONS`): ``"full"`` (default),
            every operator above; ``"linear-conv"``, only convolutions and linear layers with their bias
            terms, in total, per module and per operator alike.
    """

    def __init__(self, convention: str = DEFAULT_MACS_CONVENTION) -> None:
        self.convention = check_macs_convention(convention)

    def count(self, model: nn.Module, inputs: Mapping[str, Any]) -> MacsCount:
        analysis = fvcore_analysis(model, inputs, self.convention)
        prefix = model_prefix(model)

        def counted(operators: Mapping[str, Any], where: str) -> dict[str, int]:
            return {
                op: as_macs(value, f"operator {op!r} of {where}")
                for op, value in operators.items()
                if counts_fvcore_operator(self.convention, op)
            }

        by_module: dict[str, int] = {}
        for name, operators in analysis.by_module_and_operator().items():
            if name == prefix or name.startswith(prefix + "."):
                by_module[name[len(prefix) + 1 :]] = sum(counted(operators, f"module {name!r}").values())
        by_operator = counted(analysis.by_operator(), "the call")
        return MacsCount(total=sum(by_operator.values()), by_module=by_module, by_operator=by_operator)
