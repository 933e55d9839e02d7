"""Every private Optuna and optuna-dashboard use of optuna_diffusion.compat, exercised on real storages.

An Optuna upgrade that moves one of them fails here, not as silently different searches.
"""

from __future__ import annotations

import datetime
import logging

import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from optuna_diffusion import compat
from optuna_diffusion.samplers import TimestepSampler
from optuna_diffusion.storage import open_storage


@pytest.fixture(params=["sqlite", "journal"])
def storage(request, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}" if request.param == "sqlite" else str(tmp_path / "journal.log")
    return open_storage(url, heartbeat_interval=1)


def test_trial_internals_read_and_write_the_storage(storage):
    study = optuna.create_study(storage=storage, directions=["minimize", "minimize"])
    trial = study.ask()
    assert compat.storage_of(study).get_study_id_from_name(study.study_name) == compat.study_id_of(study)
    compat.set_trial_system_attr(study, trial, "key", [1, 2])
    assert compat.live_system_attrs(trial)["key"] == [1, 2]
    assert compat.storage_of(study).get_trial(compat.trial_id_of(trial)).system_attrs["key"] == [1, 2]
    assert [t.number for t in compat.fresh_trials(study, states=(TrialState.RUNNING,))] == [0]
    compat.write_dashboard_constraints(trial, [0.5])
    from optuna_dashboard._serializer import CONSTRAINTS_KEY  # where the dashboard reads them

    assert compat.DASHBOARD_CONSTRAINTS_KEY == CONSTRAINTS_KEY
    assert compat.live_system_attrs(trial)[CONSTRAINTS_KEY] == [0.5]
    assert compat.fail_trial(study, trial) and not compat.fail_trial(study, trial)  # already finished
    assert study.trials[0].state == TrialState.FAIL
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=2)
    assert [t.number for t in compat.cached_trials(study, states=(TrialState.COMPLETE,))] == [1, 2]


def test_generation_key_and_nsga2_elites():
    sampler = TimestepSampler(k_min=2, population_size=4, num_parents=2, num_mutants=1, num_crossovers=1, seed=0)
    assert compat.generation_key(sampler) == "TimestepSampler:generation"
    study = optuna.create_study(directions=["minimize", "minimize"])
    for values in ([3.0, 1.0], [1.0, 3.0], [2.0, 2.0], [4.0, 4.0]):
        study.add_trial(optuna.trial.create_trial(values=values))
    elites = compat.nsga2_elites(study, study.trials, 3)
    assert sorted(t.number for t in elites) == [0, 1, 2]  # the dominated trial 3 is left out


def _running_trial_started(seconds_ago: float) -> FrozenTrial:
    started = datetime.datetime.now() - datetime.timedelta(seconds=seconds_ago)
    return FrozenTrial(
        number=0, state=TrialState.RUNNING, value=None, datetime_start=started, datetime_complete=None, params={},
        distributions={}, user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=0,
    )


def test_a_trial_without_any_heartbeat_is_stale_after_the_grace_period(tmp_path):
    url = f"sqlite:///{tmp_path / 'hb.db'}"
    ours = open_storage(url, heartbeat_interval=1)  # grace period 3 s
    plain = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=3)
    study_id = ours.create_new_study([optuna.study.StudyDirection.MINIMIZE])
    # A worker killed between creating its trial and its first heartbeat: no heartbeat row at all.
    silent_old = plain.create_new_trial(study_id, template_trial=_running_trial_started(10))
    silent_new = plain.create_new_trial(study_id, template_trial=_running_trial_started(0))
    # Our storage records a heartbeat the moment a trial runs.
    beating = ours.create_new_trial(study_id)
    assert compat.HeartbeatRDBStorage._trial_ids_with_heartbeat(ours, [silent_old, silent_new, beating]) == {beating}
    assert plain._get_stale_trial_ids(study_id) == []  # Optuna alone never fails the silent trial
    assert ours._get_stale_trial_ids(study_id) == [silent_old]


def test_an_interrupted_trial_is_not_logged_with_its_traceback(caplog):
    compat.quiet_interrupted_trials()

    def interrupted(trial):
        raise KeyboardInterrupt

    study = optuna.create_study()
    with caplog.at_level(logging.WARNING, logger="optuna"), pytest.raises(KeyboardInterrupt):
        study.optimize(interrupted, n_trials=1)
    assert study.trials[0].state == TrialState.FAIL
    assert not [r for r in caplog.records if "KeyboardInterrupt" in r.getMessage() or r.exc_info]
    with caplog.at_level(logging.WARNING, logger="optuna"):
        study.optimize(lambda trial: 1 / 0, n_trials=1, catch=(ZeroDivisionError,))
    assert [r for r in caplog.records if "ZeroDivisionError" in r.getMessage()], "other failures are still logged"


def test_the_searchs_model_studies_are_not_logged_and_other_in_memory_studies_are(caplog):
    compat.quiet_model_studies()
    with caplog.at_level(logging.INFO, logger="optuna"):
        optuna.storages.InMemoryStorage().create_new_study([StudyDirection.MINIMIZE], study_name=compat.MODEL_STUDY_NAME)
        optuna.create_study(study_name="users-own")
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if compat.MODEL_STUDY_NAME in m]
    assert [m for m in messages if "users-own" in m], "a user's own in-memory study is still logged"


def test_compute_hypervolume_is_optunas_exact_area():
    import numpy as np

    points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    # Staircase under (4, 4): widths 1, 1, 1 times heights 1, 2, 3.
    assert compat.compute_hypervolume(points, np.array([4.0, 4.0])) == 6.0
    assert compat.compute_hypervolume(points[:1], np.array([4.0, 4.0])) == 3.0
