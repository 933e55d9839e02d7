"""Stage 2's probes: what each single skip or reuse costs, measured once, to steer the search.

Skipping a block is nearly free at some steps and catastrophic at others (a residual block at the
first or the last step), and a blind search spends most of its budget finding that out again. So
before stage 2, every single change of one *anchor* plan -- one block skipped, or reused, at one
step -- is scored once with few samples and the study's common random numbers (the differences are
precise even where the values are noisy). The search then

* proposes a change with a probability that falls with its measured harm
  (:meth:`Sensitivity.acceptance`: 1 up to :data:`TOLERANCE` relative increase, then inversely), so
  reuse is preferred over skip wherever reuse costs less;
* starts from *stacks*: the least harmful changes per MAC saved, added one by one until a given share
  of the anchor's MACs is saved (:meth:`Sensitivity.stacks`), besides stage 1's front.

Single changes do not add up exactly; the probes steer the search, the search judges the plans.
A plan of another number of steps reads the probes of the anchor's step at the same relative position.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from .blocks import Block, check_plan_blocks
from .errors import PlanError
from .plan import Plan

TOLERANCE = 0.1
"""Relative increase of the fitness value below which a change is proposed as often as without probes."""

STACK_CUTS = (0.1, 0.2, 0.3, 0.4)
"""Shares of the anchor's MACs the stacks of generation 0 save."""

STACK_MAX_HARM = 0.5
"""Changes that alone raise the fitness value by more than this (relative) are left out of the stacks."""


@dataclass(frozen=True)
class Probe:
    """One single change of the anchor plan and what it scored."""

    step: int
    block: str
    action: str  # "skip" or "reuse"
    value: float
    macs_saved: int


