"""Crossover of two time-step genomes: the set analogue of uniform crossover, valid by construction."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ._timestep_genome import Genome, check_genome


def crossover(
    parent_a: Iterable[int],
    parent_b: Iterable[int],
    rng: np.random.Generator,
    *,
    num_train_timesteps: int,
    k_range: tuple[int, int],
    schedule_kind: str = "ddpm",
) -> Genome:
    """A child of two parents, valid by construction.

    The child has the K of one parent (each with probability 1/2). It inherits every step both
    parents share, and fills up with a uniform draw, without replacement, of the steps only one
    parent has -- the set analogue of uniform crossover, where each such step is inherited with
    equal probability. The child is a subset of the union of its parents, so it never repeats a
    step. (K >= shared steps, and K <= shared + unshared, so the draw always fits.)
    """
    a = check_genome(parent_a, num_train_timesteps=num_train_timesteps, k_range=k_range, schedule_kind=schedule_kind)
    b = check_genome(parent_b, num_train_timesteps=num_train_timesteps, k_range=k_range, schedule_kind=schedule_kind)
    num_steps = len(a) if rng.random() < 0.5 else len(b)
    shared = set(a) & set(b)
    unshared = sorted(set(a) ^ set(b))
    picked = rng.choice(len(unshared), size=num_steps - len(shared), replace=False)
    child = shared | {unshared[int(i)] for i in picked}
    return tuple(sorted(child, reverse=True))
