"""What the benchmark scripts share: common arguments, the digits search evaluator, the search loop,
the process pool, the hypervolume of a front, a timer, and the meter of diffusers' caches along a plan.

Not a benchmark itself. The scripts run as ``python benchmarks/NAME.py``, which puts this folder on
``sys.path``, so they import it as ``import _harness`` (spawned worker processes inherit that path).
Every helper does exactly what the scripts wrote out before, so their figures do not change.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import optuna
import torch

from optuna_diffusion.baselines import baseline_plans
from optuna_diffusion.compat import compute_hypervolume  # Optuna's exact hypervolume (private, fenced)
from optuna_diffusion.evaluation import DIGITS_SETTINGS, PlanEvaluator, default_cache_dir, digits_evaluator
from optuna_diffusion.plan import Plan
from optuna_diffusion.study_config import load_study_config

PREFIX_CACHE_MB = 512  # shared trajectory prefixes: faster, same FIDs bit for bit
PREFIX_CACHE_BYTES = PREFIX_CACHE_MB * 2**20
SEARCH_BATCH = 500  # the digits study's batches of 500 samples
ALL_DIGITS = 1797  # every real digit: the samples of a final re-scoring

SECOND_MODEL_TRAINING = ("--seed", "1", "--beta-schedule", "squaredcos_cap_v2", "--prediction-type", "v_prediction")
"""How the second digits model is trained (``optuna-diffusion zoo train digits ...``): another seed, cosine
betas and v-prediction, where the bundled model is seed 0, linear and epsilon. No search recipe was tuned on it."""

MODELS = ("digits", "digits-cosine-v")
"""The digits models a search benchmark runs on (``--model``): the bundled one and the second model."""

T = TypeVar("T")
R = TypeVar("R")

_COMMON: dict[str, dict[str, Any]] = {
    "steps": {"type": int, "help": "K, the number of time steps searched"},
    "trials": {"type": int, "help": "evaluations per search"},
    "samples": {"type": int, "help": "samples per evaluation"},
    "seed": {"type": int, "help": "the random seed"},
    "seeds": {"type": int, "nargs": "+", "help": "one search per seed"},
    "population": {"type": int, "help": "TimestepSampler's population"},
    "jobs": {"type": int, "help": "searches run in parallel processes"},
    "threads": {"type": int, "help": "torch threads per process"},
    "model": {"choices": MODELS, "help": "the bundled digits model or the second one (cosine, v-prediction), "
                                         "trained on first use"},
}


def argument_parser(doc: str) -> argparse.ArgumentParser:
    """A parser described by the first line of a script's docstring."""
    return argparse.ArgumentParser(description=doc.splitlines()[0])


def add_common_arguments(parser: argparse.ArgumentParser, **defaults: Any) -> argparse.ArgumentParser:
    """Add the arguments the searches share (``steps``, ``trials``, ``samples``, ``seed``, ``seeds``,
    ``population``, ``jobs``, ``threads``), each with the default given here; in the order given."""
    for name, default in defaults.items():
        if name not in _COMMON:
            raise ValueError(f"no common argument {name!r}; known: {', '.join(_COMMON)}")
        spec = dict(_COMMON[name])
        parser.add_argument(f"--{name}", default=list(default) if isinstance(default, tuple) else default, **spec)
    return parser


def model_source(model: str) -> str:
    """The source of a :data:`MODELS` name: the bundled model's name, or the second model's folder in the
    benchmark cache, trained there first if it is missing."""
    if model == "digits":
        return model
    if model != "digits-cosine-v":
        raise ValueError(f"unknown benchmark model {model!r}; known: {', '.join(MODELS)}")
    folder = default_cache_dir() / "benchmark-models" / model
    if not (folder / "training.json").exists():
        print(f"training the second model into {folder} (once, on one thread)", flush=True)
        command = [sys.executable, "-m", "optuna_diffusion", "zoo", "train", "digits", "--out", str(folder)]
        # One thread: the model the benchmark figures come from, bit for bit (threads change the sums' order).
        environment = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([*command, *SECOND_MODEL_TRAINING], check=True, stdout=subprocess.DEVNULL, env=environment)
    return str(folder)


