"""Genomes of the joint search (AutoDiffusion stage 2): plans, the measures on them, and their space.

A genome is a whole :class:`~optuna_diffusion.plan.Plan`: K time steps and, per step, a choice for
every block of :func:`~optuna_diffusion.blocks.find_blocks` -- run it (the default), skip it, or
reuse its output of the previous step. Every operator builds a valid plan by construction:

* reuse is never chosen at step 0 (there is no previous output);
* a branch block (``"up.0"`` ...) is only ever reused, never skipped;
* choosing to reuse a branch at a step drops that step's choices for the blocks inside it (they do
  not run anyway), and blocks inside a branch reused at a step are not offered at that step;
* the plan stays within the allowed *skip ratio* (below): extra choices are dropped at random.

So :func:`~optuna_diffusion.blocks.check_plan_blocks` always passes and no operator loops. The
operators live in :mod:`._architecture_mutation` and :mod:`._architecture_crossover`; they build
plans from the building blocks of :class:`ArchitectureSpace`, and :mod:`._bound_architecture_space`
binds them to one generation (imports run one way: space, operators, bound space).

Skip ratio: a (step, block) pair is *not run* when the block is skipped or reused at that step, or
lies inside a branch reused at that step. The ratio of a plan is its not-run pairs over
``K * len(blocks)``; a plan may have at most ``floor(max_ratio * K * len(blocks))`` of them.

Notation: ``K`` number of steps, ``B`` number of blocks, a *choice* is ``"skip"`` or ``"reuse"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..blocks import Block, check_plan_blocks
from ..errors import ConfigError, PlanError
from ..plan import Plan
from ..sensitivity import Sensitivity
from ._timestep_space import TimestepSpace

Choices = dict[str, str]
"""One step's explicit choices: block name -> ``"skip"`` or ``"reuse"`` (absent: the block runs)."""


def _inside(inner: Block, branch: Block) -> bool:
    """Whether ``inner`` lies in one of ``branch``'s member subtrees (the rule of ``check_plan_blocks``)."""
    path = inner.members[0]
    return any(path == member or path.startswith(member + ".") for member in branch.members)


def check_blocks(blocks: object) -> tuple[Block, ...]:
    """``blocks`` as a tuple, or :class:`ConfigError`: a non-empty list of :class:`Block` of distinct names."""
    if isinstance(blocks, (str, bytes, Block)) or not isinstance(blocks, Sequence):
        raise ConfigError("`blocks` must be a list of Block (from find_blocks(unet))")
    blocks = tuple(blocks)
    if not blocks or not all(isinstance(block, Block) for block in blocks):
        raise ConfigError("`blocks` must be a non-empty list of Block (from find_blocks(unet))")
    names = [block.name for block in blocks]
    if len(set(names)) != len(names):
        raise ConfigError(f"`blocks` names {sorted({n for n in names if names.count(n) > 1})} more than once")
    return blocks


