"""Storage behaviour the CLI relies on: a killed worker's trial is retried on the next run."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import optuna
import pytest

from optuna_diffusion.storage import open_storage

from .workers import SAFETY_NET, environment, wait_out_the_grace_period


@pytest.mark.slow
def test_a_trial_killed_with_sigkill_is_retried_when_the_search_resumes(tmp_path):
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    worker = textwrap.dedent(
        f"""
        import optuna
        from optuna_diffusion import faults
        from optuna_diffusion.storage import open_storage
        study = optuna.create_study(study_name="s", storage=open_storage({url!r}, heartbeat_interval=1))
        study.optimize(lambda trial: faults.reach("trial-running") or 1.0, n_trials=1)
        """
    )
    killed = subprocess.run([sys.executable, "-c", worker], env=environment("kill@trial-running"), timeout=SAFETY_NET)
    died = time.monotonic()  # no heartbeat after this
    assert killed.returncode == -signal.SIGKILL
    running = optuna.load_study(study_name="s", storage=url).trials[0]
    assert running.state == optuna.trial.TrialState.RUNNING
    wait_out_the_grace_period(died)
    study = optuna.load_study(study_name="s", storage=open_storage(url, heartbeat_interval=1))
    study.optimize(lambda trial: 2.0, n_trials=1)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert study.trials[1].system_attrs.get("failed_trial") == 0  # the retry of trial 0


def test_a_study_another_worker_has_just_created_but_not_yet_marked_is_joined(tmp_path):
    # Two workers starting together: one has created NAME-architecture, not yet marked it as ours.
    from optuna_diffusion.study import MARKER, open_study
    from optuna_diffusion.study_config import load_study_config

    config = load_study_config("digits")
    storage = open_storage(f"sqlite:///{tmp_path / 'race.db'}")
    optuna.create_study(study_name=config.stage_study_name("architecture"), storage=storage, directions=["minimize"] * 2)

    study = open_study(config, "architecture", storage)

    assert study.user_attrs[MARKER]["stage"] == "architecture"
    assert study.metric_names == ["FID", "MACs"]


def test_a_worker_that_marks_and_starts_a_trial_between_our_reads_is_still_recognised(tmp_path, monkeypatch):
    # The other worker's marker and first trial land between two reads of ours: whatever we read
    # first, the study must not look like "trials but no marker" (foreign).
    from optuna_diffusion.study import MARKER, open_study
    from optuna_diffusion.study_config import load_study_config

    config = load_study_config("digits")
    storage = open_storage(f"sqlite:///{tmp_path / 'race.db'}")
    study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE] * 2, config.stage_study_name("timesteps"))

    def other_worker_marks_and_starts_a_trial() -> None:
        storage.set_study_user_attr(study_id, MARKER, {"stage": "timesteps", "config": config.to_dict()})
        storage.create_new_trial(study_id)

    reads: list[str] = []
    for method in ("get_n_trials", "get_all_trials", "get_study_user_attrs", "get_all_studies"):
        original = getattr(storage, method)

        def read(*args, _original=original, _method=method, **kwargs):
            result = _original(*args, **kwargs)
            if not reads:
                other_worker_marks_and_starts_a_trial()
            reads.append(_method)
            return result

        monkeypatch.setattr(storage, method, read)

    study = open_study(config, "timesteps", storage)

    assert reads, "open_study read nothing before joining"
    assert study.user_attrs[MARKER]["stage"] == "timesteps"
    assert len(study.trials) == 1
