"""The ``optuna-diffusion`` command line: thin commands over the library.

Every error a user can cause is one line on stderr, ``error: ...``, and a non-zero exit code: the
library's own errors (:class:`~optuna_diffusion.errors.OptunaDiffusionError`, code 2, or the error's
``exit_code``) in :func:`_one_line_errors`, and the option errors of Typer and Click (code 2) in
:class:`_OneLineErrors`. ``--debug`` shows the traceback behind a library error.

Commands import the library inside their bodies: the package loads its names lazily (PEP 562), so
``--help`` imports neither torch nor Optuna (``tests/test_import_cycles.py`` checks it).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from typer.core import TyperGroup

from .errors import ConfigError, OptunaDiffusionError, first_line
from .plan import Plan


class _OneLineErrors(TyperGroup):
    """Typer's group, with its usage errors (a bad option value, a missing argument) as one line."""

    def main(
        self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True, **extra: Any
    ) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as error:  # Typer's (vendored Click's) usage and parameter errors
            message = " ".join(error.format_message().split())
            if message:  # empty after a help page shown for a command given without arguments
                typer.echo(f"error: {message}", err=True)
            if not standalone_mode:
                raise
            sys.exit(error.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            if not standalone_mode:
                raise
            sys.exit(1)
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else 0)
        return result


app = typer.Typer(
    help="Search few-step diffusion sampling plans (time steps and skipped or reused blocks) with Optuna.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=_OneLineErrors,
)
zoo_app = typer.Typer(help="Bundled models: retrain them, or convert third-party checkpoints.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")

_debug = False


