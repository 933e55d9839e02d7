"""The search space of a stage 1 that also chooses the solver: (solver, time steps) genomes.

The best time steps depend on the solver (a multistep solver such as DPM-Solver++(2M) wants other
steps than DDIM), so the two are searched together rather than one after the other: the solver is
one more gene of the genome, bred by the same operators as the time steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import ConfigError, PlanError
from ._timestep_genome import Genome
from ._timestep_space import TimestepSpace


class SolverSteps(NamedTuple):
    """A genome of :class:`SolverTimestepSpace`: the solver and the time steps (largest first)."""

    solver: str
    timesteps: Genome


@dataclass(frozen=True)
class SolverTimestepSpace:
    """Time steps of ``steps`` and one of ``solvers``; implements :class:`~optuna_diffusion.samplers.GenomeSpace`.

    Args:
        steps: the time-step space.
        solvers: the solver names searched (checked by the caller against the model's schedule).
    """

    steps: TimestepSpace
    solvers: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.solvers or len(set(self.solvers)) != len(self.solvers):
            raise ConfigError(f"`solvers` must be a list of distinct solver names, at least one, got {list(self.solvers)}")

    def check(self, steps: Iterable[int], solver: str) -> SolverSteps:
        """The genome of ``steps`` under ``solver``; PlanError if either does not belong to the space."""
        if solver not in self.solvers:
            raise PlanError(f"solver {solver!r} is not searched; searched: {', '.join(self.solvers)}")
        return SolverSteps(solver, self.steps.check(steps))

    def contains(self, genome: object) -> bool:
        """Whether ``genome`` is a genome of this space, without raising."""
        return (
            isinstance(genome, SolverSteps) and genome.solver in self.solvers and self.steps.contains(genome.timesteps)
        )

    def _other_solver(self, solver: str, rng: np.random.Generator) -> str:
        others = [name for name in self.solvers if name != solver]
        return others[int(rng.integers(len(others)))] if others else solver

    def random(self, rng: np.random.Generator) -> SolverSteps:
        return SolverSteps(self.solvers[int(rng.integers(len(self.solvers)))], self.steps.random(rng))

    def mutate(self, genome: SolverSteps, rng: np.random.Generator, *, replace_prob: float = 0.25) -> SolverSteps:
        """The solver changes with ``replace_prob``, as one more gene.

        The time steps mutate as without a solver (at least one step changes), except that a mutant
        whose solver changed keeps the parent's steps with the probability that none of its K steps
        would have changed, ``(1 - replace_prob) ** K``: the parent's schedule under another solver.
        """
        solver = self._other_solver(genome.solver, rng) if rng.random() < replace_prob else genome.solver
        keep_steps = solver != genome.solver and rng.random() < (1 - replace_prob) ** len(genome.timesteps)
        steps = genome.timesteps if keep_steps else self.steps.mutate(genome.timesteps, rng, replace_prob=replace_prob)
        return SolverSteps(solver, steps)

    def refine(self, genome: SolverSteps, rng: np.random.Generator) -> SolverSteps:
        """One gene changed: the solver with probability 1 / (K + 1), else one time step."""
        if len(self.solvers) > 1 and rng.random() < 1 / (len(genome.timesteps) + 1):
            return SolverSteps(self._other_solver(genome.solver, rng), genome.timesteps)
        return SolverSteps(genome.solver, self.steps.refine(genome.timesteps, rng))

    def crossover(self, parent_a: SolverSteps, parent_b: SolverSteps, rng: np.random.Generator) -> SolverSteps:
        """The time steps of :meth:`TimestepSpace.crossover`, the solver of either parent."""
        solver = parent_a.solver if rng.random() < 0.5 else parent_b.solver
        return SolverSteps(solver, self.steps.crossover(parent_a.timesteps, parent_b.timesteps, rng))

    def to_dict(self) -> dict[str, object]:
        """The space as stored on every trial: the time-step space's and ``"solvers"``."""
        return {**self.steps.to_dict(), "solvers": list(self.solvers)}

    def __str__(self) -> str:
        return f"{self.steps} under {', '.join(self.solvers)}"
