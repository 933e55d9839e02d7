"""The ``optuna-diffusion`` command line: thin commands over the library.

Library errors (:class:`~optuna_diffusion.errors.OptunaDiffusionError`) become one line on stderr and
exit code 2, in :func:`_one_line_errors`; nothing else prints tracebacks on purpose.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from .errors import OptunaDiffusionError

app = typer.Typer(
    help="Search few-step diffusion sampling plans (time steps and skipped UNet blocks) with Optuna.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
zoo_app = typer.Typer(help="Bundled models: retrain them, or convert third-party checkpoints.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


def _one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into ``error: ...`` on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except OptunaDiffusionError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper


@zoo_app.command("train")
@_one_line_errors
def zoo_train(
    name: Annotated[str, typer.Argument(help="Bundled model to retrain (digits).")],
    out: Annotated[Path, typer.Option(help="Folder to write the diffusers model and feature net to.")],
    seed: Annotated[int, typer.Option(help="Seed of the training run.")] = 0,
    steps: Annotated[Optional[int], typer.Option(help="Diffusion training steps (default: the bundled run's).")] = None,
) -> None:
    """Retrain a bundled model from scratch, reproducibly (digits: about 20 minutes on 2 CPU cores)."""
    from .zoo import BUNDLED_MODELS
    from .zoo.training import train_digits

    if name != "digits":
        raise typer.BadParameter(f"unknown bundled model {name!r}; bundled: {', '.join(BUNDLED_MODELS)}")
    if steps is not None and steps < 1:
        raise typer.BadParameter("--steps must be positive")
    report = train_digits(out, seed=seed, diffusion_steps=steps, log=typer.echo)
    typer.echo(json.dumps(report, indent=2))


@zoo_app.command("convert-adm")
@_one_line_errors
def zoo_convert_adm(
    checkpoint: Annotated[Path, typer.Argument(help="guided-diffusion checkpoint, e.g. 64x64_diffusion.pt.")],
    out: Annotated[Path, typer.Option(help="Folder to write the diffusers UNet2DModel and scheduler to.")],
) -> None:
    """Convert guided-diffusion's ImageNet 64x64 class-conditional checkpoint to a diffusers folder."""
    from .zoo.convert_adm import convert_adm_checkpoint

    folder = convert_adm_checkpoint(checkpoint, out)
    typer.echo(f"wrote {folder}")


StudyOption = Annotated[Optional[str], typer.Option("--study", help="Preset study name (studies/NAME.toml).")]
ConfigOption = Annotated[Optional[Path], typer.Option("--config", help="A study TOML file instead of a preset.")]
StorageOption = Annotated[Optional[str], typer.Option(help="Optuna storage URL or journal file (default: sqlite:///NAME.db).")]


def _config(study: str | None, config: Path | None, **overrides: Any):
    from .study_config import load_study_config, with_overrides

    return with_overrides(load_study_config(study, config=config), **overrides)


def _storage_url(storage: str | None, config) -> str:
    from .study import default_storage_url

    return storage or default_storage_url(config)


@app.command()
@_one_line_errors
def optimize(
    study: StudyOption = None,
    config: ConfigOption = None,
    storage: StorageOption = None,
    stage: Annotated[Optional[str], typer.Option(help="Run one stage only: timesteps or architecture.")] = None,
    n_trials: Annotated[Optional[int], typer.Option(help="Trials per stage, counted across all workers.")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="Stop each stage after this many seconds.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the samplers and the common random numbers.")] = None,
    device: Annotated[str, typer.Option(help="torch device of the model.")] = "cpu",
    batch_size: Annotated[Optional[int], typer.Option(help="Images per UNet batch.")] = None,
    num_samples: Annotated[Optional[int], typer.Option(help="Samples per candidate in both stages.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model: bundled name, diffusers folder or hub id.")] = None,
    reference: Annotated[Optional[str], typer.Option(help="Reference statistics: digits or an .npz with mu, sigma.")] = None,
    features: Annotated[Optional[str], typer.Option(help="FID features: digits, inception or a TorchScript file.")] = None,
    feature_weights: Annotated[Optional[str], typer.Option("--feature-weights", help="Weights file of the feature network.")] = None,
    heartbeat_interval: Annotated[int, typer.Option(help="Seconds between a running trial's heartbeats (RDB storage); a trial silent for 3 is retried.")] = 30,
) -> None:
    """Search a study's time steps (stage 1), then its skipped and reused blocks (stage 2); rerun to resume."""
    from .runner import run_optimize

    if stage is not None and stage not in ("timesteps", "architecture"):
        raise typer.BadParameter("--stage must be timesteps or architecture")
    for name, value in (("--n-trials", n_trials), ("--batch-size", batch_size), ("--timeout", timeout),
                        ("--num-samples", num_samples), ("--heartbeat-interval", heartbeat_interval)):
        if value is not None and value <= 0:
            raise typer.BadParameter(f"{name} must be positive")
    if num_samples == 1:
        raise typer.BadParameter("--num-samples must be at least 2")
    cfg = _config(study, config, model=model, reference=reference, features=features,
                  feature_weights=feature_weights, seed=seed, batch_size=batch_size, num_samples=num_samples)
    try:
        run_optimize(cfg, _storage_url(storage, cfg), stages=(stage,) if stage else ("timesteps", "architecture"),
                     n_trials=n_trials, timeout=timeout, device=device, heartbeat_interval=heartbeat_interval, echo=typer.echo)
    except KeyboardInterrupt:
        typer.echo("interrupted: completed trials are stored; run the same command again to resume", err=True)
        raise typer.Exit(code=130) from None


