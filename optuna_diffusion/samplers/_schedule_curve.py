"""Plans of every K as points of one space: a K-step plan read as a curve, and a curve read back at any K.

A search over several K evaluates a few dozen plans of each K, too few for a model of one K alone. But
the plans of neighbouring K are alike in shape: where the first step sits, how fast the steps fall. Read
as a decreasing curve over ``[0, 1]`` (step ``i`` of K at ``u = i / (K - 1)``), every plan is a point of
one space, its curve sampled at ``KNOTS`` fixed ``u``; a model fitted there on the plans of every K proposes
a curve, which gives a plan of any K read back at that K's positions. The curve runs straight between steps
in ``log(1 + t)``: good plans fall nearly geometrically (the digits model's 4-step best is 830, 289, 128, 49),
so there it is nearly straight, and a plan read back at its own K is close to the plan.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..baselines import strictly_decreasing
from ._timestep_genome import Genome

# Points of the curve a plan is modelled by: its first and last steps and three between.
KNOTS = 5


def curve_of(steps: Sequence[int]) -> tuple[float, ...]:
    """The curve of ``steps`` (sorted largest first) at ``KNOTS`` evenly spaced points of ``[0, 1]``, in ``log(1 + t)``."""
    return tuple(np.interp(np.linspace(0, 1, KNOTS), np.linspace(0, 1, len(steps)), np.log1p(steps)).tolist())


def steps_on(curve: Sequence[float], num_steps: int, low: int, high: int) -> Genome:
    """The plan of ``num_steps`` steps in ``[low, high]`` on ``curve`` (its ``KNOTS`` points in ``log(1 + t)``,
    sorted largest first when not), steps that round onto one another put back in order."""
    points = np.linspace(0, 1, num_steps)
    values = np.expm1(np.interp(points, np.linspace(0, 1, len(curve)), sorted(curve, reverse=True)))
    return strictly_decreasing(np.clip(np.rint(values), low, high), high - low + 1, lowest=low)
