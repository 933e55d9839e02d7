"""The Python API refuses bad input with a one-line OptunaDiffusionError and leaves stored studies alone.

The CLI's matrix of the same kind is in tests/test_cli.py (``BAD_INPUTS``); this one calls the library.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import numpy as np
import optuna
import pytest

from optuna_diffusion.blocks import check_plan_blocks, find_blocks
from optuna_diffusion.errors import ConfigError, ModelLoadError, OptunaDiffusionError, PlanError
from optuna_diffusion.models import load_diffusion_model
from optuna_diffusion.objective import PlanObjective
from optuna_diffusion.plan import Plan
from optuna_diffusion.runner import run_optimize
from optuna_diffusion.samplers import ArchitectureSampler, TimestepSampler
from optuna_diffusion.storage import open_storage
from optuna_diffusion.study_config import load_study_config, with_overrides

from .helpers import WRONG_PASSWORD, mysql_url_with_a_wrong_password, scheduler_config, tiny_unet


def raises_one_line(call, error_type=OptunaDiffusionError) -> str:
    """The message of the library error ``call()`` raises, checked to be one non-empty line."""
    with pytest.raises(error_type) as info:
        call()
    message = str(info.value)
    assert message.strip() and "\n" not in message, repr(message)
    return message


# --- study files -------------------------------------------------------------------------------


CONFIG_CASES = [
    ("malformed toml", "[model\nsource = 1\n", "malformed TOML"),
    ("unknown section", "[solver]\nname = 'ddim'\n", "unknown section [solver]"),
    ("unknown key", "[sampling]\nsolver = 'ddim'\nsteps = 4\n", "line 3: unknown key sampling.steps"),
    ("str for int", "[timesteps]\nk_min = 'four'\n", "timesteps.k_min must be int, got 'four'"),
    ("bool for int", "[sampling]\nbatch_size = true\n", "sampling.batch_size must be int, got True"),
    ("float for int", "[timesteps]\nk_max = 4.5\n", "timesteps.k_max must be int, got 4.5"),
    ("list for int", "[timesteps]\nk_min = [1, 2]\n", "timesteps.k_min must be int"),
    ("str for float", "[sampling]\nguidance_scale = 'high'\n", "sampling.guidance_scale must be int or float"),
    ("int for str", "[model]\nsource = 3\n", "model.source must be str"),
    ("section not a table", "sampling = 3\n", "[sampling] must be a table"),
    ("negative budget", "[architecture]\nmacs_budget = -1e9\n", "architecture.macs_budget must be positive"),
    ("k_max below k_min", "[timesteps]\nk_min = 6\nk_max = 4\n", "timesteps.k_max (4) is below k_min (6)"),
    ("nan budget", "[architecture]\nmacs_budget = nan\n", "line 2: architecture.macs_budget must be a finite number"),
    ("inf guidance", "[sampling]\nguidance_scale = inf\n", "sampling.guidance_scale must be a finite number"),
    ("not utf-8", b"[model]\nsource = '\xe9'\n", "is not UTF-8 text"),
    ("fidelity fraction", "[timesteps]\nlow_fidelity_fraction = 1.5\n", "line 2: timesteps.low_fidelity_fraction must be in [0, 1)"),
    ("negative cache", "[sampling]\nprefix_cache_mb = -1\n", "sampling.prefix_cache_mb must be >= 0"),
]


@pytest.mark.parametrize(
    "text, fragment",
    [
        pytest.param(text, fragment, id=case, marks=[pytest.mark.xfail(strict=True, reason=known[0])] if known else [])
        for case, text, fragment, *known in CONFIG_CASES
    ],
)
def test_a_bad_study_file_is_one_line_config_error(text, fragment, tmp_path):
    path = tmp_path / "study.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    message = raises_one_line(lambda: load_study_config(config=path), ConfigError)
    assert fragment in message and str(path) in message


def test_a_missing_study_file_or_preset_is_one_line(tmp_path):
    assert "does not exist" in raises_one_line(lambda: load_study_config(config=tmp_path / "nope.toml"), ConfigError)
    assert "unknown study 'nope'" in raises_one_line(lambda: load_study_config("nope"), ConfigError)


# --- plans -------------------------------------------------------------------------------------

PLAN_CASES = {
    "NaN step": (lambda: Plan((math.nan, 3)), "every time step must be an integer, got nan"),
    "inf step": (lambda: Plan((math.inf, 3)), "got inf"),
    "-inf step": (lambda: Plan((900, -math.inf)), "got -inf"),
    "numpy NaN step": (lambda: Plan(np.array([math.nan, 3.0])), "got np.float64(nan)"),
    "bool step": (lambda: Plan((True, 0)), "got True"),
    "str step": (lambda: Plan(("900", 3)), "got '900'"),
    "str steps": (lambda: Plan("900,3"), "timesteps must be a list of integers"),
    "int steps": (lambda: Plan(900), "timesteps must be a list of integers"),
    "no steps": (lambda: Plan(()), "at least one time step"),
    "NaN T": (lambda: Plan((900, 3), num_train_timesteps=math.nan), "num_train_timesteps must be an integer"),
    "bool T": (lambda: Plan((900, 3), num_train_timesteps=True), "num_train_timesteps must be an integer"),
    "str skips": (lambda: Plan((900, 3), skips="mid.attn.0"), "skips must be a list of block-name lists"),
    "int skips": (lambda: Plan((900, 3), skips=5), "skips must be a list of block-name lists"),
    "str skips of a step": (lambda: Plan((900, 3), skips=["mid.attn.0", []]), "skips of step 0 must be a list of block names"),
    "None reuses of a step": (lambda: Plan((900, 3), reuses=[[], None]), "reuses of step 1 must be a list of block names"),
    "int block name": (lambda: Plan((900, 3), skips=[[1], []]), "holds 1, which is not a block name"),
    "NaN block name": (lambda: Plan((900, 3), skips=[[], [math.nan]]), "holds nan, which is not a block name"),
    "dict NaN step": (lambda: Plan.from_dict({"timesteps": [math.nan, 3]}), "got nan"),
    "dict inf T": (lambda: Plan.from_dict({"timesteps": [900, 3], "num_train_timesteps": math.inf}), "got inf"),
    "dict str steps": (lambda: Plan.from_dict({"timesteps": "900, 3"}), "timesteps must be a list of integers"),
    "dict int skips": (lambda: Plan.from_dict({"timesteps": [900, 3], "skips": 5}), "skips must be a list"),
    "dict unknown field": (lambda: Plan.from_dict({"timesteps": [900, 3], "speed": 2}), "unknown plan fields ['speed']"),
    "list for dict": (lambda: Plan.from_dict([900, 3]), "must be an object with a 'timesteps' list"),
    "JSON NaN": (lambda: Plan.from_json('{"timesteps": [NaN, 3]}'), "got nan"),
    "JSON Infinity": (lambda: Plan.from_json('{"timesteps": [Infinity, 3]}'), "got inf"),
    "not JSON": (lambda: Plan.from_json("{timesteps: [900, 3]"), "plan is not valid JSON"),
}


@pytest.mark.parametrize("case", list(PLAN_CASES))
def test_a_malformed_plan_is_one_line_plan_error(case):
    make, fragment = PLAN_CASES[case]
    assert fragment in raises_one_line(make, PlanError)


@functools.lru_cache(maxsize=None)
def tiny_blocks():
    return find_blocks(tiny_unet())


BLOCK_CASES = {
    "unknown block": (Plan((900, 3), skips=[["mid.nope"], []]), "unknown block 'mid.nope' at step 0"),
    "unknown reused block": (Plan((900, 3), reuses=[[], ["up.9"]]), "unknown block 'up.9' at step 1"),
    "skipped branch": (Plan((900, 3), skips=[[], ["up.0"]]), "'up.0' can only be reused, not skipped"),
    "block inside a reused branch": (Plan((900, 3), skips=[[], ["mid.attn.0"]], reuses=[[], ["up.0"]]), "inside branch 'up.0'"),
}


@pytest.mark.parametrize("case", list(BLOCK_CASES))
def test_a_plan_naming_blocks_the_model_lacks_is_one_line(case):
    plan, fragment = BLOCK_CASES[case]
    assert fragment in raises_one_line(lambda: check_plan_blocks(plan, tiny_blocks()), PlanError)


# --- models ------------------------------------------------------------------------------------


def _model_folder(tmp_path: Path, damage: str) -> Path:
    from diffusers import DDPMScheduler

    folder = tmp_path / "model"
    tiny_unet().save_pretrained(folder / "unet")
    DDPMScheduler(**scheduler_config()).save_pretrained(folder / "scheduler")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    if damage == "no weights":
        weights.unlink()
    elif damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:4000])
    elif damage == "garbage weights":
        weights.write_bytes(np.random.default_rng(0).bytes(4000))
    elif damage == "no unet config":
        (folder / "unet" / "config.json").unlink()
    elif damage == "bad unet config":
        (folder / "unet" / "config.json").write_text("{not json")
    elif damage == "no scheduler":
        for path in (folder / "scheduler").iterdir():
            path.unlink()
    return folder


MODEL_CASES = {
    "no weights": "has no UNet weights",
    "truncated weights": "Unable to load weights",
    "garbage weights": "Unable to load weights",
    "no unet config": "has no unet/config.json or transformer/config.json or config.json",
    "bad unet config": "is not a valid JSON file",
    "no scheduler": "has no scheduler/scheduler_config.json",
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_a_damaged_model_folder_is_one_line_model_load_error(case, tmp_path, capfd):
    folder = _model_folder(tmp_path, case)
    capfd.readouterr()
    message = raises_one_line(lambda: load_diffusion_model(str(folder)), ModelLoadError)
    assert MODEL_CASES[case] in message and str(folder) in message
    if case == "no weights":  # found before diffusers logs its own two warnings about it
        assert capfd.readouterr().err == ""


def test_a_missing_model_folder_is_one_line(tmp_path):
    assert "does not exist" in raises_one_line(lambda: load_diffusion_model(str(tmp_path / "nope")), ModelLoadError)


# --- samplers and the objective ----------------------------------------------------------------

CONSTRUCTOR_CASES = {
    "k_min str": (lambda: TimestepSampler(k_min="4"), "`k_min` must be int, got '4'"),
    "k_min bool": (lambda: TimestepSampler(k_min=True), "`k_min` must be int, got True"),
    "k_min float": (lambda: TimestepSampler(k_min=4.0), "`k_min` must be int, got 4.0"),
    "k_min zero": (lambda: TimestepSampler(k_min=0), "`k_min` must be positive, got 0"),
    "k_max below k_min": (lambda: TimestepSampler(k_min=4, k_max=3), "`k_max` must be >= 4, got 3"),
    "T inf": (lambda: TimestepSampler(k_min=2, num_train_timesteps=math.inf), "`num_train_timesteps`"),
    "population float": (lambda: TimestepSampler(k_min=2, population_size=4.5), "`population_size`"),
    "mutation_prob NaN": (lambda: TimestepSampler(k_min=2, mutation_prob=math.nan), "`mutation_prob` must be a finite number, got nan"),
    "mutation_prob str": (lambda: TimestepSampler(k_min=2, mutation_prob="0.5"), "`mutation_prob` must be int or float, got '0.5'"),
    "seed negative": (lambda: TimestepSampler(k_min=2, seed=-1), "`seed` must be >= 0, got -1"),
    "seed float": (lambda: TimestepSampler(k_min=2, seed=1.5), "`seed` must be int, got 1.5"),
    "initial plans str": (lambda: TimestepSampler(k_min=2, initial_plans="900,3"), "`initial_plans` must be a list"),
    "initial plan NaN": (lambda: TimestepSampler(k_min=2, initial_plans=[[900, math.nan]]), "got nan"),
    "initial plan int": (lambda: TimestepSampler(k_min=2, initial_plans=[5]), "must be a list of integers, got 5"),
    "blocks str": (lambda: ArchitectureSampler(source_study=None, blocks="up.0", k_min=2), "`blocks` must be a list of Block"),
    "blocks names": (lambda: ArchitectureSampler(source_study=None, blocks=["up.0"], k_min=2), "`blocks` must be a non-empty list of Block"),
    "source study int": (lambda: ArchitectureSampler(source_study=3, blocks=tiny_blocks(), k_min=2), "`source_study` must be a study name"),
    "skip_prob NaN": (lambda: ArchitectureSampler(source_study=None, blocks=tiny_blocks(), k_min=2, skip_prob=math.nan), "`skip_prob`"),
    "initial plan with unknown block": (
        lambda: ArchitectureSampler(source_study=None, blocks=tiny_blocks(), initial_plans=[Plan((900, 3), skips=[["nope"], []])]),
        "unknown block 'nope'",
    ),
    "initial plan not a Plan": (
        lambda: ArchitectureSampler(source_study=None, blocks=tiny_blocks(), initial_plans=[(900, 3)]), "must be Plan objects"
    ),
    "num_samples str": (lambda: PlanObjective(None, num_samples="32"), "`num_samples` must be int, got '32'"),
    "num_samples float": (lambda: PlanObjective(None, num_samples=32.0), "`num_samples` must be int, got 32.0"),
    "macs_budget NaN": (lambda: PlanObjective(None, num_samples=32, macs_budget=math.nan), "`macs_budget` must be a finite number, got nan"),
    "macs_budget str": (lambda: PlanObjective(None, num_samples=32, macs_budget="1e9"), "`macs_budget` must be int or float, got '1e9'"),
    "macs_budget bool": (lambda: PlanObjective(None, num_samples=32, macs_budget=True), "`macs_budget` must be int or float, got True"),
    "objectives with a number": (lambda: PlanObjective(None, num_samples=32, objectives=("fid", 3)), "`objectives`"),
}


@pytest.mark.parametrize("case", list(CONSTRUCTOR_CASES))
def test_a_wrong_argument_type_is_one_line_config_error(case):
    make, fragment = CONSTRUCTOR_CASES[case]
    assert fragment in raises_one_line(make)


def test_a_sampler_argument_and_its_study_setting_break_the_same_rule_in_the_same_words(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text("[timesteps]\npopulation_size = 1\n")
    from_file = raises_one_line(lambda: load_study_config(config=path), ConfigError)
    from_python = raises_one_line(lambda: TimestepSampler(k_min=2, population_size=1))
    assert "timesteps.population_size must be >= 2, got 1" in from_file
    assert from_python == "`population_size` must be >= 2, got 1"


def test_sampler_arguments_take_numpy_numbers_as_python_ones():
    sampler = TimestepSampler(k_min=np.int64(2), k_max=np.int32(3), mutation_prob=np.float32(0.5), seed=np.int64(1))
    assert sampler.space.k_range == (2, 3)
    assert "`k_min` must be int, got" in raises_one_line(lambda: TimestepSampler(k_min=np.True_))  # a bool is no count


# --- storages and run_optimize -----------------------------------------------------------------


def _trials(url: str) -> dict:
    """Every study of ``url`` with its trials (number, state, values, params, user attributes)."""
    return {
        s.study_name: [
            (t.number, t.state, t.values, t.params, t.user_attrs)
            for t in optuna.load_study(study_name=s.study_name, storage=url).trials
        ]
        for s in optuna.get_all_study_summaries(url)
    }


def _config(**changes):
    config = with_overrides(load_study_config("digits"), num_samples=8, batch_size=8)
    return dataclasses.replace(config, **changes)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A real two-trial optuna-diffusion study (stage 1 of digits) in SQLite."""
    url = f"sqlite:///{tmp_path_factory.mktemp('stored') / 'digits.db'}"
    run_optimize(_config(), url, stages=("timesteps",), n_trials=2, echo=lambda line: None)
    return url


