"""Parent selection of both plan searches: NSGA-II elites among the study's evaluated trials."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..compat import nsga2_elites
from ..settings import POPULATION_RULE, check_argument
from ..trial_plan import is_low_fidelity


class ParentSelection(Protocol):
    """Chooses a generation's parents among candidate trials (the samplers' selection strategy)."""

    def __call__(self, study: optuna.Study, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The parents among ``trials``, best first."""


class NSGA2ParentSelection:
    """The ``num_parents`` best complete trials by non-dominated rank, then crowding distance.

    Optuna's own NSGA-II selection does the work (non-dominated sorting and crowding distance of
    ``optuna.samplers.nsgaii``, reached through :func:`optuna_diffusion.compat.nsga2_elites`). Trials
    that carry constraints (``trial.set_constraint``) are ranked by constrained domination: feasible
    ones first, then by total violation. With one objective -- or two where one never differs, as
    MACs at a fixed K -- this is the ordering by FID that AutoDiffusion uses.

    Trials whose FID is a small-sample estimate (user attribute ``"fidelity": "low"``, see
    :mod:`optuna_diffusion.fidelity`) come after every full-size trial; they are parents only when
    there are too few full-size trials.

    Args:
        num_parents: how many parents to keep (at least 2).
    """

    def __init__(self, *, num_parents: int) -> None:
        self.num_parents = check_argument(num_parents, "num_parents", int, POPULATION_RULE)

    def __call__(self, study: optuna.Study, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """Select parents among ``trials`` (only complete ones are considered), best first within each front."""
        complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
        full = [trial for trial in complete if not is_low_fidelity(trial)]
        parents = nsga2_elites(study, full, self.num_parents)
        missing = self.num_parents - len(parents)
        if missing > 0:
            low = [trial for trial in complete if is_low_fidelity(trial)]
            parents += nsga2_elites(study, low, self.num_parents)[:missing]
        return parents
