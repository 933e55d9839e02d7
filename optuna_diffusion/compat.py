"""The one place where optuna-diffusion uses private API of Optuna and optuna-dashboard.

Every function here names the private API it touches and the public alternative it lacks. Each was
checked against Optuna 5.0.0 and optuna-dashboard 0.21.0, and tests/test_compat.py exercises every
one of them, so an upgrade that moves one fails a test instead of changing results. Nothing here
catches the failure of a private call: it is raised to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Sequence
from datetime import datetime, timedelta
from typing import Any

import optuna
from optuna.samplers import BaseGASampler
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from . import faults

DASHBOARD_CONSTRAINTS_KEY = "constraints"
"""Trial system attribute optuna-dashboard 0.21 reads constraints from: a list of floats (feasible <= 0).

Optuna 5 stores constraints set with the public ``trial.set_constraint`` under other keys, which the
dashboard does not read yet."""


# --------------------------------------------------------------------------------------------------
# Study and trial internals
# --------------------------------------------------------------------------------------------------


def storage_of(study: optuna.Study) -> BaseStorage:
    """``study._storage``. Public alternative lacking: a Study exposes no accessor for its storage,
    which a sampler needs to read other studies of it and to write system attributes."""
    return study._storage


def study_id_of(study: optuna.Study) -> int:
    """``study._study_id``, the storage's key of the study (no public accessor)."""
    return study._study_id


def trial_id_of(trial: optuna.trial.BaseTrial | FrozenTrial) -> int:
    """``trial._trial_id``, the storage's key of a trial (``Trial.number`` is per study, not a key)."""
    return trial._trial_id


def set_trial_system_attr(study: optuna.Study, trial: optuna.trial.BaseTrial | FrozenTrial, key: str, value: Any) -> None:
    """Write a trial system attribute, as Optuna's own ``BaseGASampler`` does.

    Public alternative lacking: Optuna 5 removed ``Trial.set_system_attr``."""
    storage_of(study).set_trial_system_attr(trial_id_of(trial), key, value)


def live_system_attrs(trial: optuna.Trial) -> dict[str, Any]:
    """The current system attributes of a running trial, read from its storage.

    Public alternative lacking: Optuna 5 removed ``Trial.system_attrs``."""
    return trial.storage.get_trial_system_attrs(trial_id_of(trial))