def _garbage_sqlite(tmp_path: Path, stored: str) -> tuple:
    path = tmp_path / "garbage.db"
    path.write_bytes(np.random.default_rng(0).bytes(8192))
    return _config(), f"sqlite:///{path}", {}


def _foreign_study(tmp_path: Path, stored: str) -> tuple:
    url = f"sqlite:///{tmp_path / 'foreign.db'}"
    foreign = optuna.create_study(study_name="digits-timesteps", storage=url)
    foreign.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    return _config(), url, {}


def _foreign_study_of_two_objectives(tmp_path: Path, stored: str) -> tuple:
    url = f"sqlite:///{tmp_path / 'foreign2.db'}"
    foreign = optuna.create_study(study_name="digits-timesteps", storage=url, directions=["minimize", "minimize"])
    foreign.optimize(lambda trial: (trial.suggest_float("x", 0, 1), 1.0), n_trials=1)
    return _config(), url, {}


def _no_weights(tmp_path: Path, stored: str) -> tuple:
    return with_overrides(_config(), model=str(_model_folder(tmp_path, "no weights"))), stored, {}


RUN_CASES = {
    "corrupted sqlite": (_garbage_sqlite, "file is not a database"),
    "study of another tool": (_foreign_study, "'digits-timesteps' in this storage was not created by optuna-diffusion"),
    "two-objective study of another tool": (_foreign_study_of_two_objectives, "was not created by optuna-diffusion"),
    "wrong password": (lambda tmp_path, stored: (_config(), mysql_url_with_a_wrong_password(), {}), "Access denied"),
    "unknown storage dialect": (lambda tmp_path, stored: (_config(), "nosuchdb://x/y", {}), "cannot open storage nosuchdb://x/y"),
    "model without weights": (_no_weights, "has no UNet weights"),
    "impossible budget": (
        lambda tmp_path, stored: (_config(architecture=dataclasses.replace(_config().architecture, macs_budget=10.0)), stored, {"stages": ("architecture",)}),
        "below the cheapest possible plan",
    ),
    "unknown device": (lambda tmp_path, stored: (_config(), stored, {"device": "tpu9"}), "unknown device 'tpu9'"),
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_run_optimize_on_bad_input_is_one_line_and_changes_no_study(case, stored, tmp_path):
    make, fragment = RUN_CASES[case]
    config, url, kwargs = make(tmp_path, stored)
    path = Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None
    readable = path is not None and path.read_bytes().startswith(b"SQLite format 3\x00")
    before = (_trials(stored), _trials(url) if readable else None, path.read_bytes() if path and not readable else None)
    message = raises_one_line(lambda: run_optimize(config, url, n_trials=1, echo=lambda line: None, **kwargs))
    assert fragment in message and WRONG_PASSWORD not in message
    after = (_trials(stored), _trials(url) if readable else None, path.read_bytes() if path and not readable else None)
    assert after == before
    assert len(before[0]["digits-timesteps"]) == 2


def test_open_storage_with_a_wrong_password_is_one_line_and_hides_it():
    url = mysql_url_with_a_wrong_password()
    message = raises_one_line(lambda: open_storage(url), ConfigError)
    assert message.startswith("cannot open storage mysql+pymysql://root:***@127.0.0.1:3306/test: ")
    assert "Access denied for user 'root'" in message and WRONG_PASSWORD not in message
