"""An exact global trial budget for many workers on one study.

Optuna's ``MaxTrialsCallback`` stops a worker after a trial completes once the study holds the
budget, but trials that other workers started meanwhile still finish: with W workers a study can
overshoot by W - 1. Here a trial claims a place in the budget when it starts. Trial numbers are
handed out by the storage in creation order, so "complete trials plus running trials with a
smaller number" gives every worker the same answer without a lock: of the trials running at
once, exactly the first ones that fit go on.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from .compat import fresh_trials
from .trial_plan import BUDGET_STOPPED_ATTR


class TrialBudget:
    """At most ``total`` complete trials in a study, counted over all workers.

    Call :meth:`claim` at the start of the objective; when it returns False, stop instead of
    evaluating (see :meth:`stop_trial`). A trial cut off by a crash (FAIL) frees its place; its
    heartbeat retry claims it again.
    """

    def __init__(self, total: int) -> None:
        self.total = total

    def counts(self, study: optuna.Study, trial_number: int | None = None) -> tuple[int, int]:
        """(complete trials, running trials numbered below ``trial_number`` -- all running if None)."""
        trials = fresh_trials(study, states=(TrialState.COMPLETE, TrialState.RUNNING))
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        running = sum(
            t.state == TrialState.RUNNING and (trial_number is None or t.number < trial_number) for t in trials
        )
        return complete, running

    def claim(self, trial: optuna.Trial) -> bool:
        """Whether ``trial`` (running) still fits in the budget."""
        complete, running_before = self.counts(trial.study, trial.number)
        return complete + running_before < self.total

    @staticmethod
    def stop_trial(trial: optuna.Trial) -> None:
        """End ``trial`` unevaluated (PRUNED) and stop this worker's ``study.optimize``."""
        trial.set_user_attr(BUDGET_STOPPED_ATTR, "trial budget already claimed by other trials")
        trial.study.stop()
        raise optuna.TrialPruned("the trial budget is reached")
