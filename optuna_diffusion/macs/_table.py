"""The per-block MACs table: what a full evaluation costs and what each block's skip or reuse saves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..blocks import Block, find_blocks, installed_switch
from ..errors import ConfigError, PlanError
from ..plan import Plan
from ._denoiser_call import call_inputs
from ._counter_protocol import MacsCounter
from ._fvcore import FvcoreCounter, as_macs
from ._inputs import TextContext, main_input_name

_TABLE_FORMAT = "optuna-diffusion macs table v1"


def _inside(inner: Block, outer: Block) -> bool:
    """True when every module of ``inner`` lies in one of ``outer``'s member subtrees."""
    return all(any(p == m or p.startswith(m + ".") for m in outer.members) for p in inner.members)


def _inner_blocks(block: Block, blocks: Sequence[Block]) -> tuple[str, ...]:
    return tuple(other.name for other in blocks if other is not block and _inside(other, block))


@dataclass(frozen=True)
class MacsTable:
    """MACs of a full evaluation (batch 1) and what each block saves when skipped or reused.

    Attributes:
        full: MACs of one full evaluation.
        skip_savings: per skippable block, MACs saved by skipping it. A UNet residual block still runs
            its 1x1 ``conv_shortcut`` when it has one; every other block saves all its MACs (a skipped
            transformer sub-layer returns zeros, a skipped transformer block its input).
        reuse_savings: per block, branch ``up.i`` or tail ``tail.k``, MACs saved by reusing its previous
            output (or residual): all the MACs of its modules.
        branch_blocks: per block that contains others (a branch, a tail, a whole transformer block),
            the names of the blocks inside it, which do not run anyway when it is skipped or reused.
        sample_shape: one sample's shape the table was counted at (``(C, H, W)``; Flux ``(tokens, C)``).

    The dictionaries are not copied on access; treat them as read-only.
    """

    full: int
    skip_savings: dict[str, int]
    reuse_savings: dict[str, int]
    branch_blocks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sample_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "full", as_macs(self.full, "the full evaluation"))
        for attr in ("skip_savings", "reuse_savings"):
            savings = getattr(self, attr)
            if not isinstance(savings, Mapping):
                raise ConfigError(f"{attr} must map block names to MACs, got {type(savings).__name__}")
            checked = {str(name): as_macs(value, f"block {name!r}") for name, value in savings.items()}
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
        model: nn.Module,
        sample_shape: Sequence[int] | None = None,
        *,
        class_labels: bool | int | torch.Tensor | None = None,
        encoder_hidden_states: TextContext = None,
        text_length: int | None = None,
        inputs: Mapping[str, Any] | None = None,
        counter: MacsCounter | None = None,
    ) -> "MacsTable":
        """Count ``model`` once (batch 1) and price every block of :func:`~optuna_diffusion.blocks.find_blocks`.

        Args:
            model: a diffusers UNet or transformer denoiser. A
                :class:`~optuna_diffusion.blocks.BlockSwitch` may be installed but must choose nothing
                (every block runs); otherwise :class:`ConfigError` is raised.
            sample_shape, class_labels, encoder_hidden_states, text_length: see
                :func:`~optuna_diffusion.macs.example_inputs`.
            inputs: instead, the call's keyword arguments (batch 1).
            counter: the :class:`~optuna_diffusion.macs.MacsCounter` (default fvcore's).
        """
        blocks = find_blocks(model)
        switch = installed_switch(model)
        active = switch.active_paths() if switch is not None else []
        if active:
            raise ConfigError(f"a block switch skips or reuses {active[0]}; build the MACs table on the full network")
        kwargs = call_inputs(
            model, sample_shape, inputs,
            class_labels=class_labels, encoder_hidden_states=encoder_hidden_states, text_length=text_length,
        )
        count = (counter or FvcoreCounter()).count(model, kwargs)

        def macs(path: str) -> int:
            return as_macs(count.by_module.get(path, 0), f"module {path!r}")

        modules = dict(model.named_modules())
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
            elif block.kind != "branch":
                skip_savings[block.name] = reuse_savings[block.name]
            if block.kind in ("branch", "transformer"):
                branch_blocks[block.name] = _inner_blocks(block, blocks)
        main = kwargs.get(main_input_name(model))
        return cls(
            full=as_macs(count.total, "the full evaluation"),
            skip_savings=skip_savings,
            reuse_savings=reuse_savings,
            branch_blocks=branch_blocks,
            sample_shape=tuple(main.shape[1:]) if isinstance(main, torch.Tensor) else (),
        )

    @property
    def block_names(self) -> tuple[str, ...]:
        """Every block the table prices."""
        return tuple(self.reuse_savings)

    def step_macs(self, skips: Iterable[str] = (), reuses: Iterable[str] = ()) -> int:
        """MACs of one batch-1 evaluation that skips ``skips`` and reuses ``reuses``.

        Blocks inside a branch, tail or transformer block skipped or reused at the same step are not
        subtracted again.
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
        chosen = skipped | reused
        covered = {inner for name in chosen if name in self.branch_blocks for inner in self.branch_blocks[name]}
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
