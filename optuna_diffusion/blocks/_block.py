"""The :class:`Block` a plan names, and the checks of a plan's block choices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

from ..errors import PlanError
from ..plan import Plan

BlockKind = Literal["resnet", "attention", "feedforward", "transformer", "branch"]
"""``resnet``/``attention``: UNet residual and attention blocks; ``transformer``: a whole transformer
block; ``attention``/``feedforward``: a sub-layer of one; ``branch``: a UNet branch ``up.i`` or a
transformer tail ``tail.k`` (reuse only)."""


@dataclass(frozen=True)
class Block:
    """One choice the architecture search can make at a step.

    Attributes:
        name: stable name, e.g. ``"down.1.attn.0"``, ``"up.0"``, ``"blocks.7.ff"`` or ``"tail.3"``.
        kind: see :data:`BlockKind` (a ``"branch"`` can only be reused).
        members: dotted module paths that do not run when the block is skipped or reused
            (one path for a single block; disjoint subtrees for a branch or a tail).
    """

    name: str
    kind: BlockKind
    members: tuple[str, ...]

    @property
    def actions(self) -> frozenset[str]:
        return frozenset({"reuse"}) if self.kind == "branch" else frozenset({"skip", "reuse"})


def lies_inside(inner: Block, outer: Block) -> bool:
    """Whether ``inner``'s first member path lies under one of ``outer``'s member paths.

    The containment rule of :func:`check_plan_blocks` and of the architecture sampler: a block inside a
    branch or tail does not run when that branch or tail is reused.
    """
    path = inner.members[0]
    return any(path == member or path.startswith(member + ".") for member in outer.members)


def check_plan_blocks(plan: Plan, blocks: Iterable[Block]) -> None:
    """Raise :class:`PlanError` if ``plan`` names unknown blocks or choices a block does not allow.

    A block may not be chosen at a step where a branch or tail around it is reused (it does not run).
    A sub-layer chosen at a step where its whole transformer block is skipped or reused is allowed and
    moot: the block does not run, so neither does the sub-layer.
    """
    by_name = {block.name: block for block in blocks}
    for step, (skipped, reused) in enumerate(zip(plan.skips, plan.reuses)):
        for name in sorted(skipped | reused):
            if name not in by_name:
                raise PlanError(f"unknown block {name!r} at step {step}; known blocks: {', '.join(by_name)}")
        for name in sorted(skipped):
            if "skip" not in by_name[name].actions:
                raise PlanError(f"block {name!r} can only be reused, not skipped (step {step})")
        branches = [by_name[n] for n in reused if by_name[n].kind == "branch"]
        for branch in branches:
            for name in sorted((skipped | reused) - {branch.name}):
                if lies_inside(by_name[name], branch):
                    raise PlanError(f"block {name!r} lies inside branch {branch.name!r}, reused at step {step}")
