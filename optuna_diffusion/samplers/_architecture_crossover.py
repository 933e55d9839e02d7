"""Crossover of two plans: the time steps of one, each block choice from either; valid by construction."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..plan import Plan

if TYPE_CHECKING:
    from ._architecture_space import ArchitectureSpace, Choices


def crossover_plans(space: ArchitectureSpace, parent_a: Plan, parent_b: Plan, rng: np.random.Generator, *, max_ratio: float = 1.0) -> Plan:
    """A child of two parents: the time steps of one, per (step, block) the choice of either.

    The child takes the time steps (and K, and solver) of one parent, each with probability 1/2. Block
    choices are matched by step position: at step i each block takes its choice from either
    parent with probability 1/2, or from the time-step parent when the other has no step i.
    Then branches drop the choices inside them and the child is trimmed to ``max_ratio``.
    """
    base, other = (parent_a, parent_b) if rng.random() < 0.5 else (parent_b, parent_a)
    base_steps, other_steps = space.choices(base), space.choices(other)
    steps: list[Choices] = []
    for i in range(base.num_steps):
        take_other = rng.random(len(space.names)) < 0.5
        choices: Choices = {}
        for name, from_other in zip(space.names, take_other):
            source = other_steps[i] if from_other and i < other.num_steps else base_steps[i]
            if name in source:
                choices[name] = source[name]
        steps.append(space.normalised_step(choices, i))
    space.trim(steps, max_ratio, rng)
    return space.plan_of(base.timesteps, steps, base.solver)  # the solver goes with the time steps