def _one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into ``error: ...`` on stderr and exit code 2 (or the error's ``exit_code``)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except OptunaDiffusionError as error:
            if _debug:
                traceback.print_exc()
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(code=getattr(error, "exit_code", 2)) from None

    return wrapper


def _positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise typer.BadParameter(f"{name} must be positive, got {value:g}")


@app.callback()
def _setup(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback behind a one-line error.")] = False,
) -> None:
    global _debug
    _debug = debug
    _quiet_library_warnings()


def _quiet_library_warnings() -> None:
    """Optuna marks heartbeats and metric names experimental; that is noise for CLI users."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning)


# --------------------------------------------------------------------------------------------------
# zoo
# --------------------------------------------------------------------------------------------------


@zoo_app.command("train")
@_one_line_errors
def zoo_train(
    name: Annotated[str, typer.Argument(help="Model to train: digits, digits-dit or digits-t2i (a text-to-image pipeline).")],
    out: Annotated[Path, typer.Option(help="Folder to write the diffusers model (and, for digits, the feature net) to.")],
    seed: Annotated[int, typer.Option(help="Seed of the training run.")] = 0,
    steps: Annotated[Optional[int], typer.Option(help="Diffusion training steps (default: the bundled run's).")] = None,
) -> None:
    """Retrain a bundled model from scratch, reproducibly (on 2 CPU cores: digits 23 minutes, digits-t2i 27; digits-dit: 21 on one)."""
    from .zoo import TRAINABLE_MODELS

    if name not in TRAINABLE_MODELS:
        raise typer.BadParameter(f"unknown model {name!r}; trainable: {', '.join(TRAINABLE_MODELS)}")
    _positive("--steps", steps)
    if name == "digits-t2i":
        from .zoo.t2i_training import T2ITraining, train_digits_t2i

        settings = T2ITraining(seed=seed) if steps is None else T2ITraining(seed=seed, steps=steps)
        report = train_digits_t2i(out, settings, log=typer.echo)
    elif name == "digits-dit":
        from .zoo.dit_training import DiTTraining, train_digits_dit

        settings = DiTTraining(seed=seed) if steps is None else DiTTraining(seed=seed, steps=steps)
        report = train_digits_dit(out, settings, log=typer.echo)
    else:
        from .zoo.training import train_digits

        report = train_digits(out, seed=seed, diffusion_steps=steps, log=typer.echo)
    typer.echo(json.dumps(report, indent=2))


ArchOption = Annotated[
    Optional[str],
    typer.Option(help="The checkpoint's flags: a preset name or a JSON file of them (default: read from the weights "
                      "and the matching published checkpoint)."),
]


@zoo_app.command("convert-adm")
@_one_line_errors
def zoo_convert_adm(
    checkpoint: Annotated[Path, typer.Argument(help="guided-diffusion UNet checkpoint, e.g. 64x64_diffusion.pt.")],
    out: Annotated[Path, typer.Option(help="Folder to write the diffusers UNet2DModel and scheduler to.")],
    arch: ArchOption = None,
    own_weights: Annotated[bool, typer.Option("--own-weights", help="The weights are your own, trained with --arch's "
                                              "flags, though shaped like a published checkpoint's.")] = False,
) -> None:
    """Convert a guided-diffusion (ADM) UNet checkpoint to a diffusers folder, or say why it cannot be.

    Presets: imagenet64, imagenet128 (refused: per-level head widths), imagenet256, imagenet256-uncond, lsun256,
    imagenet512 (refused). An --arch that contradicts the published checkpoint of the weights' layout is refused.
    """
    from .zoo.convert_adm import convert_adm_checkpoint

    folder = convert_adm_checkpoint(checkpoint, out, arch=arch, own_weights=own_weights)
    typer.echo(f"wrote {folder}")


@zoo_app.command("convert-adm-classifier")
@_one_line_errors
def zoo_convert_adm_classifier(
    checkpoint: Annotated[Path, typer.Argument(help="guided-diffusion noisy-image classifier, e.g. 64x64_classifier.pt.")],
    out: Annotated[Path, typer.Option(help="Folder to write the classifier (config.json, model.safetensors) to.")],
    arch: ArchOption = None,
) -> None:
    """Convert a guided-diffusion classifier checkpoint for classifier guidance (presets: imagenet64/128/256/512)."""
    from .zoo.convert_adm_classifier import convert_adm_classifier_checkpoint

    folder = convert_adm_classifier_checkpoint(checkpoint, out, arch=arch)
    typer.echo(f"wrote {folder}")


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


def _exit_at_once(signum: int, frame: Any) -> None:
    os._exit(130)


def _first_interrupt(signum: int, frame: Any) -> None:
    """A first Ctrl-C stops the search cleanly (KeyboardInterrupt); a second exits at once."""
    signal.signal(signal.SIGINT, _exit_at_once)
    raise KeyboardInterrupt


def _thread_errors_in_one_line(arguments: threading.ExceptHookArgs) -> None:
    """A library thread's failure (Optuna's heartbeat while the database is away) as one line."""
    from .runner import root_cause

    if arguments.exc_value is not None and not isinstance(arguments.exc_value, SystemExit):
        name = arguments.thread.name if arguments.thread is not None else "a thread"
        typer.echo(f"warning: {name} stopped: {first_line(root_cause(arguments.exc_value))}", err=True)


def _exit_interrupted() -> None:
    """Say what an interruption left, and exit with 130 -- also when a library thread would outlive us."""
    typer.echo(
        "interrupted: completed trials are stored and the interrupted trial is marked failed (it is retried); "
        "run the same command again to resume",
        err=True,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    if any(thread.is_alive() and not thread.daemon for thread in threading.enumerate() if thread is not threading.main_thread()):
        os._exit(130)  # e.g. Optuna's heartbeat thread, left running when the Ctrl-C hit its start or stop
    raise typer.Exit(code=130)


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
    device: DeviceOption = "auto",
    batch_size: Annotated[Optional[int], typer.Option(help="Images per denoiser batch.")] = None,
    num_samples: Annotated[Optional[int], typer.Option(help="Samples per candidate in both stages.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model: bundled name, diffusers folder or hub id.")] = None,
    solver: Annotated[Optional[str], typer.Option(help="Solver; several, comma-separated, or 'search' for stage 1 to choose it with the time steps.")] = None,
    classifier: Annotated[Optional[str], typer.Option(help="Classifier folder for classifier guidance (zoo convert-adm-classifier).")] = None,
    prompts: Annotated[Optional[str], typer.Option(help="Prompt file of a text-to-image pipeline (.txt or .jsonl).")] = None,
    negative_prompt: Annotated[Optional[str], typer.Option(help="Negative prompt of prompts that have none.")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Height and width of a pipeline's images.")] = None,
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
        _positive(name, value)
    cfg = _config(study, config, model=model, classifier=classifier, prompts=prompts, negative_prompt=negative_prompt,
                  image_size=image_size, dtype=dtype, reference=reference, features=features, feature_weights=feature_weights,
                  seed=seed, batch_size=batch_size, num_samples=num_samples,
                  solver=tuple(solver.split(",")) if solver and "," in solver else solver)
    previous = signal.signal(signal.SIGINT, _first_interrupt)
    threading.excepthook = _thread_errors_in_one_line
    try:
        run_optimize(cfg, _storage_url(storage, cfg), stages=(stage,) if stage else STAGES,
                     n_trials=n_trials, timeout=timeout, device=device, heartbeat_interval=heartbeat_interval,
                     show_all=show_all, echo=typer.echo)
    except KeyboardInterrupt:
        _exit_interrupted()
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

    names = worker_devices(devices, workers, device)
    cfg = _config(study, config)
    url = storage or default_parallel_storage(cfg.name)
    check_parallel_storage(url)
    from .storage import check_storage_url

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
@_one_line_errors
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
@_one_line_errors
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

    _positive("--steps", steps)
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
@_one_line_errors
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
@_one_line_errors
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
@_one_line_errors
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
@_one_line_errors
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
