"""What the CLI commands do, as plain functions: optimize, show, export, evaluate, baselines, dashboard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import optuna

from .baselines import BASELINES, baseline_plan
from .budget import TrialBudget
from .errors import ConfigError
from .evaluation import Evaluation, PlanEvaluator
from .fidelity import FidelityPolicy
from .objective import PlanObjective
from .plan import Plan
from .samplers import ArchitectureSampler, TimestepSampler, plan_from_trial
from .study import (
    PREVIEW_SAMPLES,
    PreviewUploader,
    artifact_dir,
    build_evaluator,
    check_device,
    completed_trials,
    format_front,
    open_storage,
    open_study,
    pareto_front,
)
from .study_config import StudyConfig

Echo = Callable[[str], None]


def population_split(population: int) -> dict[str, int]:
    """Parents, mutants and crossovers in the method's proportions (10/25/15 of 50)."""
    return {
        "population_size": population,
        "num_parents": max(2, population // 5),
        "num_mutants": population // 2,
        "num_crossovers": population * 3 // 10,
    }


def _initial_plans(config: StudyConfig, evaluator: PlanEvaluator) -> list[Plan]:
    """Hand-designed schedules for every allowed K, as the first generation's seeds."""
    alphas_cumprod = evaluator.sampler.schedule.alphas_cumprod
    stage = config.timesteps
    plans = [baseline_plan(name, k, alphas_cumprod) for k in range(stage.k_min, stage.k_max + 1) for name in BASELINES]
    unique = list(dict.fromkeys(plans))
    return unique[: stage.population_size]


def _cheapest_possible_macs(evaluator: PlanEvaluator) -> int:
    """MACs of one step with every skippable block skipped: no plan costs less."""
    table = evaluator.macs_table
    factor = 2 if evaluator.settings.uses_guidance else 1
    return factor * table.step_macs(skips=tuple(table.skip_savings))


def sampler_for(stage: str, config: StudyConfig, evaluator: PlanEvaluator) -> optuna.samplers.BaseSampler:
    """The sampler a study runs ``stage`` with: its population split, seed and, for stage 1, the baseline seeds."""
    seed = config.sampling.seed
    if stage == "timesteps":
        t = config.timesteps
        return TimestepSampler(
            k_min=t.k_min,
            k_max=t.k_max,
            num_train_timesteps=evaluator.sampler.schedule.num_train_timesteps,
            initial_plans=_initial_plans(config, evaluator),
            seed=seed,
            **population_split(t.population_size),
        )
    return ArchitectureSampler(
        source_study=config.stage_study_name("timesteps"),
        blocks=evaluator.sampler.switch.blocks,
        k_min=config.timesteps.k_min,
        k_max=config.timesteps.k_max,
        num_train_timesteps=evaluator.sampler.schedule.num_train_timesteps,
        seed=seed,
        **population_split(config.architecture.population_size),
    )


def _objective(
    stage: str, config: StudyConfig, evaluator: PlanEvaluator, preview: PreviewUploader, budget: TrialBudget
) -> Callable[[optuna.Trial], Any]:
    settings = getattr(config, stage)
    population = population_split(settings.population_size)
    low_samples = config.low_fidelity_samples(stage)
    fidelity = None if low_samples is None else FidelityPolicy(low_samples=low_samples, keep=population["num_parents"])
    objective = PlanObjective(
        evaluator,
        num_samples=settings.num_samples,
        macs_budget=getattr(settings, "macs_budget", None),
        fidelity=fidelity,
        keep_images=PREVIEW_SAMPLES,
        after_evaluation=preview,
    )

    def within_budget(trial: optuna.Trial) -> Any:
        if not budget.claim(trial):
            budget.stop_trial(trial)
        return objective(trial)

    return within_budget


def run_optimize(
    config: StudyConfig,
    storage_url: str,
    *,
    stages: tuple[str, ...] = ("timesteps", "architecture"),
    n_trials: int | None = None,
    timeout: float | None = None,
    device: str = "cpu",
    heartbeat_interval: int = 30,
    echo: Echo = print,
) -> dict[str, optuna.Study]:
    """Run (or resume) the chosen stages; each stage stops at its trial budget counted over all workers.

    On an RDB storage a trial whose worker died (no heartbeat for 3 x ``heartbeat_interval``
    seconds) is failed and retried with the same plan by the next worker that starts a trial.
    """
    check_device(device)
    storage = open_storage(storage_url, heartbeat_interval=heartbeat_interval)
    evaluator = build_evaluator(config, device=device)
    budget = config.architecture.macs_budget
    if "architecture" in stages and budget is not None and budget < _cheapest_possible_macs(evaluator):
        raise ConfigError(
            f"architecture.macs_budget = {budget:g} MACs is below the cheapest possible plan "
            f"({_cheapest_possible_macs(evaluator):g} MACs: one step with every skippable block skipped)"
        )
    preview = PreviewUploader(artifact_dir(storage_url, config))
    studies = {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for stage in stages:
        study = open_study(config, stage, storage, sampler_for(stage, config, evaluator))
        budget = TrialBudget(n_trials or getattr(config, stage).n_trials)
        remaining = budget.total - completed_trials(study)
        echo(f"stage {stage}: study {study.study_name}, {budget.total - remaining}/{budget.total} trials done")
        if remaining > 0:
            study.optimize(
                _objective(stage, config, evaluator, preview, budget),
                n_trials=remaining,
                timeout=timeout,
                callbacks=[optuna.study.MaxTrialsCallback(budget.total, states=(optuna.trial.TrialState.COMPLETE,))],
                show_progress_bar=True,
            )
        complete, running = budget.counts(study)
        if complete < budget.total and running:
            echo(
                f"{complete}/{budget.total} trials complete; {running} still running elsewhere. A crashed "
                "worker's trial is retried once its heartbeat is stale: run this command again then."
            )
        echo(format_front(pareto_front(study)))
        echo(f"stored in {storage_url} as study {study.study_name!r}")
        studies[stage] = study
    evaluator.close()
    return studies


def load_stage_study(config: StudyConfig, storage_url: str, stage: str) -> optuna.Study:
    """The stored study of ``stage``; a one-line error if it does not exist (nothing is created)."""
    if stage not in ("timesteps", "architecture"):
        raise ConfigError(f"--stage must be timesteps or architecture, got {stage!r}")
    if storage_url.startswith("sqlite:///") and not Path(storage_url[len("sqlite:///") :]).is_file():
        raise ConfigError(f"no storage at {storage_url}; run optuna-diffusion optimize first")
    storage = open_storage(storage_url)
    name = config.stage_study_name(stage)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise ConfigError(f"no study {name!r} in {storage_url}; run optuna-diffusion optimize first") from None


def choose_plan(study: optuna.Study, *, max_macs: float | None = None, trial_number: int | None = None) -> dict[str, Any]:
    """The plan of a chosen trial with its scores: best FID, best FID under ``max_macs``, or trial ``trial_number``."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    if trial_number is not None:
        chosen = [t for t in complete if t.number == trial_number]
        if not chosen:
            raise ConfigError(f"study {study.study_name!r} has no complete trial {trial_number}")
        trial = chosen[0]
    else:
        candidates = [t for t in complete if max_macs is None or t.values[1] <= max_macs]
        if not candidates:
            limit = f" with at most {max_macs:g} MACs" if max_macs is not None else ""
            raise ConfigError(f"study {study.study_name!r} has no complete trial{limit}")
        trial = min(candidates, key=lambda t: (t.values[0], t.values[1]))
    plan = plan_from_trial(trial)
    return {"plan": plan.to_dict(), "fid": trial.values[0], "macs": trial.values[1], "study": study.study_name, "trial": trial.number}


def load_plan_file(path: str | Path) -> Plan:
    """A Plan from an exported JSON file (``{"plan": {...}, ...}``) or a bare plan JSON."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"plan file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"plan file {path} is not valid JSON: {error}") from None
    return Plan.from_dict(data["plan"] if isinstance(data, dict) and "plan" in data else data)


def evaluate_plan_file(
    config: StudyConfig, plan_path: Path | None, *, baseline: str | None, steps: int, samples: int, device: str = "cpu"
) -> tuple[Evaluation, Plan]:
    """Score an exported plan or a baseline with ``samples`` samples on the config's model."""
    evaluator = build_evaluator(config, device=device)
    if plan_path is not None:
        plan = load_plan_file(plan_path)
    else:
        plan = baseline_plan(baseline, steps, evaluator.sampler.schedule.alphas_cumprod)
    result = evaluator.evaluate(plan, samples)
    evaluator.close()
    return result, plan


def baseline_table(config: StudyConfig, *, steps: list[int], samples: int, device: str = "cpu") -> str:
    """FID and MACs of every hand-designed schedule at each step count, as a text table."""
    evaluator = build_evaluator(config, device=device)
    alphas_cumprod = evaluator.sampler.schedule.alphas_cumprod
    lines = [f"{config.model.source}, {config.sampling.solver}, {samples} samples", f"{'K':>3} " + " ".join(f"{n:>10}" for n in BASELINES)]
    for k in steps:
        fids = [evaluator.evaluate(baseline_plan(name, k, alphas_cumprod), samples).fid for name in BASELINES]
        lines.append(f"{k:>3} " + " ".join(f"{fid:10.3f}" for fid in fids))
    evaluator.close()
    return "\n".join(lines)


def serve_dashboard(config: StudyConfig, storage_url: str, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run optuna-dashboard on the study's storage and artifact store (blocks until stopped)."""
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import run_server

    if storage_url.startswith("sqlite:///") and not Path(storage_url[len("sqlite:///") :]).is_file():
        raise ConfigError(f"no storage at {storage_url}; run optuna-diffusion optimize first")
    directory = artifact_dir(storage_url, config)
    directory.mkdir(parents=True, exist_ok=True)
    run_server(open_storage(storage_url), host=host, port=port, artifact_store=FileSystemArtifactStore(str(directory)))
