"""The command line: optimize/resume, show, export, evaluate, the dashboard, and one-line errors."""

from __future__ import annotations

import functools
import json
import shutil
import threading
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from optuna_diffusion.cli import app

from .helpers import mysql_url_with_a_wrong_password, scheduler_config, tiny_unet

runner = CliRunner()
FAST = ["--n-trials", "3", "--num-samples", "16", "--batch-size", "16"]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def _values(storage: str, name: str) -> list[tuple]:
    study = optuna.load_study(study_name=name, storage=storage)
    return [(t.number, t.state, t.values) for t in study.trials]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    storage = f"sqlite:///{folder / 'digits.db'}"
    result = invoke("optimize", "--study", "digits", "--storage", storage, *FAST)
    assert result.exit_code == 0, result.output
    return folder, storage, result.output


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("optimize", "show", "export", "evaluate", "baselines", "dashboard", "zoo"):
        assert command in result.output


def test_optimize_runs_both_stages_and_prints_the_front(digits_run):
    folder, storage, output = digits_run
    assert "stage timesteps" in output and "stage architecture" in output
    assert "GMACs" in output and f"stored in {storage}" in output
    for stage in ("timesteps", "architecture"):
        study = optuna.load_study(study_name=f"digits-{stage}", storage=storage)
        assert study.metric_names == ["FID", "MACs"]
        complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        assert len(complete) == 3
        assert all({"timesteps", "macs", "num_samples"} <= set(t.user_attrs) for t in complete)
        # The preset scores a quarter of the samples first; too few trials yet to stop any early.
        assert all(t.user_attrs["fidelity"] == "full" and "fid_low" in t.user_attrs for t in complete)
    assert list((folder / "digits-artifacts").iterdir()), "each trial uploads a sample grid"


def test_running_again_resumes_and_keeps_completed_trials(digits_run, tmp_path):
    folder, _, _ = digits_run
    shutil.copy(folder / "digits.db", tmp_path / "digits.db")  # the shared run stays as other tests expect it
    storage = f"sqlite:///{tmp_path / 'digits.db'}"
    before = _values(storage, "digits-timesteps")
    result = invoke("optimize", "--study", "digits", "--storage", storage, "--stage", "timesteps", *FAST[2:], "--n-trials", "4")
    assert result.exit_code == 0, result.output
    after = _values(storage, "digits-timesteps")
    assert after[: len(before)] == before
    assert sum(state == optuna.trial.TrialState.COMPLETE for _, state, _ in after) == 4


def test_show_export_and_evaluate_the_exported_plan(digits_run, tmp_path):
    _, storage, _ = digits_run
    shown = invoke("show", "--study", "digits", "--storage", storage, "--stage", "architecture")
    assert shown.exit_code == 0 and "digits-architecture" in shown.output
    out = tmp_path / "plan.json"
    exported = invoke("export", "--study", "digits", "--storage", storage, "--out", str(out))
    assert exported.exit_code == 0, exported.output
    data = json.loads(out.read_text())
    # The best plan over both stages (ties: fewer MACs, then the earlier trial; stage 2 re-evaluates
    # stage 1's front, so equal FIDs happen), and the output says where it comes from.
    (fid, _, number), stage = min(
        ((t.values[0], t.values[1], t.number), stage)
        for stage in ("timesteps", "architecture")
        for t in optuna.load_study(study_name=f"digits-{stage}", storage=storage).trials
        if t.values and t.user_attrs.get("fidelity") != "low"
    )
    assert (data["fid"], data["stage"], data["trial"]) == (fid, stage, number)
    assert f"trial {number} of digits-{stage} (stage {stage})" in exported.output
    evaluated = invoke("evaluate", str(out), "--study", "digits", "--samples", "16")
    assert evaluated.exit_code == 0, evaluated.output
    assert "FID" in evaluated.output and str(data["plan"]["timesteps"][0]) in evaluated.output


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _save_tiny_model(folder, num_class_embeds):
    from diffusers import DDPMScheduler

    tiny_unet(num_class_embeds=num_class_embeds).save_pretrained(folder / "unet")
    DDPMScheduler(**scheduler_config()).save_pretrained(folder / "scheduler")
    return str(folder)


