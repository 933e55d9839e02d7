"""The interface every MACs counter offers: one call's MACs, in total and per module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from torch import nn


@dataclass(frozen=True)
class MacsCount:
    """MACs (fused multiply-adds) of one model call.

    Attributes:
        total: MACs of the whole call.
        by_module: per module path of the model (as in ``model.named_modules()``, ``""`` for the model
            itself), the MACs of the ops run while that module was being called, from any caller.
            A submodule called from outside its parent (DiT's final layer calls
            ``transformer_blocks.0.norm1.emb``) counts for itself but not for the parent.
        by_operator: MACs of the whole call per operator (``"conv"``, ``"linear"``, ``"matmul"`` ...).
    """

    total: int
    by_module: Mapping[str, int]
    by_operator: Mapping[str, int]


class MacsCounter(Protocol):
    """Counts the MACs of one call ``model(**inputs)``; honours any installed block switch."""

    def count(self, model: nn.Module, inputs: Mapping[str, Any]) -> MacsCount:
        ...
