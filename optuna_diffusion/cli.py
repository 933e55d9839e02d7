"""The ``optuna-diffusion`` command line: thin commands over the library.

Every error a user can cause is one line on stderr, ``error: ...``, and a non-zero exit code
(:mod:`optuna_diffusion.cli_errors`); ``--debug`` shows the traceback behind a library error. The
``zoo`` commands live in :mod:`optuna_diffusion.cli_zoo`.

Commands import the library inside their bodies: the package loads its names lazily (PEP 562), so
``--help`` imports neither torch nor Optuna (``tests/test_import_cycles.py`` checks it).
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .cli_errors import (
    OneLineErrors,
    exit_interrupted,
    first_interrupt,
    one_line_errors,
    positive,
    show_tracebacks,
    thread_errors_in_one_line,
)
from .cli_zoo import zoo_app
from .errors import ConfigError
from .plan import Plan

app = typer.Typer(
    help="Search few-step diffusion sampling plans (time steps and skipped or reused blocks) with Optuna.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=OneLineErrors,
)
app.add_typer(zoo_app, name="zoo")


@app.callback()
def _setup(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback behind a one-line error.")] = False,
) -> None:
    show_tracebacks(debug)
    _quiet_library_warnings()


def _quiet_library_warnings() -> None:
    """Optuna marks heartbeats and metric names experimental; that is noise for CLI users."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning)


# --------------------------------------------------------------------------------------------------
# studies
# --------------------------------------------------------------------------------------------------

StudyOption = Annotated[Optional[str], typer.Option("--study", help="Preset study name (studies/NAME.toml).")]
ConfigOption = Annotated[Optional[Path], typer.Option("--config", help="A study TOML file instead of a preset.")]
StorageOption = Annotated[Optional[str], typer.Option(help="Optuna storage URL or journal file (default: sqlite:///NAME.db).")]
DeviceOption = Annotated[str, typer.Option(help="torch device of the model: auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N, mps.")]
DtypeOption = Annotated[Optional[str], typer.Option(help="Precision of the model: float32, bfloat16 or float16 (default: the study's model.dtype).")]
AllOption = Annotated[bool, typer.Option("--all", help="List every front row, also those worse than every hand-designed schedule.")]


def _config(study: str | None, config: Path | None, **overrides: Any):
    from .study_config import load_study_config, with_overrides

    return with_overrides(load_study_config(study, config=config), **overrides)


def _storage_url(storage: str | None, config) -> str:
    from .storage import default_storage_url

    return storage or default_storage_url(config.name)


