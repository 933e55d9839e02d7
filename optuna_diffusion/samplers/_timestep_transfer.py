"""Plans of K - 1 and K + 1 steps as starts for K: one step inserted into a gap, or one step removed.

A search over several K spends a few dozen evaluations on each K, too few for a search at one K alone
to find its good region. But a good plan of K - 1 steps is rarely far from a good plan of K steps: the
steps a schedule wants move little when one more step is spent. So a search can start K from its
neighbours: the best plan of K - 1 with one step inserted in the middle of one of its gaps (above
its first step, between two steps, below its last), and the best plan of K + 1 with one of its steps
removed. Each is a valid genome by construction; a gap without a free step gives nothing.
"""

from __future__ import annotations

from ._timestep_genome import Genome


def insertions(steps: Genome, low: int, high: int) -> list[Genome]:
    """``steps`` (sorted largest first, in ``[low, high]``) with one step inserted at the middle of each gap."""
    bounds = (high + 1, *steps, low - 1)  # a gap above the first step and below the last, as between two steps
    plans = []
    for above, below in zip(bounds, bounds[1:]):
        if above - below > 1:  # a free step lies strictly between them
            middle = (above + below) // 2
            plans.append(tuple(sorted((*steps, middle), reverse=True)))
    return plans


def removals(steps: Genome) -> list[Genome]:
    """``steps`` without each one of them in turn (nothing for a single step)."""
    if len(steps) < 2:
        return []
    return [steps[:i] + steps[i + 1:] for i in range(len(steps))]
