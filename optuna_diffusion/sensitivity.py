"""Stage 2's probes: what each single skip or reuse costs, measured once, to steer the search.

Skipping a block is nearly free at some steps and catastrophic at others (a residual block at the
first or the last step), and a blind search spends most of its budget finding that out again. So
before stage 2, every single change of one *anchor* plan -- one block skipped, or reused, at one
step -- is scored once (``[architecture] probe_samples`` samples) with the study's common random
numbers, so the differences are precise even where the values are noisy. The search then

* proposes a change with a probability that falls with its measured harm
  (:meth:`Sensitivity.acceptance`: 1 up to :data:`TOLERANCE` relative increase, then with the square
  of its inverse), so reuse is preferred over skip wherever reuse costs less;
* starts from *stacks*, besides stage 1's front: probed changes combined by a greedy path, each round
  adding the change that costs least per MAC saved *in combination*, then polished with the stage's
  own sample count (:func:`probe_sensitivity`; single changes do not add up, so every combination
  is evaluated).

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

STACK_CUTS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
"""Shares of the anchor's MACs the stacks of generation 0 save: one every 5%, so that the polish of
each (which must keep its share) can reach the plans between two."""

CANDIDATE_HARM = 0.3
"""Single changes the stacks may combine: those that alone raise the anchor's value by at most this share."""

