"""Parent selection of the time-step search: NSGA-II elites among evaluated trials."""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.samplers.nsgaii._elite_population_selection_strategy import NSGAIIElitePopulationSelectionStrategy
from optuna.trial import FrozenTrial, TrialState

from ..errors import ConfigError

FIDELITY_USER_ATTR = "fidelity"
"""User attribute: ``"full"``, or ``"low"`` for a trial whose FID is a small-sample estimate."""
LOW_FIDELITY = "low"


class ParentSelection:
    """The ``num_parents`` best complete trials by non-dominated rank, then crowding distance.

    Optuna's own NSGA-II selection does the work (``_fast_non_domination_rank`` and crowding
    distance of ``optuna.samplers.nsgaii``). Trials that carry constraints
    (``trial.set_constraint``) are ranked by constrained domination: feasible ones first, then
    by total violation. With one objective -- or two where one never differs, as MACs at a fixed K
    -- this is the ordering by FID that AutoDiffusion uses.

    Trials whose FID is a small-sample estimate (user attribute ``"fidelity": "low"``, see
    :mod:`optuna_diffusion.fidelity`) come after every full-size trial; they are parents only when
    there are too few full-size trials.

    Args:
        num_parents: how many parents to keep (at least 2).
    """

    def __init__(self, *, num_parents: int) -> None:
        if isinstance(num_parents, bool) or not isinstance(num_parents, int) or num_parents < 2:
            raise ConfigError(f"`num_parents` must be an integer >= 2, got {num_parents!r}")
        self._num_parents = num_parents
        self._elite = NSGAIIElitePopulationSelectionStrategy(population_size=num_parents)

    def __call__(self, study: optuna.Study, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """Select parents among ``trials`` (only complete ones are considered).

        Args:
            study: the study, for its directions.
            trials: candidate trials, e.g. every complete trial that carries time steps.

        Returns:
            The parents, best first within each front.
        """
        complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
        full = [trial for trial in complete if trial.user_attrs.get(FIDELITY_USER_ATTR) != LOW_FIDELITY]
        parents = self._elite(study, full)
        missing = self._num_parents - len(parents)
        if missing > 0:
            low = [trial for trial in complete if trial.user_attrs.get(FIDELITY_USER_ATTR) == LOW_FIDELITY]
            parents += self._elite(study, low)[:missing]
        return parents