def search_evaluator(*, prefix_cache: bool = True, model: str = "digits", **settings: Any) -> PlanEvaluator:
    """The digits evaluator the searches use: :data:`DIGITS_SETTINGS` in batches of 500 with ``settings``
    replaced, and (by default) a prefix cache of :data:`PREFIX_CACHE_BYTES`, on one of :data:`MODELS`."""
    sampling = dataclasses.replace(DIGITS_SETTINGS, **{"batch_size": SEARCH_BATCH, **settings})
    return digits_evaluator(sampling, prefix_cache=PREFIX_CACHE_BYTES if prefix_cache else 0, model=model_source(model))


def quiet_process(threads: int = 1) -> None:
    """Set a search process up: ``threads`` torch threads, Optuna's log at warnings only."""
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def map_in_processes(function: Callable[[T], R], tasks: Sequence[T], jobs: int) -> list[R]:
    """``function`` over ``tasks`` in ``jobs`` spawned processes, one task at a time, results in order."""
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        return pool.map(function, tasks, chunksize=1)


def baseline_seeds(ks: Iterable[int], alphas_cumprod: torch.Tensor) -> list[Plan]:
    """The hand-designed schedules of every K in ``ks``, in order, each distinct plan once."""
    return list(dict.fromkeys(plan for k in ks for plan in baseline_plans(k, alphas_cumprod).values()))


def optimize(
    sampler: optuna.samplers.BaseSampler,
    objective: Callable[[optuna.Trial], Any],
    trials: int,
    *,
    directions: Sequence[str] | None = None,
    enqueue: Iterable[dict[str, Any]] = (),
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] | None = None,
) -> optuna.Study:
    """An in-memory study of ``trials`` trials: ``enqueue``'s parameters first, then ``sampler``'s."""
    study = optuna.create_study(sampler=sampler, directions=list(directions) if directions else None)
    for params in enqueue:
        study.enqueue_trial(params)
    study.optimize(objective, n_trials=trials, callbacks=callbacks)
    return study


def study_config(study: str, model: str = "digits") -> Any:
    """The preset ``study``'s configuration, on the :data:`MODELS` ``model`` when it is not the bundled digits
    model (the digits preset copied with only the model changed, as a user with another model would)."""
    config = load_study_config(study)
    return config if model == "digits" else replace_section(config, "model", source=model_source(model))


def replace_section(config: Any, section: str, **changes: Any) -> Any:
    """``config`` (a study configuration) with fields of one section (``sampling``, ``timesteps``...) replaced."""
    return dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **changes)})


@contextlib.contextmanager
def temporary_storage(name: str = "study.db") -> Iterator[str]:
    """The URL of a SQLite storage in a temporary folder, removed on exit."""
    with tempfile.TemporaryDirectory() as folder:
        yield f"sqlite:///{Path(folder) / name}"


def hypervolume(points: Iterable[Sequence[float]], reference: np.ndarray) -> float:
    """Exact hypervolume of the (FID, MACs) ``points`` strictly inside ``reference`` (0 when none is)."""
    inside = np.array([list(p) for p in points if p[0] < reference[0] and p[1] < reference[1]])
    return float(compute_hypervolume(inside, reference)) if len(inside) else 0.0


