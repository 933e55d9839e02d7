"""Mutation of a time-step genome: resize, move steps locally or anywhere; valid by construction."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..plan import timestep_range
from ._timestep_genome import Genome, check_genome, check_space, draw_free


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
    schedule_kind: str = "ddpm",
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
        schedule_kind: ``"ddpm"`` (steps of ``[0, T - 1]``) or ``"flow"`` (``[1, T]``).
    """
    genes = list(check_genome(steps, num_train_timesteps=num_train_timesteps, k_range=k_range, schedule_kind=schedule_kind))
    num_train, k_min, k_max = check_space(num_train_timesteps, k_range)
    low, high = timestep_range(num_train, schedule_kind)
    shift = max(1, num_train // 20) if max_shift is None else max(1, int(max_shift))

    resized = False
    must_shrink = len(genes) == num_train and len(genes) > k_min  # no value is free: only dropping changes it
    if must_shrink or (k_min < k_max and rng.random() < resize_prob):
        can_grow = len(genes) < k_max
        can_shrink = len(genes) > k_min
        if can_grow and (not can_shrink or rng.random() < 0.5):
            new = draw_free(sorted(genes), low, high, rng)
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
            new = draw_free(used, max(low, step - shift), min(high, step + shift), rng)
        if new is None:
            new = draw_free(used, low, high, rng)
        if new is not None:  # None only when K == T: every value is in use
            genes[i] = new
    return tuple(sorted(genes, reverse=True))


def nudge(
    steps: Iterable[int],
    rng: np.random.Generator,
    *,
    num_train_timesteps: int,
    k_range: tuple[int, int],
    max_move: int = 64,
    schedule_kind: str = "ddpm",
) -> Genome:
    """``steps`` with one step moved a little: the local search that polishes a good plan.

    The move's size is log-uniform in ``[1, max_move]`` (as often 1-8 as 8-64: the compass search
    that found the best known plans moved steps by 64, 32, ..., 1), its direction random; a target
    out of range or in use is tried the other way, then replaced by a free value within the move.
    The result always differs from ``steps`` (unless every value is in use).
    """
    genes = sorted(check_genome(steps, num_train_timesteps=num_train_timesteps, k_range=k_range, schedule_kind=schedule_kind))
    low, high = timestep_range(num_train_timesteps, schedule_kind)
    i = int(rng.integers(len(genes)))
    step = genes[i]
    size = max(1, round(float(np.exp(rng.uniform(0.0, np.log(max_move))))))
    direction = 1 if rng.random() < 0.5 else -1
    for target in (step + direction * size, step - direction * size):
        if low <= target <= high and target not in genes:
            genes[i] = target
            return tuple(sorted(genes, reverse=True))
    new = draw_free(genes, max(low, step - size), min(high, step + size), rng)
    if new is None:  # every value within the move is in use: move anywhere
        new = draw_free(sorted(genes), low, high, rng)
    if new is not None:
        genes[i] = new
    return tuple(sorted(genes, reverse=True))


# A long move takes one step an eighth, a quarter or half of the step range away.
LONG_MOVE_FRACTIONS = (1 / 8, 1 / 4, 1 / 2)


def long_moves(steps: Genome, low: int, high: int) -> list[Genome]:
    """``steps`` (in ``[low, high]``) with one step moved by each of ``LONG_MOVE_FRACTIONS`` of the range,
    either way (clamped to it): the moves that leave a basin which one-step nudges and a trust region
    around the best plan cannot (on the digits model a 4-step search stalls at FID 2.54 with its first
    step at 649; the same plan with it at 905 scores 2.16)."""
    span = high - low + 1
    moved = []
    for i, step in enumerate(steps):
        for fraction in LONG_MOVE_FRACTIONS:
            for sign in (1, -1):
                target = min(high, max(low, step + sign * round(fraction * span)))
                if target not in steps:
                    moved.append(tuple(sorted((*steps[:i], target, *steps[i + 1:]), reverse=True)))
    return list(dict.fromkeys(moved))