def _foreign_study_storage(tmp_path) -> str:
    """A fresh SQLite storage holding 'digits-timesteps' made with plain Optuna, with two trials."""
    storage = f"sqlite:///{tmp_path / 'foreign.db'}"
    foreign = optuna.create_study(study_name="digits-timesteps", storage=storage)
    foreign.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    return storage


def _model_without_weights(tmp_path) -> str:
    folder = Path(_save_tiny_model(tmp_path / "no-weights", 11))
    for path in (folder / "unet").iterdir():
        if path.name != "config.json":
            path.unlink()
    return str(folder)


def _garbage_sqlite(tmp_path) -> str:
    path = tmp_path / "garbage.db"
    path.write_bytes(np.random.default_rng(0).bytes(8192))
    return f"sqlite:///{path}"


def _bad_input(case: str, tmp_path, storage):
    """(CLI arguments, part of the one-line error) of a bad-input case; its files are made in ``tmp_path``."""
    w = functools.partial(_write, tmp_path)
    cases = {
        "unknown study": lambda: (["optimize", "--study", "nope", "--storage", storage], "unknown study 'nope'"),
        "malformed toml": lambda: (["optimize", "--config", w("bad.toml", "[model\nsource = 1\n"), "--storage", storage], "line 1"),
        "unknown key": lambda: (["optimize", "--config", w("key.toml", "[sampling]\nsolver = 'ddim'\nsteps = 4\n"), "--storage", storage], "line 3: unknown key sampling.steps"),
        "wrong type": lambda: (["optimize", "--config", w("type.toml", "[timesteps]\n\nk_min = 'four'\n"), "--storage", storage], "line 3: timesteps.k_min must be int"),
        "missing model": lambda: (["optimize", "--study", "imagenet64", "--storage", storage], "--model"),
        "guidance on unconditional": lambda: (
            ["optimize", "--config", w("guided.toml", f'[model]\nsource = "{_save_tiny_model(tmp_path / "uncond", None)}"\n[sampling]\nguidance_scale = 3.0\n'), "--storage", storage],
            "guidance_scale = 3.0 needs a class-conditional",
        ),
        "out of range plan": lambda: (["evaluate", w("plan.json", '{"timesteps": [1200, 3]}'), "--study", "digits"], "outside [0, 999]"),
        "non-integer plan": lambda: (["evaluate", w("plan2.json", '{"timesteps": [900.5, 3]}'), "--study", "digits"], "must be an integer"),
        "NaN in plan": lambda: (["evaluate", w("nan.json", '{"timesteps": [NaN, 3]}'), "--study", "digits"], "must be an integer, got nan"),
        "inf in plan": lambda: (["evaluate", w("inf.json", '{"plan": {"timesteps": [Infinity, 3]}}'), "--study", "digits"], "must be an integer, got inf"),
        "unknown block in plan": lambda: (
            ["evaluate", w("block.json", '{"timesteps": [900, 3], "skips": [["mid.nope"], []]}'), "--study", "digits"],
            "unknown block 'mid.nope'",
        ),
        "model without weights": lambda: (
            ["optimize", "--study", "digits", "--model", _model_without_weights(tmp_path), "--storage", storage, *FAST],
            "has no UNet weights",
        ),
        "corrupted sqlite": lambda: (["optimize", "--study", "digits", "--storage", _garbage_sqlite(tmp_path), *FAST], "file is not a database"),
        "study of another tool": lambda: (
            ["optimize", "--study", "digits", "--storage", _foreign_study_storage(tmp_path), *FAST],
            "'digits-timesteps' in this storage was not created by optuna-diffusion",
        ),
        "unreachable storage": lambda: (["optimize", "--study", "digits", "--storage", "postgresql+psycopg2://nobody:secret@127.0.0.1:1/none"], "cannot open storage"),
        "wrong password": lambda: (["optimize", "--study", "digits", "--storage", mysql_url_with_a_wrong_password(), *FAST], "Access denied"),
        "impossible budget": lambda: (
            ["optimize", "--config", w("budget.toml", '[model]\nsource = "digits"\n[sampling]\nnum_classes = 10\n[architecture]\nmacs_budget = 10\n'), "--storage", storage, "--stage", "architecture"],
            "below the cheapest possible plan",
        ),
    }
    return cases[case]()


