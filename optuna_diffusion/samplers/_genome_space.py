"""What a search space must offer the child generation: the protocol both plan searches implement."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

G = TypeVar("G", bound=Hashable)
"""A genome: time steps (a tuple of int), or a whole Plan. Hashable and compared by value."""


@runtime_checkable
class GenomeSpace(Protocol[G]):
    """The genomes of a search and the operators that breed them.

    :class:`~optuna_diffusion.samplers.TimestepSpace` (stage 1) and a generation-bound
    :class:`~optuna_diffusion.samplers.ArchitectureSpace` (stage 2) implement it; a custom space
    passed to :class:`~optuna_diffusion.samplers.ChildGeneration` must too. Every operator returns a
    valid genome of the space, by construction.
    """

    def random(self, rng: np.random.Generator) -> G:
        """A random genome."""

    def mutate(self, genome: G, rng: np.random.Generator, *, replace_prob: float) -> G:
        """A mutant of ``genome``; each gene changes with probability ``replace_prob``."""

    def refine(self, genome: G, rng: np.random.Generator) -> G:
        """A neighbour of ``genome``: one gene changed (the local search around the parents)."""

    def crossover(self, parent_a: G, parent_b: G, rng: np.random.Generator) -> G:
        """A child of two parents."""
