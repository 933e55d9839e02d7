"""AutoDiffusion's own evolutionary time-step search, re-implemented from its description as a peer.

As its official search script for ImageNet 64 (``search_imagenet64_classifier_guidance.sh``) runs it:
a population of 50; the first population is the uniform DDIM plan, random plans up to half the
population plus one, and mutants of the uniform plan (each step replaced with probability 0.1 by an
unused one); then per generation the 10 best plans seen so far are the parents, 25 mutants (each
step replaced with probability 0.25 by a step the parent does not use), 15 crossovers (each position
taken from one of two parents with probability 0.5) and random plans to fill the population. A plan
seen before is not evaluated again and does not count. Unlike the official code, a crossover that
repeats a step (which silently gives fewer than K steps there) is rejected and redrawn.
"""

from __future__ import annotations

import random
from typing import Callable

POPULATION = 50
PARENTS = 10
MUTANTS = 25
CROSSOVERS = 15
MUTATION_PROBABILITY = 0.25
FIRST_MUTATION_PROBABILITY = 0.1
TRIES_PER_CHILD = 10  # the official code gives up on a kind of child after 10x its count in draws


def uniform_ddim_plan(k: int, num_train: int) -> tuple[int, ...]:
    """guided-diffusion's ``ddimK`` spacing: the integer stride that gives exactly K steps."""
    for stride in range(1, num_train):
        steps = range(0, num_train, stride)
        if len(steps) == k:
            return tuple(sorted(steps, reverse=True))
    raise ValueError(f"no integer stride gives exactly {k} steps out of {num_train}")


def autodiffusion_search(
    fid_of: Callable[[tuple[int, ...]], float], k: int, num_train: int, budget: int, seed: int
) -> list[tuple[tuple[int, ...], float]]:
    """Run the search until ``budget`` distinct plans are evaluated; return (plan, FID) in evaluation order."""
    rng = random.Random(seed)
    history: list[tuple[tuple[int, ...], float]] = []
    seen: dict[tuple[int, ...], float] = {}

    def evaluate(plan: list[int]) -> bool:
        key = tuple(sorted(plan, reverse=True))
        if len(set(key)) != k or key in seen or len(history) >= budget:
            return False
        seen[key] = fid_of(key)
        history.append((key, seen[key]))
        return True

    def mutant(parent: tuple[int, ...], probability: float) -> list[int]:
        unused = [t for t in range(num_train) if t not in parent]
        child = list(parent)
        for i in range(k):
            if rng.random() < probability:
                child[i] = unused.pop(rng.randrange(len(unused)))
        return child

    def crossover(parents: list[tuple[int, ...]]) -> list[int]:
        a, b = rng.choice(parents), rng.choice(parents)
        return [a[i] if rng.random() < 0.5 else b[i] for i in range(k)]

    def random_plan() -> list[int]:
        return rng.sample(range(num_train), k)

    def add(make: Callable[[], list[int]], count: int, tries: int | None) -> None:
        added, left = 0, tries
        while added < count and len(history) < budget and (left is None or left > 0):
            added += evaluate(make())
            if left is not None:
                left -= 1

    uniform = uniform_ddim_plan(k, num_train)
    evaluate(list(uniform))
    add(random_plan, POPULATION // 2, None)
    add(lambda: mutant(uniform, FIRST_MUTATION_PROBABILITY), POPULATION - POPULATION // 2 - 1, TRIES_PER_CHILD * POPULATION)
    while len(history) < budget:
        parents = sorted(seen, key=seen.get)[:PARENTS]
        generation_start = len(history)
        add(lambda: mutant(rng.choice(parents), MUTATION_PROBABILITY), MUTANTS, TRIES_PER_CHILD * MUTANTS)
        add(lambda: crossover(parents), CROSSOVERS, TRIES_PER_CHILD * CROSSOVERS)
        add(random_plan, POPULATION - (len(history) - generation_start), None)
    return history