def _stored_state(folder) -> dict:
    """Every SQLite file under ``folder``: its studies' trials if Optuna can read it, else its bytes."""
    state = {}
    for path in sorted(folder.rglob("*.db")):
        data = path.read_bytes()
        if data.startswith(b"SQLite format 3\x00"):
            url = f"sqlite:///{path}"
            state[path.name] = {s.study_name: _values(url, s.study_name) for s in optuna.get_all_study_summaries(url)}
        else:
            state[path.name] = data
    return state


def test_an_absent_or_unknown_device_is_one_line(tmp_path):
    import torch

    storage = f"sqlite:///{tmp_path / 'x.db'}"
    for device, message in (("tpu9", "unknown device 'tpu9'"), ("cuda", "no CUDA GPU")):
        if device == "cuda" and torch.cuda.is_available():
            continue
        result = invoke("optimize", "--study", "digits", "--storage", storage, "--device", device)
        assert result.exit_code == 2 and result.output.count("\n") == 1 and message in result.output, result.output


BAD_INPUTS = [
    "unknown study", "malformed toml", "unknown key", "wrong type", "missing model", "guidance on unconditional",
    "out of range plan", "non-integer plan", "NaN in plan", "inf in plan", "unknown block in plan",
    "model without weights", "corrupted sqlite", "study of another tool", "unreachable storage", "wrong password",
    "impossible budget",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_nonzero_and_leaves_the_study_alone(case, digits_run, tmp_path, capfd):
    folder, storage, _ = digits_run
    args, message = _bad_input(case, tmp_path, storage)
    before = _stored_state(folder), _stored_state(tmp_path)
    capfd.readouterr()
    result = invoke(*args)
    leaked = capfd.readouterr()  # what bypassed click's streams (library loggers, warnings) also reaches the user
    assert result.exit_code == 2, result.output
    lines = (result.output + leaked.out + leaked.err).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "secret" not in result.output
    assert (_stored_state(folder), _stored_state(tmp_path)) == before


@pytest.mark.slow
def test_dashboard_serves_the_study_and_its_pareto_trials(digits_run):
    from optuna_diffusion.dashboard import dashboard_server
    from optuna_diffusion.study_config import load_study_config

    _, storage, _ = digits_run
    server = dashboard_server(load_study_config("digits"), storage, port=0)  # bound: requests queue up already
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        try:
            studies = json.load(urllib.request.urlopen(f"{base}/api/studies", timeout=60))
            names = {s["study_name"]: s["study_id"] for s in studies["study_summaries"]}
            detail = json.load(urllib.request.urlopen(f"{base}/api/studies/{names['digits-timesteps']}", timeout=60))
        except OSError as error:
            pytest.fail(f"the dashboard on {base} did not answer: {error}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=60)
    assert {"digits-timesteps", "digits-architecture"} <= set(names)
    stored = optuna.load_study(study_name="digits-timesteps", storage=storage)
    assert sorted(t["number"] for t in detail["best_trials"]) == sorted(t.number for t in stored.best_trials)
    assert detail["objective_names"] == ["FID", "MACs"]
    assert any(t["artifacts"] for t in detail["trials"])
    assert not thread.is_alive(), "the server stopped"


@pytest.mark.slow
def test_zoo_train_writes_a_loadable_model_folder(tmp_path):
    from optuna_diffusion.models import load_diffusion_model

    result = invoke("zoo", "train", "digits", "--out", str(tmp_path), "--steps", "2")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "training.json").read_text())
    assert report["diffusion"]["steps"] == 2 and report["feature_net"]["held_out_accuracy"] > 0.9
    model = load_diffusion_model(str(tmp_path))
    assert model.num_class_embeds == 11 and model.sample_shape == (1, 8, 8)
    assert invoke("zoo", "train", "cifar", "--out", str(tmp_path)).exit_code == 2


