"""A start that fails with a one-line error after the storage opened leaves no new study file behind.

Opening a storage creates its SQLite or journal file (and a run its ``NAME-artifacts/`` folder); an
error raised after that -- stage 2 without stage 1, a plan the model cannot run -- must remove what
this run created, and never anything that was there before.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest

from optuna_diffusion.errors import ConfigError
from optuna_diffusion.evaluation import PlanEvaluator
from optuna_diffusion.runner import run_optimize
from optuna_diffusion.study_config import load_study_config, with_overrides


def _config(name: str = "digits"):
    config = with_overrides(load_study_config("digits"), num_samples=8, batch_size=8)
    return dataclasses.replace(config, name=name)


def _run(config, url: str, **kwargs) -> str:
    with pytest.raises(ConfigError) as error:
        run_optimize(config, url, n_trials=1, echo=lambda line: None, **kwargs)
    assert "\n" not in str(error.value)
    return str(error.value)


def _stage_two_first(tmp_path: Path, monkeypatch) -> tuple[dict, str]:
    return {"stages": ("architecture",)}, "source study 'digits-timesteps' is not in the storage"


def _a_plan_the_model_cannot_run(tmp_path: Path, monkeypatch) -> tuple[dict, str]:
    def refuse(self, plan, num_samples, **kwargs):
        raise ConfigError(f"the model cannot run {plan}")

    # raised inside the first trial, which is stored failed
    monkeypatch.setattr(PlanEvaluator, "evaluate", refuse)
    monkeypatch.setattr(PlanEvaluator, "evaluate_progressively", refuse)
    return {"stages": ("timesteps",)}, "the model cannot run"


CASES = {"stage 2 before stage 1": _stage_two_first, "a plan the model cannot run": _a_plan_the_model_cannot_run}


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_failed_start_leaves_no_new_file(case, storage, tmp_path, monkeypatch):
    kwargs, fragment = CASES[case](tmp_path, monkeypatch)
    url = f"sqlite:///{tmp_path / 'digits.db'}" if storage == "sqlite" else str(tmp_path / "digits.journal")
    assert fragment in _run(_config(), url, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_start_keeps_what_was_there_before(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    run_optimize(_config(), url, stages=("timesteps",), n_trials=1, echo=lambda line: None)  # a study with results
    before = sorted(path.name for path in tmp_path.iterdir())
    assert before == ["digits-artifacts", "studies.db"]
    assert "source study 'other-timesteps' is not in the storage" in _run(_config("other"), url, stages=("architecture",))
    assert sorted(path.name for path in tmp_path.iterdir()) == before
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["digits-timesteps", "other-architecture"]
    assert len(optuna.load_study(study_name="digits-timesteps", storage=url).trials) == 1


def test_a_failed_start_keeps_an_empty_storage_that_was_there_before(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.storages.RDBStorage(url).engine.dispose()  # tables, no study
    (tmp_path / "digits-artifacts").mkdir()
    _run(_config(), url, stages=("architecture",))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["digits-artifacts", "empty.db"]


def test_a_flux_dev_study_that_cannot_shift_its_baseline_leaves_no_new_file(tmp_path, monkeypatch):
    """The issue's case: the scheduler baseline of a dynamic-shifting study raised after the storage opened
    (mu is now computed; without it the same one-line error must still leave nothing behind)."""
    from optuna_diffusion.families import FluxFamily

    from .tiny_pipelines import tiny_flux

    folder = tmp_path / "models" / "flux-dev"
    tiny_flux(guidance_embeds=True, dynamic_shifting=True).save_pretrained(folder, safe_serialization=True)
    config = with_overrides(load_study_config("flux-schnell"), model=str(folder), image_size=16, num_samples=2,
                            batch_size=2)
    config = dataclasses.replace(config, fitness=dataclasses.replace(config.fitness, metric="teacher", teacher_steps=4))
    monkeypatch.setattr(FluxFamily, "shift_mu", lambda self, model: None)
    study = tmp_path / "study"
    study.mkdir()
    message = _run(config, f"sqlite:///{study / 'flux.db'}", stages=("timesteps",))
    assert "uses dynamic shifting: the scheduler baseline needs mu" in message
    assert list(study.iterdir()) == []
