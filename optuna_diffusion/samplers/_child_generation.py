"""Child generation of both plan searches: which operator makes a trial's genome, and no repeats.

The operators come from a :class:`~optuna_diffusion.samplers.GenomeSpace` given with every call:
:class:`~optuna_diffusion.samplers.TimestepSpace` for time steps, an
:class:`~optuna_diffusion.samplers.ArchitectureSpace` bound to a generation for whole plans.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from typing import Any, Protocol

import numpy as np
import optuna

from ._genome_space import G, GenomeSpace

_logger = optuna.logging.get_logger(__name__)


class ChildGenerationStrategy(Protocol):
    """Makes the genome of one new trial (the samplers' child-generation strategy)."""

    def __call__(
        self,
        rng: np.random.Generator,
        *,
        space: GenomeSpace,
        generation: int,
        slot: int,
        parents: Sequence[Any],
        initial: Sequence[Any],
        taken: Container[Any],
    ) -> Any:
        """A genome for ``slot`` of ``generation`` that is not in ``taken`` (when one can be found)."""


class ChildGeneration:
    """The genome of one new trial, from its slot in its generation.

    Slots are the trial's rank among the trials of its generation. In generation 0 the first slots
    hold the initial plans, the next ``num_mutants`` slots their mutants (when there are initial
    plans), the rest random genomes. In later generations, slot ``s`` (taken modulo
    ``population_size``) is a refinement (one gene of a parent changed, ``space.refine``) when
    ``s < num_refinements``: of the first parent with ``refine_best``, else of a random one; then come ``num_mutants`` mutants of random parents,
    ``num_crossovers`` crossovers of two random parents, ``num_proposals`` proposals of a model of
    the evaluated genomes (``space.propose``; a space without it gives random genomes there), and
    random genomes for the rest -- the AutoDiffusion / Once-for-All recipe when ``num_refinements``
    and ``num_proposals`` are 0. Without parents (every trial failed) all slots are random.

    A genome already taken (evaluated or running) is drawn again: ``max_attempts // 2`` fresh draws
    of the same operator, then ever stronger mutations of the last draw, then one random genome.
    If that is taken too, the space is (nearly) exhausted: the duplicate is returned with a warning.
    Every step is bounded, and deterministic given ``rng``.

    Args:
        population_size: trials per generation.
        num_mutants: mutants per generation.
        num_crossovers: crossovers per generation.
        mutation_prob: probability that a mutant changes each gene (a time step; a (step, block) choice).
        num_refinements: refinements per generation after the first: the local search that polishes
            the parents (a mutant changes several genes of a large genome at once).
        refine_best: refine only the first parent (the selection's best): the search polishes one
            plan as a (1 + lambda) evolution strategy does, instead of spreading its refinements.
        num_proposals: model proposals per generation after the first (stage 1: Optuna's TPE fitted
            on the evaluated plans, :class:`~optuna_diffusion.samplers.GuidedTimestepSpace`): the
            exploration that random genomes do blindly.
        max_attempts: draws before giving up on a fresh genome.
    """

    def __init__(
        self,
        *,
        population_size: int,
        num_mutants: int,
        num_crossovers: int,
        mutation_prob: float,
        num_refinements: int = 0,
        num_proposals: int = 0,
        refine_best: bool = False,
        max_attempts: int = 8,
    ) -> None:
        self.population_size = population_size
        self.num_refinements = num_refinements
        self.num_proposals = num_proposals
        self.refine_best = refine_best
        self.num_mutants = num_mutants
        self.num_crossovers = num_crossovers
        self.mutation_prob = mutation_prob
        self.max_attempts = max_attempts

    def operator(
        self, *, space: GenomeSpace[G], generation: int, slot: int, parents: Sequence[G], initial: Sequence[G] = ()
    ) -> Callable[[np.random.Generator], G]:
        """The operator that makes genomes for ``slot`` of ``generation``."""

        def mutant_of(pool: Sequence[G]) -> Callable[[np.random.Generator], G]:
            return lambda rng: space.mutate(pool[int(rng.integers(len(pool)))], rng, replace_prob=self.mutation_prob)

        def refinement_of(pool: Sequence[G]) -> Callable[[np.random.Generator], G]:
            return lambda rng: space.refine(pool[int(rng.integers(len(pool)))], rng)

        def crossover_of(pool: Sequence[G]) -> Callable[[np.random.Generator], G]:
            def make(rng: np.random.Generator) -> G:
                a, b = rng.choice(len(pool), size=2, replace=False)
                return space.crossover(pool[int(a)], pool[int(b)], rng)

            return make

        if generation == 0:
            if slot < len(initial):
                plan = initial[slot]
                return lambda rng: plan
            if initial and slot < len(initial) + self.num_mutants:
                return mutant_of(initial)
            return space.random
        if not parents:
            return space.random
        position = slot % self.population_size
        if position < self.num_refinements:
            return refinement_of(parents[:1] if self.refine_best else parents)
        position -= self.num_refinements
        if position < self.num_mutants:
            return mutant_of(parents)
        if position < self.num_mutants + self.num_crossovers:
            return crossover_of(parents) if len(parents) >= 2 else mutant_of(parents)
        if position < self.num_mutants + self.num_crossovers + self.num_proposals:
            return getattr(space, "propose", space.random)
        return space.random

    def __call__(
        self,
        rng: np.random.Generator,
        *,
        space: GenomeSpace[G],
        generation: int,
        slot: int,
        parents: Sequence[G],
        initial: Sequence[G] = (),
        taken: Container[G] = (),
    ) -> G:
        """A genome for ``slot`` of ``generation`` that is not in ``taken`` (when one can be found)."""
        make = self.operator(space=space, generation=generation, slot=slot, parents=parents, initial=initial)
        candidate = make(rng)
        for attempt in range(self.max_attempts):
            if candidate not in taken:
                return candidate
            if attempt < self.max_attempts // 2:
                candidate = make(rng)
            else:
                harder = min(1.0, self.mutation_prob * 2 ** (attempt - self.max_attempts // 2 + 1))
                candidate = space.mutate(candidate, rng, replace_prob=harder)
        if candidate not in taken:
            return candidate
        candidate = space.random(rng)
        if candidate in taken:
            _logger.warning(
                f"No new genome found for generation {generation}, slot {slot} after "
                f"{self.max_attempts + 1} draws: the search space {space} is (nearly) exhausted; "
                f"{_describe(candidate)} is evaluated again."
            )
        return candidate


def _describe(genome: Any) -> str:
    return str(list(genome)) if type(genome) is tuple else str(genome)  # time steps; else its own str