def test_export_takes_the_best_plan_with_exactly_k_steps(digits_run):
    _, storage, _ = digits_run
    plans = {
        stage: [t for t in optuna.load_study(study_name=f"digits-{stage}", storage=storage).trials if t.values]
        for stage in ("timesteps", "architecture")
    }
    k = len(plans["timesteps"][0].user_attrs["timesteps"])
    exported = invoke("export", "--study", "digits", "--storage", storage, "--steps", str(k))
    assert exported.exit_code == 0, exported.output
    data = json.loads(exported.stdout)
    assert len(data["plan"]["timesteps"]) == k
    with_k = [t.values[0] for ts in plans.values() for t in ts if len(t.user_attrs["timesteps"]) == k]
    assert data["fid"] == min(with_k)
    missing = invoke("export", "--study", "digits", "--storage", storage, "--steps", "9")
    assert missing.exit_code == 2 and missing.output.count("\n") == 1 and "exactly 9 steps" in missing.output


def test_show_hides_front_rows_worse_than_every_baseline_unless_all(digits_run):
    _, storage, _ = digits_run
    default = invoke("show", "--study", "digits", "--storage", storage)
    everything = invoke("show", "--study", "digits", "--storage", storage, "--all")
    assert default.exit_code == everything.exit_code == 0
    rows = lambda output: [line for line in output.splitlines()[2:] if line.split()[0].isdigit()]  # noqa: E731
    assert len(rows(default.output)) <= len(rows(everything.output))
    if len(rows(default.output)) < len(rows(everything.output)):
        assert "front rows hidden" in default.output and "--all" in default.output
    study = optuna.load_study(study_name="digits-timesteps", storage=storage)
    assert study.user_attrs["optuna_diffusion:baseline_fids"], "stage 1 stores the baselines' FIDs"


def test_bad_input_in_a_fresh_folder_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("optimize", "--study", "digits", "--model", "/nonexistent/model")
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "does not exist" in result.output
    study_file = _write(tmp_path, "typo_value.toml", '[model]\nsource = "digits"\n[sampling]\nsolver = "dimm"\n')
    result = invoke("optimize", "--config", study_file)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert f"{study_file}, line 4: sampling.solver must be one of ddim" in result.output and "got 'dimm'" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["typo_value.toml"], "no storage, no artifacts"


@pytest.mark.parametrize(
    "args, message",
    [
        (["optimize", "--study", "digits", "--n-trials", "-5"], "--n-trials must be positive, got -5"),
        (["optimize", "--study", "digits", "--n-trials", "many"], "Invalid value for '--n-trials'"),
        (["optimize", "--study", "digits", "--batch-size", "0"], "sampling.batch_size must be positive, got 0"),
        (["optimize", "--no-such-option"], "No such option"),
        (["optimze"], "No such command 'optimze'"),
    ],
)
def test_option_errors_are_the_same_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_the_traceback_behind_a_one_line_error():
    result = invoke("--debug", "optimize", "--study", "nope")
    assert result.exit_code == 2 and "Traceback" in result.output and "error: unknown study 'nope'" in result.output
    assert "Traceback" not in invoke("optimize", "--study", "nope").output


def test_the_samplers_import_from_the_top_level():
    import optuna_diffusion
    from optuna_diffusion.samplers import ArchitectureSampler, TimestepSampler

    assert optuna_diffusion.TimestepSampler is TimestepSampler
    assert optuna_diffusion.ArchitectureSampler is ArchitectureSampler


def test_plot_writes_the_fronts_and_baselines_as_png_and_html(digits_run, tmp_path):
    _, storage, _ = digits_run
    out = tmp_path / "front"
    result = invoke("plot", "--study", "digits", "--storage", storage, "--out", str(out))
    assert result.exit_code == 0, result.output
    png, html = out.with_suffix(".png"), out.with_suffix(".html")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = html.read_text()
    assert "stage 1 (time steps): front" in page and "stage 2 (skips and reuses): front" in page
    assert "baseline: uniform" in page
    missing = invoke("plot", "--study", "digits", "--storage", f"sqlite:///{tmp_path / 'none.db'}")
    assert missing.exit_code == 2 and missing.output.count("\n") == 1
