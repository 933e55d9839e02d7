"""Multi-fidelity FID: score a candidate on a few samples first, finish only those that could matter.

Every promoted candidate is scored at both sizes -- the small sample is the first part of the full
one -- so the study itself measures how small-sample FID maps to full-size FID. On the digits model
that map is close to a power law: ``log full = a + b log low`` fits with a residual spread of about
7% over plans from FID 2 to 8. A constant shift ``full - low`` fits worse: it scatters by 0.6 FID,
and the scatter grows with FID. So the study fits the power law to its own pairs by least squares
and takes the spread of the residuals as the uncertainty of a prediction.

A candidate stops at the small sample when even its optimistic full-size estimate,
``exp(a + b log low - margin_sigmas * spread)``, is matched or beaten by ``keep`` full-size trials
that cost no more MACs, or by one while the front of full-size trials has ``keep`` points or more:
it could enter neither the Pareto front nor the ``keep`` best parents.

Such a trial is stored COMPLETE with user attribute ``"fidelity": "low"`` and its central estimate
``exp(a + b log low)`` as its FID, which a full-size trial dominates: it never reaches
``study.best_trials``, and parent selection ranks it after every full-size trial.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from optuna.trial import FrozenTrial

from .settings import FID_SAMPLES_RULE, at_least, check_argument
from .trial_plan import FID_LOW_ATTR, MACS_ATTR, is_low_fidelity


@dataclass(frozen=True)
class FidelityPolicy:
    """When a candidate scored on ``low_samples`` samples goes on to the full count.

    Args:
        low_samples: samples of the first look (e.g. a quarter of the full count).
        keep: stop a candidate when this many full-size trials with no more MACs have an FID at
            or below its optimistic estimate (use the sampler's ``num_parents``).
        margin_sigmas: how many residual spreads of the fitted power law (in log FID) the
            optimistic estimate subtracts.
        min_pairs: full-size trials (each with its small-sample FID) needed before anything is
            stopped early; until then every candidate gets the full count.
    """

    low_samples: int
    keep: int = 4
    margin_sigmas: float = 2.0
    min_pairs: int = 10

    def __post_init__(self) -> None:
        check_argument(self.low_samples, "low_samples", int, FID_SAMPLES_RULE)
        check_argument(self.keep, "keep", int, at_least(2))
        check_argument(self.min_pairs, "min_pairs", int, at_least(2))
        check_argument(self.margin_sigmas, "margin_sigmas", float, at_least(0))


@dataclass(frozen=True)
class Calibration:
    """``log full = intercept + slope * log low``, fitted on the study's full-size trials.

    ``spread`` is the standard deviation of the residuals (in log FID), ``pairs`` the number of
    ``(low, full)`` pairs fitted.
    """

    intercept: float
    slope: float
    spread: float
    pairs: int

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[float, float]]) -> "Calibration | None":
        """From ``(low, full)`` FID pairs; None with fewer than 3 usable (finite, positive) ones."""
        usable = [(low, full) for low, full in pairs if 0 < low < math.inf and 0 < full < math.inf]
        if len(usable) < 3:
            return None
        x = np.log([low for low, _ in usable])
        y = np.log([full for _, full in usable])
        if np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
        else:  # every low FID equal: no slope to fit, only the offset
            slope, intercept = 1.0, float(np.mean(y - x))
        residuals = y - (intercept + slope * x)
        spread = float(np.sqrt(np.sum(residuals**2) / (len(usable) - 2)))
        return cls(float(intercept), float(slope), spread, len(usable))

    def estimate(self, fid_low: float, *, sigmas: float = 0.0) -> float:
        """Full-size FID predicted from ``fid_low``, ``sigmas`` residual spreads lower."""
        return math.exp(self.intercept + self.slope * math.log(fid_low) - sigmas * self.spread)


@dataclass(frozen=True)
class Decision:
    """Whether a candidate gets the full sample count, and its estimate if it does not."""

    promote: bool
    estimate: float | None = None
    optimistic: float | None = None


def decide(
    policy: FidelityPolicy,
    trials: Sequence[FrozenTrial],
    *,
    fid_low: float,
    macs: float | None,
    fid_of: Callable[[FrozenTrial], float],
    macs_budget: float | None = None,
) -> Decision:
    """Decide on a candidate with small-sample FID ``fid_low`` costing ``macs`` (None: MACs not compared).

    ``trials`` are the study's complete trials; ``fid_of`` reads a trial's full-size FID.
    """
    full = [t for t in trials if not is_low_fidelity(t) and math.isfinite(fid_of(t))]
    pairs = [(t.user_attrs[FID_LOW_ATTR], fid_of(t)) for t in full if FID_LOW_ATTR in t.user_attrs]
    calibration = Calibration.from_pairs(pairs)
    if calibration is None or calibration.pairs < policy.min_pairs or not 0 < fid_low < math.inf:
        return Decision(promote=True)
    estimate = calibration.estimate(fid_low)
    optimistic = calibration.estimate(fid_low, sigmas=policy.margin_sigmas)
    if could_matter(optimistic, macs, full, keep=policy.keep, fid_of=fid_of, macs_budget=macs_budget):
        return Decision(promote=True)
    return Decision(promote=False, estimate=estimate, optimistic=optimistic)


def could_matter(
    fid: float,
    macs: float | None,
    full: Sequence[FrozenTrial],
    *,
    keep: int,
    fid_of: Callable[[FrozenTrial], float],
    macs_budget: float | None = None,
) -> bool:
    """Whether a plan of ``fid`` costing ``macs`` could join the front or the ``keep`` best parents of the
    full-size trials ``full``: fewer than ``keep`` of them cost no more MACs and score ``fid`` or better,
    and none does while the front alone fills the parents. (``decide`` asks it of a candidate's optimistic
    estimate; ``benchmarks/fitness_cost.py`` of a finished plan's own FID, as a perfect stopping rule.)"""
    feasible = [t for t in full if macs_budget is None or _macs(t) <= macs_budget]
    as_good = sum(1 for t in feasible if (macs is None or _macs(t) <= macs) and fid_of(t) <= fid)
    # Dominated, it ranks behind the whole front; when the front alone fills the parents, it can be
    # neither (several MACs levels: the variable-K search).
    behind_a_full_front = macs is not None and as_good >= 1 and _front_size(feasible, fid_of) >= keep
    return not (as_good >= keep or behind_a_full_front)


def _macs(trial: FrozenTrial) -> float:
    return trial.user_attrs.get(MACS_ATTR, math.inf)


def _front_size(trials: Sequence[FrozenTrial], fid_of: Callable[[FrozenTrial], float]) -> int:
    """Number of distinct Pareto-optimal (FID, MACs) points among ``trials``."""
    size, best_fid = 0, math.inf
    for _, fid in sorted((_macs(t), fid_of(t)) for t in trials):
        if fid < best_fid:
            size, best_fid = size + 1, fid
    return size
