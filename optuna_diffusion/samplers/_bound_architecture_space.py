"""Stage 2's operators bound to one generation, above the space and its operators (as stage 1's
:class:`~optuna_diffusion.samplers.TimestepSpace` sits above its mutation and crossover)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..plan import Plan
from ._architecture_crossover import crossover_plans
from ._architecture_mutation import mutate_plan
from ._architecture_space import ArchitectureSpace


class BoundArchitectureSpace:
    """An :class:`ArchitectureSpace` fixed to one generation, with the operator signatures of
    :class:`~optuna_diffusion.samplers.GenomeSpace`: its skip ratio ``max_ratio``, and the plans
    random children take time steps from (``pool``).

    ``random`` takes the time steps of a random plan of ``pool`` (random time steps when the pool
    is empty), mutated with probability ``timestep_mutation_prob``: stage 2 refines the time steps
    stage 1 found instead of drawing them anew.
    """

    def __init__(
        self,
        space: ArchitectureSpace,
        *,
        max_ratio: float,
        pool: Sequence[Plan] = (),
        timestep_mutation_prob: float = 0.0,
    ) -> None:
        self.space = space
        self.max_ratio = max_ratio
        self.pool = tuple(pool)
        self.timestep_mutation_prob = timestep_mutation_prob

    def __str__(self) -> str:
        return f"{self.space} (skip ratio <= {self.max_ratio:.3g})"

    def random(self, rng: np.random.Generator) -> Plan:
        timesteps, solver = None, None
        if self.pool:
            source = self.pool[int(rng.integers(len(self.pool)))]
            timesteps, solver = source.timesteps, source.solver
            if self.timestep_mutation_prob > 0 and rng.random() < self.timestep_mutation_prob:
                timesteps = self.space.timestep_space.mutate(timesteps, rng)
        return self.space.random(rng, timesteps=timesteps, solver=solver, max_ratio=self.max_ratio)

    def mutate(self, plan: Plan, rng: np.random.Generator, *, replace_prob: float) -> Plan:
        return mutate_plan(
            self.space,
            plan,
            rng,
            toggle_prob=replace_prob,
            max_ratio=self.max_ratio,
            timestep_mutation_prob=self.timestep_mutation_prob,
        )

    def refine(self, plan: Plan, rng: np.random.Generator) -> Plan:
        # One block choice toggled, the time steps kept.
        return mutate_plan(self.space, plan, rng, toggle_prob=0.0, max_ratio=self.max_ratio, timestep_mutation_prob=0.0)

    def crossover(self, parent_a: Plan, parent_b: Plan, rng: np.random.Generator) -> Plan:
        return crossover_plans(self.space, parent_a, parent_b, rng, max_ratio=self.max_ratio)