@app.command()
@_one_line_errors
def show(
    study: StudyOption = None,
    config: ConfigOption = None,
    storage: StorageOption = None,
    stage: Annotated[str, typer.Option(help="timesteps or architecture.")] = "timesteps",
) -> None:
    """Print the Pareto front of a stored study (steps, time steps, MACs, FID)."""
    from .runner import load_stage_study
    from .study import format_front, pareto_front

    cfg = _config(study, config)
    stored = load_stage_study(cfg, _storage_url(storage, cfg), stage)
    typer.echo(f"{stored.study_name}: {len(stored.trials)} trials")
    typer.echo(format_front(pareto_front(stored)))


@app.command()
@_one_line_errors
def export(
    study: StudyOption = None,
    config: ConfigOption = None,
    storage: StorageOption = None,
    stage: Annotated[str, typer.Option(help="timesteps or architecture.")] = "timesteps",
    max_macs: Annotated[Optional[float], typer.Option(help="Best FID among plans with at most these MACs.")] = None,
    trial: Annotated[Optional[int], typer.Option(help="Export this trial number instead.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write the JSON plan here (default: print it).")] = None,
) -> None:
    """Export a plan as JSON: the best FID, the best under a MACs budget, or a given trial."""
    from .runner import choose_plan, load_stage_study

    cfg = _config(study, config)
    stored = load_stage_study(cfg, _storage_url(storage, cfg), stage)
    text = json.dumps(choose_plan(stored, max_macs=max_macs, trial_number=trial), indent=2)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n")
        typer.echo(f"wrote {out}")


@app.command()
@_one_line_errors
def evaluate(
    plan: Annotated[Optional[Path], typer.Argument(help="JSON plan (from export); omit to use --baseline.")] = None,
    study: StudyOption = None,
    config: ConfigOption = None,
    baseline: Annotated[Optional[str], typer.Option(help="A hand-designed schedule: uniform, quadratic, karras, logsnr.")] = None,
    steps: Annotated[int, typer.Option(help="Steps of the baseline.")] = 4,
    samples: Annotated[int, typer.Option(help="Samples to score.")] = 1797,
    model: Annotated[Optional[str], typer.Option(help="Score on another model (transfer).")] = None,
    reference: Annotated[Optional[str], typer.Option(help="Reference statistics (.npz) instead of the study's.")] = None,
    solver: Annotated[Optional[str], typer.Option(help="Solver instead of the study's.")] = None,
    device: Annotated[str, typer.Option(help="torch device of the model.")] = "cpu",
) -> None:
    """Re-score a plan (exported or baseline) with more samples, on the study's model or another one."""
    from .runner import evaluate_plan_file

    if (plan is None) == (baseline is None):
        raise typer.BadParameter("give a plan file or --baseline, not both")
    if samples < 2:
        raise typer.BadParameter("--samples must be at least 2")
    cfg = _config(study or ("digits" if config is None else None), config, model=model, reference=reference, solver=solver)
    result, used = evaluate_plan_file(cfg, plan, baseline=baseline, steps=steps, samples=samples, device=device)
    typer.echo(f"{used}")
    typer.echo(f"FID {result.fid:.3f} over {result.num_samples} samples, {result.macs / 1e9:.4f} GMACs per image")


@app.command()
@_one_line_errors
def baselines(
    study: StudyOption = None,
    config: ConfigOption = None,
    steps: Annotated[list[int], typer.Option(help="Step counts (repeat the option).")] = [4, 6, 10],
    samples: Annotated[int, typer.Option(help="Samples per schedule.")] = 1797,
    device: Annotated[str, typer.Option(help="torch device of the model.")] = "cpu",
) -> None:
    """FID of the hand-designed schedules (uniform, quadratic, Karras, log-SNR) on a study's model."""
    from .runner import baseline_table

    cfg = _config(study or ("digits" if config is None else None), config)
    typer.echo(baseline_table(cfg, steps=steps, samples=samples, device=device))


@app.command()
@_one_line_errors
def dashboard(
    study: StudyOption = None,
    config: ConfigOption = None,
    storage: StorageOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
) -> None:
    """Start optuna-dashboard on the study's storage, with its sample images (artifacts)."""
    from .runner import serve_dashboard

    cfg = _config(study, config)
    url = _storage_url(storage, cfg)
    typer.echo(f"optuna-dashboard on http://{host}:{port} for {url}")
    serve_dashboard(cfg, url, host=host, port=port)


def main() -> None:
    """Console-script entry point."""
    app()


def _quiet_library_warnings() -> None:
    """Optuna marks heartbeats and metric names experimental; that is noise for CLI users."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning)


@app.callback()
def _setup() -> None:
    _quiet_library_warnings()
