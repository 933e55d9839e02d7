"""Genomes of the time-step search and the operators that breed them.

A genome is a set of K distinct time steps of ``[0, T - 1]`` (T: ``num_train_timesteps``), kept as a
tuple sorted largest first, the order in which sampling visits them. Order carries no information.

Every operator builds a valid genome by construction: a new step is drawn from the values not in
use (the r-th free value), never drawn and then checked. So no operator loops, and none returns
duplicate steps -- the official AutoDiffusion crossover could, silently leaving fewer than K steps.

Notation: ``T`` number of training time steps, ``K`` number of steps of a genome,
``k_range = (k_min, k_max)`` the allowed K.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, PlanError
from ..plan import Plan, _as_int

Genome = tuple[int, ...]


def _check_space(num_train_timesteps: int, k_range: tuple[int, int]) -> tuple[int, int, int]:
    num_train = _as_int(num_train_timesteps, "`num_train_timesteps`")
    if num_train < 1:
        raise ConfigError(f"`num_train_timesteps` must be positive, got {num_train}")
    if isinstance(k_range, (str, bytes)) or len(k_range) != 2:
        raise ConfigError(f"`k_range` must be a pair (k_min, k_max), got {k_range!r}")
    k_min, k_max = (_as_int(k, "`k_range`") for k in k_range)
    if not 1 <= k_min <= k_max <= num_train:
        raise ConfigError(
            f"`k_range` must satisfy 1 <= k_min <= k_max <= num_train_timesteps = {num_train}, got ({k_min}, {k_max})"
        )
    return num_train, k_min, k_max


def check_genome(steps: Iterable[int], *, num_train_timesteps: int, k_range: tuple[int, int]) -> Genome:
    """The genome of ``steps``: distinct integers of ``[0, T - 1]``, sorted largest first.

    Args:
        steps: time steps in any order.
        num_train_timesteps: T.
        k_range: ``(k_min, k_max)``, the allowed number of steps.

    Raises:
        PlanError: a step is not an integer or out of range, steps repeat, or K is not allowed.
    """
    num_train, k_min, k_max = _check_space(num_train_timesteps, k_range)
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Iterable):
        raise PlanError(f"time steps must be a list of integers, got {steps!r}")
    values = sorted((_as_int(t, "every time step") for t in steps), reverse=True)
    genome = Plan(tuple(values), num_train_timesteps=num_train).timesteps
    if not k_min <= len(genome) <= k_max:
        raise PlanError(f"{list(genome)} has {len(genome)} time steps, outside the allowed [{k_min}, {k_max}]")
    return genome


def nth_free(used_ascending: Sequence[int], index: int, low: int = 0) -> int:
    """The ``index``-th (0-based) integer ``>= low`` that is not in ``used_ascending``.

    ``used_ascending`` must be sorted ascending and distinct.
    """
    value = low + index
    for used in used_ascending:
        if used < low:
            continue
        if used <= value:
            value += 1
        else:
            break
    return value


def _draw_free(used_ascending: Sequence[int], low: int, high: int, rng: np.random.Generator) -> int | None:
    """A uniformly drawn integer of ``[low, high]`` not in use, or None when all of them are."""
    num_used = sum(1 for used in used_ascending if low <= used <= high)
    num_free = high - low + 1 - num_used
    if num_free <= 0:
        return None
    return nth_free(used_ascending, int(rng.integers(num_free)), low)


def random_genome(rng: np.random.Generator, *, num_train_timesteps: int, k_range: tuple[int, int]) -> Genome:
    """K uniform in ``k_range``, then a uniformly drawn K-subset of ``[0, T - 1]``."""
    num_train, k_min, k_max = _check_space(num_train_timesteps, k_range)
    num_steps = int(rng.integers(k_min, k_max + 1))
    steps = rng.choice(num_train, size=num_steps, replace=False)
    return tuple(sorted((int(t) for t in steps), reverse=True))


def mutate(
    steps: Iterable[int],
    rng: np.random.Generator,
    *,
    num_train_timesteps: int,
    k_range: tuple[int, int],
    replace_prob: float = 0.25,
    move_prob: float = 0.5,
    max_shift: int | None = None,
    resize_prob: float = 0.2,
) -> Genome:
    """A mutant of ``steps``; it always differs from ``steps`` (unless it is the only genome there is).

    1. Resize, only when ``k_min < k_max``: with probability ``resize_prob`` add one free step or
       drop one step (whichever K allows; each with probability 1/2 when both do).
    2. Each step, with probability ``replace_prob``, changes: with probability ``move_prob`` it
       moves to a free value at most ``max_shift`` away (fine tuning), otherwise -- or when no
       value nearby is free -- it is replaced by any free value (the official operator).
    3. When neither 1 nor 2 changed anything, one uniformly chosen step changes as in 2.

    Every new value is free when it is drawn, so the first changed step takes a value that the
    parent lacks, and the mutant differs from its parent.

    Args:
        steps: the parent genome.
        rng: source of randomness.
        num_train_timesteps: T.
        k_range: ``(k_min, k_max)``.
        replace_prob: probability that a step changes.
        move_prob: probability that a changing step moves locally rather than anywhere.
        max_shift: largest local move; default ``max(1, T // 20)``.
        resize_prob: probability of adding or dropping a step when K is searchable.
    """
    genes = list(check_genome(steps, num_train_timesteps=num_train_timesteps, k_range=k_range))
    num_train, k_min, k_max = _check_space(num_train_timesteps, k_range)
    shift = max(1, num_train // 20) if max_shift is None else max(1, int(max_shift))

    resized = False
    must_shrink = len(genes) == num_train and len(genes) > k_min  # no value is free: only dropping changes it
    if must_shrink or (k_min < k_max and rng.random() < resize_prob):
        can_grow = len(genes) < k_max
        can_shrink = len(genes) > k_min
        if can_grow and (not can_shrink or rng.random() < 0.5):
            new = _draw_free(sorted(genes), 0, num_train - 1, rng)
            assert new is not None  # len(genes) < k_max <= T
            genes.append(new)
        else:
            genes.pop(int(rng.integers(len(genes))))
        resized = True

    changing = rng.random(len(genes)) < replace_prob
    if not resized and not changing.any():
        changing[int(rng.integers(len(genes)))] = True

    for i in np.flatnonzero(changing):
        used = sorted(genes)
        step = genes[i]
        new = None
        if rng.random() < move_prob:
            new = _draw_free(used, max(0, step - shift), min(num_train - 1, step + shift), rng)
        if new is None:
            new = _draw_free(used, 0, num_train - 1, rng)
        if new is not None:  # None only when K == T: every value is in use
            genes[i] = new
    return tuple(sorted(genes, reverse=True))


def crossover(
    parent_a: Iterable[int],
    parent_b: Iterable[int],
    rng: np.random.Generator,
    *,
    num_train_timesteps: int,
    k_range: tuple[int, int],
) -> Genome:
    """A child of two parents, valid by construction.

    The child has the K of one parent (each with probability 1/2). It inherits every step both
    parents share, and fills up with a uniform draw, without replacement, of the steps only one
    parent has -- the set analogue of uniform crossover, where each such step is inherited with
    equal probability. The child is a subset of the union of its parents, so it never repeats a
    step. (K >= shared steps, and K <= shared + unshared, so the draw always fits.)
    """
    a = check_genome(parent_a, num_train_timesteps=num_train_timesteps, k_range=k_range)
    b = check_genome(parent_b, num_train_timesteps=num_train_timesteps, k_range=k_range)
    num_steps = len(a) if rng.random() < 0.5 else len(b)
    shared = set(a) & set(b)
    unshared = sorted(set(a) ^ set(b))
    picked = rng.choice(len(unshared), size=num_steps - len(shared), replace=False)
    child = shared | {unshared[int(i)] for i in picked}
    return tuple(sorted(child, reverse=True))


@dataclass(frozen=True)
class GenomeSpace:
    """The genomes of a search: K of ``[k_min, k_max]`` distinct steps of ``[0, T - 1]``.

    Binds the operators of this module to one space.

    Args:
        num_train_timesteps: T.
        k_min: fewest steps.
        k_max: most steps.
    """

    num_train_timesteps: int
    k_min: int
    k_max: int

    def __post_init__(self) -> None:
        _check_space(self.num_train_timesteps, self.k_range)

    @property
    def k_range(self) -> tuple[int, int]:
        return (self.k_min, self.k_max)

    def check(self, steps: Iterable[int]) -> Genome:
        return check_genome(steps, num_train_timesteps=self.num_train_timesteps, k_range=self.k_range)

    def contains(self, steps: object) -> bool:
        """Whether ``steps`` is a genome of this space (sorted largest first), without raising."""
        if not isinstance(steps, (list, tuple)):
            return False
        try:
            return tuple(steps) == self.check(steps)
        except PlanError:
            return False

    def random(self, rng: np.random.Generator) -> Genome:
        return random_genome(rng, num_train_timesteps=self.num_train_timesteps, k_range=self.k_range)

    def mutate(self, steps: Iterable[int], rng: np.random.Generator, *, replace_prob: float = 0.25) -> Genome:
        return mutate(
            steps, rng, num_train_timesteps=self.num_train_timesteps, k_range=self.k_range, replace_prob=replace_prob
        )

    def crossover(self, parent_a: Iterable[int], parent_b: Iterable[int], rng: np.random.Generator) -> Genome:
        return crossover(parent_a, parent_b, rng, num_train_timesteps=self.num_train_timesteps, k_range=self.k_range)


def insort_free(used_ascending: list[int], index: int) -> int:
    """Take the ``index``-th free value (see :func:`nth_free`), record it as used, and return it."""
    value = nth_free(used_ascending, index)
    insort(used_ascending, value)
    return value
