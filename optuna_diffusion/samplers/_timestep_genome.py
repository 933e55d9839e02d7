"""Genomes of the time-step search: sets of K distinct time steps.

A genome is a set of K distinct time steps of ``[0, T - 1]`` (T: ``num_train_timesteps``; ``[1, T]``
for flow matching, ``schedule_kind="flow"``), kept as a tuple sorted largest first, the order in
which sampling visits them. Order carries no information.

Every operator builds a valid genome by construction: a new step is drawn from the values not in
use (the r-th free value), never drawn and then checked. So no operator loops, and none returns
duplicate steps -- the official AutoDiffusion crossover could, silently leaving fewer than K steps.
The operators live in :mod:`._timestep_mutation` and :mod:`._timestep_crossover`.

Notation: ``T`` number of training time steps, ``K`` number of steps of a genome,
``k_range = (k_min, k_max)`` the allowed K.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
import numpy as np

from ..errors import ConfigError, PlanError
from ..plan import Plan, as_int, timestep_range

Genome = tuple[int, ...]


def check_space(num_train_timesteps: int, k_range: tuple[int, int]) -> tuple[int, int, int]:
    """``(T, k_min, k_max)``, checked (ConfigError names what is wrong)."""
    num_train = as_int(num_train_timesteps, "`num_train_timesteps`")
    if num_train < 1:
        raise ConfigError(f"`num_train_timesteps` must be positive, got {num_train}")
    if isinstance(k_range, (str, bytes)) or len(k_range) != 2:
        raise ConfigError(f"`k_range` must be a pair (k_min, k_max), got {k_range!r}")
    k_min, k_max = (as_int(k, "`k_range`") for k in k_range)
    if not 1 <= k_min <= k_max <= num_train:
        raise ConfigError(
            f"`k_range` must satisfy 1 <= k_min <= k_max <= num_train_timesteps = {num_train}, got ({k_min}, {k_max})"
        )
    return num_train, k_min, k_max


def check_genome(
    steps: Iterable[int], *, num_train_timesteps: int, k_range: tuple[int, int], schedule_kind: str = "ddpm"
) -> Genome:
    """The genome of ``steps``: distinct integers of ``[0, T - 1]`` (flow: ``[1, T]``), sorted largest first.

    Raises:
        PlanError: a step is not an integer or out of range, steps repeat, or K is not allowed.
    """
    num_train, k_min, k_max = check_space(num_train_timesteps, k_range)
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Iterable):
        raise PlanError(f"time steps must be a list of integers, got {steps!r}")
    values = sorted((as_int(t, "every time step") for t in steps), reverse=True)
    genome = Plan(tuple(values), num_train_timesteps=num_train, schedule_kind=schedule_kind).timesteps
    if not k_min <= len(genome) <= k_max:
        raise PlanError(f"{list(genome)} has {len(genome)} time steps, outside the allowed [{k_min}, {k_max}]")
    return genome


def nth_free(used_ascending: Sequence[int], index: int, low: int = 0) -> int:
    """The ``index``-th (0-based) integer ``>= low`` that is not in ``used_ascending`` (sorted, distinct)."""
    value = low + index
    for used in used_ascending:
        if used < low:
            continue
        if used <= value:
            value += 1
        else:
            break
    return value


def draw_free(used_ascending: Sequence[int], low: int, high: int, rng: np.random.Generator) -> int | None:
    """A uniformly drawn integer of ``[low, high]`` not in use, or None when all of them are."""
    num_used = sum(1 for used in used_ascending if low <= used <= high)
    num_free = high - low + 1 - num_used
    if num_free <= 0:
        return None
    return nth_free(used_ascending, int(rng.integers(num_free)), low)


def random_genome(
    rng: np.random.Generator, *, num_train_timesteps: int, k_range: tuple[int, int], schedule_kind: str = "ddpm"
) -> Genome:
    """K uniform in ``k_range``, then a uniformly drawn K-subset of ``[0, T - 1]`` (flow: ``[1, T]``)."""
    num_train, k_min, k_max = check_space(num_train_timesteps, k_range)
    num_steps = int(rng.integers(k_min, k_max + 1))
    low, _ = timestep_range(num_train, schedule_kind)
    steps = rng.choice(num_train, size=num_steps, replace=False) + low
    return tuple(sorted((int(t) for t in steps), reverse=True))
