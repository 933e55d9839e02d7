"""Mutation of a plan's block choices (and, sometimes, its time steps); valid by construction."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..plan import Plan

if TYPE_CHECKING:
    from ._architecture_space import ArchitectureSpace


def mutate_plan(
    space: ArchitectureSpace,
    plan: Plan,
    rng: np.random.Generator,
    *,
    toggle_prob: float = 0.1,
    max_ratio: float = 1.0,
    timestep_mutation_prob: float = 0.0,
) -> Plan:
    """A mutant of ``plan``; it differs from ``plan`` whenever any change fits the ratio.

    1. With probability ``timestep_mutation_prob`` the time steps mutate (the stage-1
       operator, which may add or drop a step when ``k_min < k_max``); each new step takes the
       block choices of the parent's step nearest in time.
    2. Each (step, block) pair toggles with probability ``toggle_prob``: a skipped block runs
       again; a reused block inside a branch either runs again or, with probability 1/2, its
       reuse grows to the smallest branch around it (often the same output for far fewer
       MACs: what follows the block in the branch may not depend on the step); a running
       block gets a random allowed choice (a reused branch drops the choices inside it;
       blocks inside a branch reused at the step are left alone).
    3. Random explicit choices are dropped until the plan fits ``max_ratio``.
    4. When nothing changed, one random toggle that fits the ratio is made, or else (no block
       change fits) the time steps mutate.
    """
    timesteps = plan.timesteps
    if timestep_mutation_prob > 0 and rng.random() < timestep_mutation_prob:
        timesteps = space.timestep_space.mutate(timesteps, rng)
    if timesteps != plan.timesteps:
        steps = [space.normalised_step(c, i) for i, c in enumerate(space.moved_choices(plan, timesteps))]
    else:
        steps = space.choices(plan)
    pairs = [(i, name) for i in range(len(steps)) for name in space.names]
    toggling = np.flatnonzero(rng.random(len(pairs)) < toggle_prob)
    for index in rng.permutation(toggling):
        i, name = pairs[int(index)]
        branch = space.branch_around.get(name)
        if steps[i].get(name) == "reuse" and branch is not None and rng.random() < 0.5:
            steps[i] = space.normalised_step({**steps[i], branch: "reuse"}, i)
        elif name in steps[i]:
            steps[i] = {n: c for n, c in steps[i].items() if n != name}
        else:
            space.add_choice(steps, i, name, rng)
    space.trim(steps, max_ratio, rng)
    child = space.plan_of(timesteps, steps, plan.solver)
    if child == plan:
        child = one_toggle(space, plan, rng, max_ratio)
    if child == plan:  # no block change fits the ratio: move the time steps instead
        timesteps = space.timestep_space.mutate(plan.timesteps, rng)
        steps = [space.normalised_step(c, i) for i, c in enumerate(space.moved_choices(plan, timesteps))]
        space.trim(steps, max_ratio, rng)
        child = space.plan_of(timesteps, steps, plan.solver)
    return child


def one_toggle(space: ArchitectureSpace, plan: Plan, rng: np.random.Generator, max_ratio: float) -> Plan:
    """``plan`` with one random change that fits the ratio (``plan`` itself when none does)."""
    steps = space.choices(plan)
    budget = space.budget(plan.num_steps, max_ratio)
    count = sum(space.step_not_run(choices) for choices in steps)
    pairs = [(i, name) for i in range(plan.num_steps) for name in space.names]
    for index in rng.permutation(len(pairs)):  # at most K * B tries
        i, name = pairs[int(index)]
        before, saved = space.step_not_run(steps[i]), steps[i]
        if name in saved:
            steps[i] = {n: c for n, c in saved.items() if n != name}
        elif not space.add_choice(steps, i, name, rng):
            continue
        if count - before + space.step_not_run(steps[i]) <= budget:
            return space.plan_of(plan.timesteps, steps, plan.solver)
        steps[i] = saved
    return plan