class Timer:
    """Wall-clock seconds since it was made."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


class SpentMacsMeter:
    """Counts the MACs each denoiser call actually spends under a diffusers cache, and resets every cache
    hook's state at the start of each trajectory (every ``num_steps`` calls of the denoiser).

    ``probes``: (module, MACs) pairs, a module that runs only when its part of the network is computed (a
    block's first norm, an attention's query projection) and the MACs that part costs; a call spends
    ``full`` less the MACs of the probes that did not run (so no two probes may cover the same MACs).
    ``timestep`` is the current call's time step, for the caches that ask for it (``current_timestep_callback``).
    """

    def __init__(self, denoiser: torch.nn.Module, num_steps: int, full: int,
                 probes: Sequence[tuple[torch.nn.Module, int]]) -> None:
        self.denoiser, self.num_steps, self.full = denoiser, num_steps, full
        self.savings = [macs for _, macs in probes]
        self.timestep = float("nan")
        self.calls = self.partial = self.skipped_parts = self.images = self.macs = 0
        self._ran = [False] * len(probes)
        self._handles = [
            denoiser.register_forward_pre_hook(self._before, with_kwargs=True),
            denoiser.register_forward_hook(self._after),
            *(module.register_forward_hook(self._marker(i)) for i, (module, _) in enumerate(probes)),
        ]

    def restart(self) -> None:
        """Zero the counts (a new setting); the next call starts a trajectory."""
        self.calls = self.partial = self.skipped_parts = self.images = self.macs = 0

    def _marker(self, index: int) -> Callable[..., None]:
        def ran(module, args, output) -> None:
            self._ran[index] = True
        return ran

    def _before(self, module, args, kwargs) -> None:
        if self.calls % self.num_steps == 0:  # a new batch's trajectory: forget the last one's cached outputs
            reset_cache_hooks(self.denoiser)
        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        self.timestep = float(torch.as_tensor(timestep).flatten()[0]) if timestep is not None else float("nan")
        self._ran = [False] * len(self._ran)

    def _after(self, module, args, output) -> None:
        batch = len(args[0]) if args else len(output[0])
        skipped = [macs for macs, ran in zip(self.savings, self._ran) if not ran]
        self.calls += 1
        self.images += batch
        self.partial += 1 if skipped else 0
        self.skipped_parts += len(skipped)
        self.macs += batch * (self.full - sum(skipped))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def reset_cache_hooks(denoiser: torch.nn.Module) -> None:
    """Reset every stateful diffusers hook under ``denoiser`` (a new trajectory) and give the caches that
    keep their state per context (First-Block-Cache, MagCache) the context ``"cond"``, as a pipeline's
    ``cache_context("cond")`` does."""
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.hooks import CacheContext, StateManager

    HookRegistry.check_if_exists_or_initialize(denoiser).reset_stateful_hooks(recurse=True)
    context = CacheContext("cond")
    for module in denoiser.modules():
        registry = getattr(module, "_diffusers_hook", None)
        for hook in registry.hooks.values() if registry is not None else ():
            for value in vars(hook).values():
                if isinstance(value, StateManager):
                    value.set_context(context)


def equal_macs_verdicts(ours: Sequence[tuple[str, str, float, float]], rivals: Sequence[tuple[str, str, float, float]],
                        rival_name: str, metric: str = "FID", higher_is_better: bool = False) -> list[str]:
    """One line per (name, detail, value, MACs) of ``ours``: is its value better (lower, or higher with
    ``higher_is_better``) than that of every ``rivals`` row spending as many MACs or more?"""
    better = "higher" if higher_is_better else "lower"
    lines = []
    for name, detail, value, macs in ours:
        costlier = [row for row in rivals if row[3] >= macs]
        beaten = [row for row in costlier if (value > row[2] if higher_is_better else value < row[2])]
        verdict = "met" if costlier and len(beaten) == len(costlier) else (
            "NOT met" if costlier else f"no {rival_name} setting spends as much")
        lines.append(f"{name} [{detail}] {metric} {value:.3f} at {macs / 1e6:.3f} MMACs: {better} {metric} than "
                     f"{len(beaten)} of the {len(costlier)} {rival_name} settings spending as many MACs or more -> {verdict}")
    return lines


def timed_main(main: Callable[[], object], line: str = "total {:.0f}s") -> None:
    """Run ``main``, then print ``line`` with its wall-clock seconds (not when it fails or ``--help`` exits)."""
    timer = Timer()
    main()
    print(line.format(timer.seconds))