class ArchitectureSpace:
    """The plans of a joint search: time steps of ``timestep_space`` and per-step block choices.

    Binds the operators of this module to one set of blocks and one time-step space.

    Args:
        blocks: the searchable blocks (from :func:`~optuna_diffusion.blocks.find_blocks`).
        timestep_space: the allowed time steps (T and the range of K).
        sensitivity: measured single changes; a change is then proposed with its
            :meth:`~optuna_diffusion.sensitivity.Sensitivity.acceptance` (None: every change alike).
    """

    def __init__(
        self, *, blocks: Sequence[Block], timestep_space: TimestepSpace, sensitivity: Sensitivity | None = None
    ) -> None:
        blocks = check_blocks(blocks)
        self.sensitivity = sensitivity
        names = [block.name for block in blocks]
        self.blocks = blocks
        self.timestep_space = timestep_space
        self.names = tuple(names)
        self._by_name = {block.name: block for block in blocks}
        self._covered = {
            branch.name: frozenset(other.name for other in blocks if other is not branch and _inside(other, branch))
            for branch in blocks
            if branch.kind == "branch"
        }
        # The smallest branch around each block inside one. Reusing a block throws away what the
        # branch computed below it; reusing the branch does not compute that at all.
        self.branch_around = {
            name: min((b for b, inside in self._covered.items() if name in inside), key=lambda b: len(self._covered[b]))
            for name in names
            if any(name in inside for inside in self._covered.values())
        }

    def __str__(self) -> str:
        space = self.timestep_space
        steps = f"{space.k_min}..{space.k_max} of {space.num_train_timesteps} time steps"
        return f"plans of {steps} over {len(self.blocks)} blocks"

    def to_dict(self) -> dict:
        """The space as stored on every trial: the time-step space, the searched blocks and the
        blocks inside each branch (:data:`~optuna_diffusion.trial_plan.SPACE_KEY`)."""
        branches = {name: sorted(inside) for name, inside in self._covered.items()}
        return {**self.timestep_space.to_dict(), "blocks": list(self.names), "branches": branches}

    # Measures --------------------------------------------------------------------------------------

    def covered_at(self, choices: Choices) -> frozenset[str]:
        """Blocks that do not run at a step because a branch around them is reused."""
        reused = [name for name, choice in choices.items() if choice == "reuse" and name in self._covered]
        return frozenset().union(*(self._covered[name] for name in reused))

    def step_not_run(self, choices: Choices) -> int:
        return len(set(choices) | self.covered_at(choices))

    def not_run(self, plan: Plan) -> int:
        """The plan's (step, block) pairs that do not run: skipped, reused, or inside a reused branch."""
        return sum(self.step_not_run(choices) for choices in self.choices(plan))

    def skip_ratio(self, plan: Plan) -> float:
        """:meth:`not_run` over ``K * len(blocks)``."""
        return self.not_run(plan) / (plan.num_steps * len(self.blocks))

    def budget(self, num_steps: int, max_ratio: float) -> int:
        """Most not-run pairs a plan of ``num_steps`` steps may have under ``max_ratio``."""
        return math.floor(max_ratio * num_steps * len(self.blocks) + 1e-9)

    def contains(self, plan: object) -> bool:
        """Whether ``plan`` is a plan of this space (ratio aside), without raising."""
        if not isinstance(plan, Plan):
            return False
        space = self.timestep_space
        if plan.num_train_timesteps != space.num_train_timesteps or not space.k_min <= plan.num_steps <= space.k_max:
            return False
        try:
            self.check(plan)
        except PlanError:
            return False
        return True

    def check(self, plan: Plan) -> None:
        """Raise :class:`PlanError` if ``plan`` names unknown blocks or choices they do not allow."""
        check_plan_blocks(plan, self.blocks)

    # Building blocks -------------------------------------------------------------------------------

    @staticmethod
    def choices(plan: Plan) -> list[Choices]:
        return [
            {**{name: "skip" for name in skipped}, **{name: "reuse" for name in reused}}
            for skipped, reused in zip(plan.skips, plan.reuses)
        ]

    def _allowed(self, name: str, step: int) -> tuple[str, ...]:
        actions = tuple(action for action in ("skip", "reuse") if action in self._by_name[name].actions)
        return actions if step > 0 else tuple(a for a in actions if a != "reuse")

    def normalised_step(self, choices: Choices, step: int) -> Choices:
        """Drop reuse at step 0 and the choices of blocks inside a branch reused at this step."""
        if step == 0:
            choices = {name: choice for name, choice in choices.items() if choice != "reuse"}
        covered = self.covered_at(choices)
        return {name: choice for name, choice in choices.items() if name not in covered}

    def plan_of(self, timesteps: Sequence[int], steps: Sequence[Choices], solver: str | None = None) -> Plan:
        """The plan of ``timesteps`` with per-step block ``steps`` (normalised), run by ``solver``."""
        steps = [self.normalised_step(choices, i) for i, choices in enumerate(steps)]
        skips = [sorted(n for n, c in choices.items() if c == "skip") for choices in steps]
        reuses = [sorted(n for n, c in choices.items() if c == "reuse") for choices in steps]
        space = self.timestep_space
        return Plan(
            tuple(timesteps), skips, reuses, space.num_train_timesteps, schedule_kind=space.schedule_kind, solver=solver
        )

    def add_choice(self, steps: list[Choices], step: int, name: str, rng: np.random.Generator) -> bool:
        """Choose a random allowed action for a running block at ``step``; False when none applies.

        With probes, the action drawn is kept with its acceptance (False otherwise): a change measured
        to be harmful is rarely proposed."""
        choices = steps[step]
        if name in choices or name in self.covered_at(choices):
            return False
        actions = self._allowed(name, step)
        if not actions:
            return False
        action = actions[int(rng.integers(len(actions)))]
        if self.sensitivity is not None and rng.random() >= self.sensitivity.acceptance(step, len(steps), name, action):
            return False
        steps[step] = self.normalised_step({**choices, name: action}, step)
        return True

    def trim(self, steps: list[Choices], max_ratio: float, rng: np.random.Generator) -> None:
        """Drop random explicit choices until the plan fits the ratio (each drop lowers the count)."""
        budget = self.budget(len(steps), max_ratio)
        count = sum(self.step_not_run(choices) for choices in steps)
        while count > budget:
            explicit = [(i, name) for i, choices in enumerate(steps) for name in sorted(choices)]
            i, name = explicit[int(rng.integers(len(explicit)))]
            before = self.step_not_run(steps[i])
            steps[i] = {n: c for n, c in steps[i].items() if n != name}
            count += self.step_not_run(steps[i]) - before

    def _fill(self, steps: list[Choices], target: int, rng: np.random.Generator) -> None:
        """Add random choices, one pass over the (step, block) pairs, while the count stays <= target."""
        count = sum(self.step_not_run(choices) for choices in steps)
        pairs = [(i, name) for i in range(len(steps)) for name in self.names]
        for index in rng.permutation(len(pairs)):
            if count >= target:
                break
            i, name = pairs[int(index)]
            before, saved = self.step_not_run(steps[i]), steps[i]
            if not self.add_choice(steps, i, name, rng):
                continue
            after = self.step_not_run(steps[i])
            if count - before + after <= target:
                count += after - before
            else:
                steps[i] = saved

    def moved_choices(self, plan: Plan, timesteps: Sequence[int]) -> list[Choices]:
        """Each new step takes the choices of the parent's step nearest in time (ties: the noisier)."""
        old = self.choices(plan)
        nearest = [min(range(plan.num_steps), key=lambda j: (abs(plan.timesteps[j] - t), j)) for t in timesteps]
        return [dict(old[j]) for j in nearest]

    # Operators -------------------------------------------------------------------------------------

    def random(
        self,
        rng: np.random.Generator,
        *,
        timesteps: Sequence[int] | None = None,
        solver: str | None = None,
        max_ratio: float,
    ) -> Plan:
        """Random block choices on ``timesteps`` (default: random time steps), run by ``solver``.

        The number of not-run pairs is drawn uniformly in ``[1, budget]`` (0 when the budget is 0),
        then choices are added in one random pass over the (step, block) pairs while they fit.
        """
        timesteps = self.timestep_space.random(rng) if timesteps is None else tuple(timesteps)
        steps: list[Choices] = [{} for _ in timesteps]
        budget = self.budget(len(timesteps), max_ratio)
        if budget > 0:
            self._fill(steps, int(rng.integers(1, budget + 1)), rng)
        return self.plan_of(timesteps, steps, solver)