MAX_CANDIDATES = 40
"""At most this many of them, least harm per MAC saved first."""


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
    stacks: tuple[Plan, ...] = ()
    """Combinations of probed changes, each verified by an evaluation (:func:`probe_sensitivity`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_change", {(p.step, p.block, p.action): p for p in self.probes})

    def harm(self, probe: Probe) -> float:
        """The probe's relative increase of the fitness value (inf when its evaluation failed)."""
        return self.harm_of(probe.value)

    def anchor_step(self, step: int, num_steps: int) -> int:
        """The anchor's step at the same relative position as ``step`` of a ``num_steps``-step plan."""
        if num_steps <= 1 or self.anchor.num_steps <= 1:
            return 0
        return round(step * (self.anchor.num_steps - 1) / (num_steps - 1))

    def acceptance(self, step: int, num_steps: int, block: str, action: str) -> float:
        """Probability with which the search proposes this change: ``min(1, (TOLERANCE / harm) ** 2)``.

        Squared, because a mutant makes several changes at once: a change that doubles the value is
        proposed once in a hundred draws, one that adds 20% a quarter of the time.

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
        return 1.0 if harm <= TOLERANCE else (TOLERANCE / harm) ** 2

    def harm_of(self, value: float) -> float:
        """Relative increase of ``value`` over the anchor's (inf for a failed evaluation)."""
        return math.inf if not math.isfinite(value) else (value - self.base_value) / max(abs(self.base_value), 1e-6)

    def to_dict(self) -> dict[str, Any]:
        return {
            "anchor": self.anchor.to_dict(),
            "base_value": self.base_value,
            "base_macs": self.base_macs,
            "num_samples": self.num_samples,
            "probes": [list(dataclasses.astuple(p)) for p in self.probes],
            "stacks": [plan.to_dict() for plan in self.stacks],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Sensitivity":
        return cls(
            anchor=Plan.from_dict(data["anchor"]),
            base_value=float(data["base_value"]),
            base_macs=int(data["base_macs"]),
            num_samples=int(data["num_samples"]),
            probes=tuple(Probe(int(s), str(b), str(a), float(v), int(m)) for s, b, a, v, m in data["probes"]),
            stacks=tuple(Plan.from_dict(plan) for plan in data.get("stacks", ())),
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


def probe_sensitivity(
    evaluator: Any, anchor: Plan, num_samples: int, cuts: Sequence[float] = STACK_CUTS, *, polish_samples: int | None = None
) -> Sensitivity:
    """Score ``anchor`` and each of its single changes with ``num_samples`` samples of ``evaluator``, then stack them.

    ``evaluator`` is a :class:`~optuna_diffusion.evaluation.PlanEvaluator` (its fitness metric, its
    seeded noise, its MACs table); a failed evaluation scores ``inf`` and is never proposed.

    Single changes do not add up, so the stacks are built by evaluation, on a greedy path: starting
    from the anchor, each round adds the change whose combined plan raises the value least per MAC
    saved (helpful changes first: their increase is negative), until ``max(cuts)`` of the anchor's
    MACs is saved or the path's value would exceed the anchor's by more than :data:`CANDIDATE_HARM`.
    Candidates are the changes that alone cost at most :data:`CANDIDATE_HARM` (at most
    :data:`MAX_CANDIDATES`). The greedy is lazy: each round evaluates candidates in the order of their
    last measured cost and stops once the best beats every figure still queued. The stacks: the
    path's plan of lowest value, and its plan where each share of ``cuts`` is first saved, each then
    *polished* with ``polish_samples`` (default ``num_samples``; the stage's own sample count, where
    its FID differences are precise): changes are dropped, the one that lowers the value most first,
    while the value falls and the share of MACs saved holds. A greedy path overshoots on the noise of
    small samples; a change or two dropped takes most of that back.
    """
    blocks = evaluator.generator.switch.blocks
    base = evaluator.evaluate(anchor, num_samples)
    probes = []
    for step, block, action in single_changes(anchor, blocks):
        plan = _with_changes(anchor, [Probe(step, block, action, 0.0, 0)])
        result = evaluator.evaluate(plan, num_samples)
        probes.append(Probe(step, block, action, result.fid if result.ok else math.inf, base.macs - result.macs))
    table = Sensitivity(anchor, base.fid, base.macs, num_samples, tuple(probes))
    stacks = _stacks(table, evaluator, cuts, polish_samples or num_samples)
    return dataclasses.replace(table, stacks=tuple(stacks))


def _stacks(table: Sensitivity, evaluator: Any, cuts: Sequence[float], polish_samples: int) -> list[Plan]:
    """The stacks of :func:`probe_sensitivity`, distinct and other than the anchor."""
    blocks = evaluator.generator.switch.blocks
    candidates = [p for p in table.probes if table.harm(p) <= CANDIDATE_HARM and p.macs_saved > 0]
    candidates = sorted(candidates, key=lambda p: table.harm(p) / p.macs_saved)[:MAX_CANDIDATES]
    # Lazy greedy: a candidate queues at its last measured increase per MAC saved (at first its
    # probe's). A change rarely gets cheaper as others join it, so once the best one measured in a
    # round beats every queued figure, the round is decided without evaluating the rest.
    queued = {probe: (probe.value - table.base_value) / probe.macs_saved for probe in candidates}
    targets = sorted(cuts)
    chosen: list[Probe] = []
    plan, value, macs = table.anchor, table.base_value, table.base_macs
    lowest = (plan, value)  # the path's plan of lowest value
    stacks: list[tuple[float, list[Probe]]] = []  # (share of ``cuts``, the path's changes when first saved)
    while targets and macs > (1 - targets[-1]) * table.base_macs:
        best = None  # (increase per MAC saved, probe, plan, value, MACs)
        for probe in sorted(queued, key=queued.__getitem__):
            if best is not None and best[0] <= queued[probe]:
                break
            try:
                candidate = _with_changes(table.anchor, [*chosen, probe])
                check_plan_blocks(candidate, blocks)
            except PlanError:
                del queued[probe]  # overlaps a change already made (the same block, its sub-layer or its branch)
                continue
            candidate_macs = evaluator.macs(candidate)
            result = evaluator.evaluate(candidate, table.num_samples) if candidate_macs < macs else None
            if result is None or not result.ok:
                del queued[probe]
                continue
            queued[probe] = (result.fid - value) / (macs - candidate_macs)
            if best is None or queued[probe] < best[0]:
                best = (queued[probe], probe, candidate, result.fid, candidate_macs)
        if best is None or table.harm_of(best[3]) > CANDIDATE_HARM:
            break  # nothing left, or the cheapest way on costs more than any candidate alone may
        _, probe, plan, value, macs = best
        del queued[probe]
        chosen.append(probe)
        if value < lowest[1]:
            lowest = (plan, value)
        while targets and macs <= (1 - targets[0]) * table.base_macs:
            stacks.append((targets.pop(0), list(chosen)))
    polished = [_polish(table, evaluator, changes, cut, polish_samples) for cut, changes in stacks]
    return list(dict.fromkeys(p for p in [lowest[0], *polished] if p != table.anchor))


def _polish(table: Sensitivity, evaluator: Any, changes: list[Probe], cut: float, num_samples: int) -> Plan:
    """The plan of ``changes``, with changes dropped while that lowers its value and ``cut`` of the MACs stays saved."""
    plan = _with_changes(table.anchor, changes)
    result = evaluator.evaluate(plan, num_samples)
    value = result.fid if result.ok else math.inf
    while True:
        best = None  # (value, changes, plan)
        for change in changes:
            rest = [c for c in changes if c != change]
            candidate = _with_changes(table.anchor, rest)
            if evaluator.macs(candidate) > (1 - cut) * table.base_macs:
                continue
            result = evaluator.evaluate(candidate, num_samples)
            if result.ok and result.fid < value and (best is None or result.fid < best[0]):
                best = (result.fid, rest, candidate)
        if best is None:
            return plan
        value, changes, plan = best


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