def fail_trial(study: optuna.Study, trial: optuna.trial.BaseTrial | FrozenTrial) -> bool:
    """Mark a running trial FAIL; False when it had finished meanwhile (another worker, a tell).

    Public alternative lacking: ``study.tell(trial, state=FAIL)`` raises for a trial created by another
    process and would run the sampler's ``after_trial``."""
    try:
        return storage_of(study).set_trial_state_values(trial_id_of(trial), TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def cached_trials(study: optuna.Study, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
    """``study._get_trials(deepcopy=False, use_cache=True)``: the trials as Optuna's samplers read them.

    Public alternative lacking: ``study.get_trials`` cannot use the per-trial cache that keeps a
    sampler's reads cheap on a database storage."""
    return study._get_trials(deepcopy=False, states=states, use_cache=True)


def fresh_trials(study: optuna.Study, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
    """The trials as stored now, past every cache (to see what concurrent workers just wrote)."""
    return storage_of(study).get_all_trials(study_id_of(study), deepcopy=False, states=states)


def generation_key(sampler: BaseGASampler) -> str:
    """The trial system attribute where ``BaseGASampler`` stores a trial's generation.

    ``BaseGASampler._get_generation_key()`` is private; the key ("<ClassName>:generation") is what
    makes a study's generations survive a restart."""
    return sampler._get_generation_key()


def nsga2_elites(study: optuna.Study, trials: list[FrozenTrial], count: int) -> list[FrozenTrial]:
    """The ``count`` best trials by non-dominated rank then crowding distance, constraints honoured.

    Uses ``optuna.samplers.nsgaii._elite_population_selection_strategy``. Public alternative lacking:
    ``NSGAIISampler`` selects only inside its own generations and exposes no selection function."""
    from optuna.samplers.nsgaii._elite_population_selection_strategy import NSGAIIElitePopulationSelectionStrategy

    return NSGAIIElitePopulationSelectionStrategy(population_size=count)(study, trials)


def write_dashboard_constraints(trial: optuna.Trial, values: Sequence[float]) -> None:
    """Write constraint values where optuna-dashboard 0.21 shows them (:data:`DASHBOARD_CONSTRAINTS_KEY`)."""
    set_trial_system_attr(trial.study, trial, DASHBOARD_CONSTRAINTS_KEY, [float(v) for v in values])


def compute_hypervolume(points: Any, reference: Any) -> float:
    """``optuna._hypervolume.compute_hypervolume``: the exact hypervolume of ``points`` (an (N, M) array
    whose rows all lie below ``reference``) for minimisation. Public alternative lacking: Optuna exposes
    a hypervolume only inside ``plot_hypervolume_history``; the benchmarks score fronts with it."""
    from optuna._hypervolume import compute_hypervolume as exact_hypervolume

    return float(exact_hypervolume(points, reference))


# --------------------------------------------------------------------------------------------------
# Heartbeats: no trial lost in the window before the first heartbeat
# --------------------------------------------------------------------------------------------------


class HeartbeatRDBStorage(optuna.storages.RDBStorage):
    """An ``RDBStorage`` whose heartbeat also covers a trial killed before its first heartbeat.

    Optuna records a trial's first heartbeat when ``study.optimize`` starts the heartbeat thread,
    after ``study.ask`` has created the trial and the sampler has chosen its genome. A worker killed
    in between leaves a RUNNING trial without a heartbeat, which Optuna's stale check skips: it is
    never failed nor retried, and it holds its place in the trial budget forever. Here:

    1. a trial records a heartbeat as soon as it is RUNNING (created running, or a waiting trial --
       an enqueued one or a retry -- taken by ``study.ask``), so the window shrinks to the gap
       between two statements;
    2. ``_get_stale_trial_ids`` (private; called by ``optuna.storages.fail_stale_trials`` before each
       new trial) also reports RUNNING trials that have no heartbeat at all and started more than
       the grace period ago. Their start time comes from the worker that created them, so the
       machines of a study need clocks that agree to well within the grace period.
    """

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        # Private: Optuna's _CachedStorage (which wraps every RDBStorage in a Study) calls this one.
        trial = super()._create_new_trial(study_id, template_trial)
        if trial.state == TrialState.RUNNING:
            self._started(trial._trial_id)
        return trial

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        updated = super().set_trial_state_values(trial_id, state, values)
        if updated and state == TrialState.RUNNING:
            self._started(trial_id)
        return updated

    def _started(self, trial_id: int) -> None:
        faults.reach("trial-started")  # a kill here is the window this class closes
        if self.heartbeat_interval is not None:
            self.record_heartbeat(trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        grace = timedelta(seconds=self.grace_period or 2 * (self.heartbeat_interval or 0))
        started_long_ago = [
            trial._trial_id
            for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            if trial.datetime_start is not None and datetime.now() - trial.datetime_start > grace
        ]
        silent = set(started_long_ago) - self._trial_ids_with_heartbeat(started_long_ago) - set(stale)
        return stale + sorted(silent)

    def _trial_ids_with_heartbeat(self, trial_ids: list[int]) -> set[int]:
        """Which of ``trial_ids`` have a heartbeat row (``optuna.storages._rdb.models``, private)."""
        if not trial_ids:
            return set()
        import sqlalchemy
        from optuna.storages._rdb import models

        with sqlalchemy.orm.Session(self.engine) as session:
            rows = session.query(models.TrialHeartbeatModel.trial_id).filter(
                models.TrialHeartbeatModel.trial_id.in_(trial_ids)
            )
            return {row[0] for row in rows}


# --------------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------------

_OPTIMIZE_LOGGER = "optuna.study._optimize"
"""The logger of ``optuna.study._optimize``, which logs a failed trial with its whole traceback."""


class _DropInterruptedTrialLogs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, KeyboardInterrupt)


_INTERRUPT_FILTER = _DropInterruptedTrialLogs()


def quiet_interrupted_trials() -> None:
    """Drop Optuna's "Trial N failed ... KeyboardInterrupt" log record and its traceback.

    A Ctrl-C is the user's own act; the command line says in one line what happened to the trial.
    Public alternative lacking: Optuna logs every failed trial with ``exc_info`` on the module
    logger of ``optuna.study._optimize``, with no option to leave interruptions out."""
    logger = logging.getLogger(_OPTIMIZE_LOGGER)
    if _INTERRUPT_FILTER not in logger.filters:
        logger.addFilter(_INTERRUPT_FILTER)


_IN_MEMORY_LOGGER = "optuna.storages._in_memory"
"""The logger of ``optuna.storages._in_memory``, which logs every study created in memory at INFO."""

MODEL_STUDY_NAME = "optuna-diffusion:model"
"""The name of the in-memory studies a sampler fits its model on (:func:`quiet_model_studies`)."""


class _DropModelStudyLogs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return MODEL_STUDY_NAME not in record.getMessage()


_MODEL_STUDY_FILTER = _DropModelStudyLogs()


def quiet_model_studies() -> None:
    """Drop Optuna's "A new study created in memory with name: ..." line for studies named
    :data:`MODEL_STUDY_NAME`.

    The time-step search fits Optuna's TPE or GP on an in-memory study of its own for every model-guided
    child; at Optuna's default INFO level a user's own ``study.optimize`` would print one such line per
    child between its trial lines. Other in-memory studies are still logged. Public alternative lacking:
    ``InMemoryStorage.create_new_study`` logs on its module logger with no option to stay silent."""
    logger = logging.getLogger(_IN_MEMORY_LOGGER)
    if _MODEL_STUDY_FILTER not in logger.filters:
        logger.addFilter(_MODEL_STUDY_FILTER)


__all__ = [
    "DASHBOARD_CONSTRAINTS_KEY",
    "MODEL_STUDY_NAME",
    "HeartbeatRDBStorage",
    "cached_trials",
    "fail_trial",
    "fresh_trials",
    "generation_key",
    "live_system_attrs",
    "nsga2_elites",
    "quiet_interrupted_trials",
    "quiet_model_studies",
    "set_trial_system_attr",
    "storage_of",
    "study_id_of",
    "trial_id_of",
    "write_dashboard_constraints",
]
