"""Every K of the front: the best FID a study over several K reaches at each K, against a search at that K alone.

Runs the digits preset's stage 1 (K 2..8, 200 trials, multi-fidelity and prefix cache, as
``optuna-diffusion optimize --study digits`` does) into a temporary storage and takes the best
full-fidelity FID at each K. Then, at each K of ``--ks``, one dedicated search of ``--trials``
evaluations with K fixed (search_quality.py's ``timestep``: the same 500 samples and noise). It prints
both per K and their ratio; target: the study within 10% of the dedicated search at each K in 3..6.
As a ceiling it also prints how many trials the study spent at each K and the dedicated search's best
after that many of its own evaluations: what a search at one K reaches on the study's budget for it.
``--seed`` is the study's ``[sampling] seed`` (its sampler's seed and its noise); the dedicated searches
score on the same noise. Run: python benchmarks/front_coverage.py [--model digits] [--seed 0] [--ks 3 4 5 6] [--trials 200]
(``--ks`` with no K: the study's best FID at each K only, without the dedicated searches.)
"""

from __future__ import annotations

import argparse
import math

import _harness
from search_quality import run_search  # the dedicated searches, exactly as search_quality.py runs them

from optuna_diffusion.runner import run_optimize
from optuna_diffusion.trial_plan import is_low_fidelity

TARGET = 1.10


def study_best_per_k(model: str, seed: int) -> tuple[dict[int, float], dict[int, int], float]:
    """Best full-fidelity FID per K of the preset's stage 1, its number of trials per K, and its seconds."""
    config = _harness.replace_section(_harness.study_config("digits", model), "sampling", seed=seed)
    timer = _harness.Timer()
    with _harness.temporary_storage("digits.db") as storage:
        study = run_optimize(config, storage, stages=("timesteps",), echo=lambda _: None)["timesteps"]
    best: dict[int, float] = {}
    trials: dict[int, int] = {}
    for trial in study.trials:
        if "timesteps" not in trial.user_attrs:
            continue
        k = len(trial.user_attrs["timesteps"])
        trials[k] = trials.get(k, 0) + 1
        if trial.values and math.isfinite(trial.values[0]) and not is_low_fidelity(trial):
            best[k] = min(best.get(k, math.inf), trial.values[0])
    return best, trials, timer.seconds


def main() -> None:
    parser = _harness.argument_parser(__doc__)
    _harness.add_common_arguments(parser, model="digits", seed=0, trials=200, samples=500, population=20)
    parser.add_argument("--ks", type=int, nargs="*", default=[3, 4, 5, 6], help="the K of the dedicated searches (none: the study only)")
    _harness.add_common_arguments(parser, jobs=2, threads=1)
    args = parser.parse_args()
    _harness.model_source(args.model)  # trained once, before the processes share it
    best, trials, seconds = study_best_per_k(args.model, args.seed)
    # the dedicated searches score plans on the study's noise: its [sampling] seed is --seed
    tasks = [("timestep", args.seed, argparse.Namespace(**{**vars(args), "steps": k, "solver": "ddim", "sampling_seed": args.seed}))
             for k in args.ks]
    runs = {k: values for k, (_, _, values, _) in zip(args.ks, _harness.map_in_processes(run_search, tasks, args.jobs))}
    dedicated = {k: min(values) for k, values in runs.items()}
    print(f"{args.model}, seed {args.seed}: the digits preset's stage 1 ({sum(trials.values())} trials over K 2..8, {seconds:.0f} s) "
          f"against a {args.trials}-evaluation search at each K alone; {args.samples} samples per FID")
    print("study's best FID by K (trials): " + ", ".join(f"{k}: {fid:.3f} ({trials[k]})" for k, fid in sorted(best.items())))
    print(f"{'K':>2} {'study':>7} {'trials':>6} {'dedicated':>9} {'ratio':>6} {'dedicated at the study trials':>29}")
    for k in args.ks:
        ratio = best.get(k, math.inf) / dedicated[k]
        at_budget = min(runs[k][: max(1, trials.get(k, 0))])
        print(f"{k:>2} {best.get(k, math.inf):7.3f} {trials.get(k, 0):6d} {dedicated[k]:9.3f} {ratio:6.3f} {at_budget:29.3f}"
              f"{'' if ratio <= TARGET else '  above the target'}")
    print(f"K within {TARGET - 1:.0%}: {sum(best.get(k, math.inf) <= TARGET * dedicated[k] for k in args.ks)}/{len(args.ks)}")


if __name__ == "__main__":
    _harness.timed_main(main)