@dataclass(frozen=True)
class Sensitivity:
    """The probes of one anchor plan: its value and, per single change, the value with that change."""

    anchor: Plan
    base_value: float
    base_macs: int
    num_samples: int
    probes: tuple[Probe, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_change", {(p.step, p.block, p.action): p for p in self.probes})

    def harm(self, probe: Probe) -> float:
        """The probe's relative increase of the fitness value (inf when its evaluation failed)."""
        if not math.isfinite(probe.value):
            return math.inf
        return (probe.value - self.base_value) / max(abs(self.base_value), 1e-6)

    def anchor_step(self, step: int, num_steps: int) -> int:
        """The anchor's step at the same relative position as ``step`` of a ``num_steps``-step plan."""
        if num_steps <= 1 or self.anchor.num_steps <= 1:
            return 0
        return round(step * (self.anchor.num_steps - 1) / (num_steps - 1))

    def acceptance(self, step: int, num_steps: int, block: str, action: str) -> float:
        """Probability with which the search proposes this change: ``min(1, TOLERANCE / harm)``.

        A change the probes did not measure (reuse mapped onto the anchor's first step) is proposed
        as without probes.
        """
        anchor_step = self.anchor_step(step, num_steps)
        if action == "reuse":
            anchor_step = max(1, anchor_step)
        probe = self._by_change.get((anchor_step, block, action))  # type: ignore[attr-defined]
        if probe is None:
            return 1.0
        harm = self.harm(probe)
        return 1.0 if harm <= TOLERANCE else TOLERANCE / harm

    def stacks(self, blocks: Sequence[Block], macs_of: Callable[[Plan], int], cuts: Sequence[float] = STACK_CUTS) -> list[Plan]:
        """Plans of the anchor's time steps that save each share of ``cuts`` of its MACs, or as much as they can.

        Changes of at most :data:`STACK_MAX_HARM` are added least harm per MAC saved first (the
        harmless ones, largest saving first), each only if the plan stays valid and cheaper.
        """
        usable = [p for p in self.probes if self.harm(p) <= STACK_MAX_HARM and p.macs_saved > 0]
        usable.sort(key=lambda p: (max(self.harm(p), 0.0) / p.macs_saved, -p.macs_saved))
        plans: list[Plan] = []
        for cut in sorted(cuts):
            chosen: list[Probe] = []
            plan, macs = self.anchor, self.base_macs
            for probe in usable:
                if macs <= (1 - cut) * self.base_macs:
                    break
                try:
                    candidate = _with_changes(self.anchor, [*chosen, probe])
                    check_plan_blocks(candidate, blocks)
                except PlanError:
                    continue  # overlaps a change already made (the same block, its sub-layer or its branch)
                candidate_macs = macs_of(candidate)
                if candidate_macs < macs:
                    chosen, plan, macs = [*chosen, probe], candidate, candidate_macs
            if plan != self.anchor and plan not in plans:
                plans.append(plan)
        return plans

    def to_dict(self) -> dict[str, Any]:
        return {
            "anchor": self.anchor.to_dict(),
            "base_value": self.base_value,
            "base_macs": self.base_macs,
            "num_samples": self.num_samples,
            "probes": [list(dataclasses.astuple(p)) for p in self.probes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Sensitivity":
        return cls(
            anchor=Plan.from_dict(data["anchor"]),
            base_value=float(data["base_value"]),
            base_macs=int(data["base_macs"]),
            num_samples=int(data["num_samples"]),
            probes=tuple(Probe(int(s), str(b), str(a), float(v), int(m)) for s, b, a, v, m in data["probes"]),
        )


def _with_changes(anchor: Plan, changes: Sequence[Probe]) -> Plan:
    skips: list[set[str]] = [set() for _ in anchor.timesteps]
    reuses: list[set[str]] = [set() for _ in anchor.timesteps]
    for change in changes:
        (skips if change.action == "skip" else reuses)[change.step].add(change.block)
    return anchor.with_blocks(skips, reuses)


def single_changes(anchor: Plan, blocks: Sequence[Block]) -> list[tuple[int, str, str]]:
    """Every (step, block, action) one change of ``anchor`` can make; reuse never at the first step."""
    return [
        (step, block.name, action)
        for block in blocks
        for action in sorted(block.actions)
        for step in range(anchor.num_steps)
        if not (action == "reuse" and step == 0)
    ]


def probe_sensitivity(evaluator: Any, anchor: Plan, num_samples: int) -> Sensitivity:
    """Score ``anchor`` and each of its single changes with ``num_samples`` samples of ``evaluator``.

    ``evaluator`` is a :class:`~optuna_diffusion.evaluation.PlanEvaluator` (its fitness metric, its
    seeded noise, its MACs table); a failed evaluation scores ``inf`` and is never proposed.
    """
    blocks = evaluator.generator.switch.blocks
    base = evaluator.evaluate(anchor, num_samples)
    probes = []
    for step, block, action in single_changes(anchor, blocks):
        plan = _with_changes(anchor, [Probe(step, block, action, 0.0, 0)])
        result = evaluator.evaluate(plan, num_samples)
        probes.append(Probe(step, block, action, result.fid if result.ok else math.inf, base.macs - result.macs))
    return Sensitivity(anchor, base.fid, base.macs, num_samples, tuple(probes))


def anchor_plan(study: optuna.Study, plan_of: Callable[[optuna.trial.FrozenTrial], Plan | None]) -> Plan | None:
    """The stage-1 plan to probe: of the Pareto plans near the best value, the one of fewest steps.

    Few steps is where a skip costs most and stage 2 matters most; "near" keeps the anchor a plan worth
    compressing: at most twice the best value (FID), or for a negated score (-PSNR to a teacher, in dB)
    at most 10% of it above (3 dB at 30 dB: twice the squared error). Ties: the lower value. None when
    the study has no complete plan.
    """
    scored = [
        (trial.values[0], plan)
        for trial in study.best_trials
        if trial.values and all(math.isfinite(v) for v in trial.values) and (plan := plan_of(trial)) is not None
    ]
    if not scored:
        return None
    best = min(value for value, _ in scored)
    limit = 2 * best if best > 0 else best + 0.1 * abs(best)
    candidates = [(plan.num_steps, value, plan) for value, plan in scored if value <= limit]
    return min(candidates, key=lambda c: (c[0], c[1]))[2]