@app.command()
@one_line_errors
def optimize(
    study: StudyOption = None,
    config: ConfigOption = None,
    storage: StorageOption = None,
    stage: Annotated[Optional[str], typer.Option(help="Run one stage only: timesteps or architecture.")] = None,
    n_trials: Annotated[Optional[int], typer.Option(help="Trials per stage, counted across all workers.")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="Stop each stage after this many seconds.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the samplers and the common random numbers.")] = None,
    device: DeviceOption = "auto",
    batch_size: Annotated[Optional[int], typer.Option(help="Images per denoiser batch.")] = None,
    num_samples: Annotated[Optional[int], typer.Option(help="Samples per candidate in both stages.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model: bundled name, diffusers folder or hub id.")] = None,
    solver: Annotated[Optional[str], typer.Option(help="Solver; several, comma-separated, or 'search' for stage 1 to choose it with the time steps.")] = None,
    classifier: Annotated[Optional[str], typer.Option(help="Classifier folder for classifier guidance (zoo convert-adm-classifier).")] = None,
    prompts: Annotated[Optional[str], typer.Option(help="Prompt file of a text-to-image pipeline (.txt or .jsonl).")] = None,
    negative_prompt: Annotated[Optional[str], typer.Option(help="Negative prompt of prompts that have none.")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Height and width of a pipeline's images.")] = None,
    num_frames: Annotated[Optional[int], typer.Option(help="Frames of a video pipeline's videos.")] = None,
    dtype: DtypeOption = None,
    reference: Annotated[Optional[str], typer.Option(help="Reference statistics: digits, an .npz with mu, sigma, or a folder of real images.")] = None,
    features: Annotated[Optional[str], typer.Option(help="FID features: digits, inception or a TorchScript file.")] = None,
    feature_weights: Annotated[Optional[str], typer.Option("--feature-weights", help="Weights file of the feature network.")] = None,
    heartbeat_interval: Annotated[int, typer.Option(help="Seconds between a running trial's heartbeats (RDB storage); a trial silent for 3 is retried.")] = 30,
    show_all: AllOption = False,
    devices: Annotated[Optional[str], typer.Option(help="One worker process per device, e.g. cuda:0,cuda:1 (or cpu,cpu), all on one storage (default: the journal file NAME.journal).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="This many worker processes, one CUDA GPU each (round robin), else all on --device.")] = None,
    ctx: typer.Context = None,  # type: ignore[assignment]
) -> None:
    """Search a study's time steps (stage 1), then its skipped and reused blocks (stage 2); rerun to resume."""
    from .runner import run_optimize
    from .trial_plan import STAGES

    if devices is not None or workers is not None:
        _optimize_on_many_devices(ctx, study, config, storage, devices, workers, device)
        return

    if stage is not None and stage not in STAGES:
        raise typer.BadParameter(f"--stage must be {' or '.join(STAGES)}")
    for name, value in (("--n-trials", n_trials), ("--timeout", timeout), ("--heartbeat-interval", heartbeat_interval)):
        positive(name, value)
    cfg = _config(study, config, model=model, classifier=classifier, prompts=prompts, negative_prompt=negative_prompt,
                  image_size=image_size, num_frames=num_frames, dtype=dtype, reference=reference, features=features, feature_weights=feature_weights,
                  seed=seed, batch_size=batch_size, num_samples=num_samples,
                  solver=tuple(solver.split(",")) if solver and "," in solver else solver)
    previous = signal.signal(signal.SIGINT, first_interrupt)
    threading.excepthook = thread_errors_in_one_line
    try:
        run_optimize(cfg, _storage_url(storage, cfg), stages=(stage,) if stage else STAGES,
                     n_trials=n_trials, timeout=timeout, device=device, heartbeat_interval=heartbeat_interval,
                     show_all=show_all, echo=typer.echo)
    except KeyboardInterrupt:
        exit_interrupted()
    finally:
        signal.signal(signal.SIGINT, previous)


MacsConventionOption = Annotated[
    str,
    typer.Option(help="What the MACs count: full (convolutions, linear layers, attention's score and value products, "
                      "norms, up-sampling; as torch's FlopCounterMode and the DiT paper) or linear-conv (convolutions and "
                      "linear layers with their biases only; as thop and DeepCache's counter, behind the SD acceleration "
                      "papers' tables)."),
]
def _optimize_on_many_devices(
    ctx: typer.Context, study: str | None, config: Path | None, storage: str | None, devices: str | None,
    workers: int | None, device: str,
) -> None:
    """Start one ``optimize`` worker per device on one storage (see :mod:`optuna_diffusion.launcher`)."""
    from .launcher import check_parallel_storage, default_parallel_storage, run_workers, worker_command, worker_devices
    from .storage import check_storage_url

    names = worker_devices(devices, workers, device)
    cfg = _config(study, config)
    url = storage or default_parallel_storage(cfg.name)
    check_parallel_storage(url)
    check_storage_url(url)
    forwarded: list[str] = []
    for param in ctx.command.params:  # every other option as given, so each worker runs the same search
        value = ctx.params.get(param.name)
        if param.name in ("devices", "workers", "device", "storage", "ctx") or value is None or value == param.default:
            continue
        if getattr(param, "is_flag", False):
            forwarded.append(param.opts[0])
        else:
            forwarded += [param.opts[0], str(value)]
    typer.echo(f"{len(names)} workers on {', '.join(names)}, storage {url}")
    labels = [f"{name}#{i}" for i, name in enumerate(names)]
    code = run_workers([worker_command(forwarded, name, url) for name in names], labels, echo=typer.echo)
    if code == 130:
        typer.echo("interrupted: every worker stopped; run the same command again to resume", err=True)
    if code:
        raise typer.Exit(code=code)


@app.command()
@one_line_errors
def show(
    study: StudyOption = None,
    config: ConfigOption = None,
    storage: StorageOption = None,
    stage: Annotated[str, typer.Option(help="timesteps or architecture.")] = "timesteps",
    max_fid: Annotated[Optional[float], typer.Option(help="List only front rows with at most this FID.")] = None,
    show_all: AllOption = False,
    macs_convention: MacsConventionOption = "full",
) -> None:
    """Print the Pareto front of a stored study (steps, MACs, FID, plan)."""
    from .macs import check_macs_convention
    from .stored_studies import show_front

    check_macs_convention(macs_convention)
    cfg = _config(study, config)
    typer.echo(show_front(cfg, _storage_url(storage, cfg), stage, max_fid=max_fid, show_all=show_all,
                          macs_convention=macs_convention))


@app.command()
@one_line_errors
def export(
    study: StudyOption = None,
    config: ConfigOption = None,
    storage: StorageOption = None,
    stage: Annotated[Optional[str], typer.Option(help="Choose from one stage only: timesteps or architecture (default: both).")] = None,
    max_macs: Annotated[Optional[float], typer.Option(help="Best FID among plans with at most these MACs.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Best FID among plans with exactly this many time steps.")] = None,
    trial: Annotated[Optional[int], typer.Option(help="Export this trial number instead (needs --stage).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write the JSON plan here (default: print it); a pipeline study also gets the call that runs it, beside it as .py.")] = None,
) -> None:
    """Export the plan with the lowest FID over both stages (or under --max-macs, with --steps K, or --trial N)."""
    from .stored_studies import choose_plan, stored_config, stored_stage_studies

    positive("--steps", steps)
    cfg = _config(study, config)
    studies = stored_stage_studies(cfg, _storage_url(storage, cfg), stage)
    from .study import metric_label

    chosen = choose_plan(studies, max_macs=max_macs, steps=steps, trial_number=trial)
    text = json.dumps(chosen, indent=2)
    study_config = stored_config(studies, chosen["study"], cfg)
    source = (f"trial {chosen['trial']} of {chosen['study']} (stage {chosen['stage']}): "
              f"{metric_label(study_config)} {chosen['fid']:.3f}, {chosen['macs'] / 1e9:.4f} GMACs")
    if out is None:
        typer.echo(text)
        typer.echo(source, err=True)
    else:
        out.write_text(text + "\n")
        typer.echo(f"wrote {out}: {source}")
        _write_pipeline_call(study_config, chosen, out)


def _write_pipeline_call(cfg, chosen: dict[str, Any], out: Path) -> None:
    """Beside an exported plan of a pipeline study, the Python call that runs it in that pipeline."""
    from .export_call import study_pipeline_call

    try:
        call = study_pipeline_call(cfg, Plan.from_dict(chosen["plan"]), out.name, stage=chosen["stage"] or "timesteps")
    except ConfigError as error:
        typer.echo(f"no pipeline call written: {error}", err=True)
        return
    if call is not None:
        out.with_suffix(".py").write_text(call)
        typer.echo(f"wrote {out.with_suffix('.py')}: the call that runs it in the pipeline")


@app.command()
@one_line_errors
def evaluate(
    plan: Annotated[Optional[Path], typer.Argument(help="JSON plan (from export); omit to use --baseline.")] = None,
    study: StudyOption = None,
    config: ConfigOption = None,
    baseline: Annotated[Optional[str], typer.Option(help="A hand-designed schedule: uniform, quadratic, karras, logsnr.")] = None,
    steps: Annotated[int, typer.Option(help="Steps of the baseline.")] = 4,
    samples: Annotated[int, typer.Option(help="Samples to score.")] = 1797,
    model: Annotated[Optional[str], typer.Option(help="Score on another model (transfer).")] = None,
    classifier: Annotated[Optional[str], typer.Option(help="Classifier folder for classifier guidance.")] = None,
    reference: Annotated[Optional[str], typer.Option(help="Reference statistics (.npz) instead of the study's.")] = None,
    features: Annotated[Optional[str], typer.Option(help="FID features: digits, inception or a TorchScript file.")] = None,
    feature_weights: Annotated[Optional[str], typer.Option("--feature-weights", help="Weights file of the feature network.")] = None,
    solver: Annotated[Optional[str], typer.Option(help="Solver instead of the study's.")] = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = None,
    macs_convention: MacsConventionOption = "full",
) -> None:
    """Re-score a plan (exported or baseline) with more samples, on the study's model or another one.

    With an Inception study and --samples 50000 this is the paper's final number: FID of 2048-d
    InceptionV3 pool features (torch-fidelity's port of the TensorFlow FID network) against the
    reference batch's mu and sigma.
    """
    from .macs import check_macs_convention
    from .one_off import evaluate_plan_file

    check_macs_convention(macs_convention)
    if (plan is None) == (baseline is None):
        raise typer.BadParameter("give a plan file or --baseline, not both")
    if samples < 2:
        raise typer.BadParameter("--samples must be at least 2")
    cfg = _config(study or ("digits" if config is None else None), config, model=model, classifier=classifier,
                  reference=reference, features=features, feature_weights=feature_weights, solver=solver, dtype=dtype)
    result, used, parts = evaluate_plan_file(cfg, plan, baseline=baseline, steps=steps, samples=samples, device=device,
                                             solver=solver, macs_convention=macs_convention)
    typer.echo(f"{used}")
    from .study import metric_label

    counted = f" (counted as {macs_convention})" if macs_convention != "full" else ""
    typer.echo(f"{metric_label(cfg)} {result.fid:.3f} over {result.num_samples} samples, "
               f"{result.macs / 1e9:.4f} GMACs per image{counted}")
    spent = {name: macs for name, macs in parts.items() if macs}
    if len(spent) > 1:
        typer.echo("GMACs per image: " + ", ".join(f"{name.replace('_', ' ')} {macs / 1e9:.4f}" for name, macs in spent.items()))


@app.command()
@one_line_errors
def baselines(
    study: StudyOption = None,
    config: ConfigOption = None,
    steps: Annotated[list[int], typer.Option(help="Step counts (repeat the option).")] = [4, 6, 10],
    samples: Annotated[int, typer.Option(help="Samples per schedule.")] = 1797,
    device: DeviceOption = "auto",
) -> None:
    """FID of the hand-designed schedules (uniform, quadratic, Karras, log-SNR) on a study's model."""
    from .one_off import baseline_table

    cfg = _config(study or ("digits" if config is None else None), config)
    typer.echo(baseline_table(cfg, steps=steps, samples=samples, device=device))


@app.command()
@one_line_errors
def plot(
    study: StudyOption = None,
    config: ConfigOption = None,
    storage: StorageOption = None,
    out: Annotated[Optional[Path], typer.Option(help="Path without suffix (default: NAME-front in the working directory).")] = None,
    html_only: Annotated[bool, typer.Option("--html-only", help="Write only the interactive HTML (no matplotlib needed).")] = False,
) -> None:
    """Draw the stored fronts: FID (log) against MACs, both stages and the hand-designed baselines."""
    from .plot import front_figure, write_html, write_png
    from .stored_studies import stored_stage_studies
    from .trial_plan import STAGES

    cfg = _config(study, config)
    stored = stored_stage_studies(cfg, _storage_url(storage, cfg), None)
    by_stage = {stage: s for s in stored for stage in STAGES if s.study_name == cfg.stage_study_name(stage)}
    figure = front_figure(by_stage, title=f"{cfg.name}: FID against MACs")
    base = out if out is not None else Path(f"{cfg.name}-front")
    written = [base.with_suffix(".html")]
    write_html(figure, written[0])
    if not html_only:
        written.append(base.with_suffix(".png"))
        write_png(figure, written[1])
    typer.echo("wrote " + " and ".join(str(path) for path in written))


@app.command()
@one_line_errors
def dashboard(
    study: StudyOption = None,
    config: ConfigOption = None,
    storage: StorageOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
) -> None:
    """Start optuna-dashboard on the study's storage, with its sample images (artifacts)."""
    from .dashboard import serve_dashboard

    cfg = _config(study, config)
    url = _storage_url(storage, cfg)
    typer.echo(f"optuna-dashboard on http://{host}:{port} for {url}")
    serve_dashboard(cfg, url, host=host, port=port)


def main() -> None:
    """Console-script entry point."""
    app()
