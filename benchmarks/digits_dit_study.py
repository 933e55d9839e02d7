"""Both stages of the `digits-dit` preset (the bundled flow-matching DiT), timed, against the flow baselines.

1. Runs stage 1 (time steps) then stage 2 (skipped and reused blocks) of the preset with its default
   budgets into a fresh SQLite storage, timing each stage. Target: both in <= 15 min on this machine.
2. Stage 1: the best searched K-step plan (default K = 4; the stage's K-step trials with the lowest
   FIDs, re-scored with all 1,797 samples, best kept) against the flow baselines at K steps (uniform
   in sigma, shifted with shift 3 as SD3, the model's own scheduler config), same noise and labels.
   Targets: FID <= 0.5x uniform flow Euler, and below every baseline.
3. Stage 2, at that plan's K: stage-2 trials with >= 25% fewer MACs, lowest FIDs first, re-scored with
   1,797 samples. Target: one within 5% of the stage-1 plan's FID. (If none: benchmarks/sensitivity.py
   --study digits-dit prints every block x every step, skip and reuse.)
``--plans-out FILE`` writes the stage-1 plan and the stage-2 plans (JSON) for benchmarks/first_block_cache.py,
and stage 2's Pareto front of any K (search FIDs) for benchmarks/video_caches.py.
Run: python benchmarks/digits_dit_study.py [--seed 0] [--steps 4] [--plans-out dit_plans.json]
     (--study digits-video --samples 200: the video preset, re-scored with 200 clips)
     (--timestep-trials N --architecture-trials N: other budgets, for a quick check)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import torch

import _harness
from optuna_diffusion.baselines import baseline_plans
from optuna_diffusion.runner import run_optimize
from optuna_diffusion.study import build_evaluator
from optuna_diffusion.study_config import load_study_config
from optuna_diffusion.trial_plan import is_low_fidelity, plan_from_trial
from stage2 import wasted_share  # a sibling script: run from this folder or as benchmarks/digits_dit_study.py

FULL_SAMPLES = _harness.ALL_DIGITS
MACS_CUT = 0.25   # stage 2: at least this fraction fewer MACs
FID_SLACK = 0.05  # stage 2: at most this fraction higher FID


def ranked_trials(study: optuna.Study, num_steps: int) -> list[tuple[float, float, object]]:
    """(FID, MACs, plan) of the study's complete full-fidelity trials with ``num_steps`` steps, best FID first."""
    rows = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if trial.values is None or not all(math.isfinite(v) for v in trial.values) or is_low_fidelity(trial):
            continue
        plan = plan_from_trial(trial)
        if plan.num_steps == num_steps:
            rows.append((trial.values[0], trial.values[1], plan))
    return sorted(rows, key=lambda row: row[0])


def pareto_front(study: optuna.Study) -> list[tuple[float, float, object]]:
    """(FID, MACs, plan) of the study's complete full-fidelity trials that no other such trial dominates, any K."""
    rows = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if trial.values is not None and all(math.isfinite(v) for v in trial.values) and not is_low_fidelity(trial):
            rows.append((trial.values[0], trial.values[1], plan_from_trial(trial)))
    front = [row for row in rows if not any(
        other[0] <= row[0] and other[1] <= row[1] and other[:2] != row[:2] for other in rows)]
    return sorted(front, key=lambda row: (row[0], row[1]))


def steps_histogram(study: optuna.Study) -> dict[int, int]:
    """How many complete full-fidelity trials the study has per number of steps."""
    histogram: dict[int, int] = {}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if trial.values is not None and not is_low_fidelity(trial):
            k = plan_from_trial(trial).num_steps
            histogram[k] = histogram.get(k, 0) + 1
    return histogram


def main() -> None:
    parser = _harness.argument_parser(__doc__)
    parser.add_argument("--study", default="digits-dit")
    _harness.add_common_arguments(parser, seed=0)
    parser.add_argument("--steps", type=int, default=4, help="K of the stage-1 plan compared with the baselines")
    parser.add_argument("--rescore", type=int, default=3, help="stage-1 finalists re-scored with all samples")
    parser.add_argument("--rescore-stage2", type=int, default=8, help="stage-2 candidates re-scored with all samples")
    parser.add_argument("--plans-out", type=Path, default=None)
    _harness.add_common_arguments(parser, threads=1, samples=FULL_SAMPLES)
    parser.add_argument("--timestep-trials", type=int, default=None, help="stage 1's budget (default: the preset's)")
    parser.add_argument("--architecture-trials", type=int, default=None, help="stage 2's budget (default: the preset's)")
    parser.add_argument("--k-range", type=int, nargs=2, default=None, metavar=("K_MIN", "K_MAX"),
                        help="stage 1's step counts (default: the preset's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = _harness.replace_section(load_study_config(args.study), "sampling", seed=args.seed)
    for section, trials in (("timesteps", args.timestep_trials), ("architecture", args.architecture_trials)):
        if trials is not None:
            config = _harness.replace_section(config, section, n_trials=trials)
    if args.k_range is not None:
        k_min, k_max = args.k_range
        config = _harness.replace_section(config, "timesteps", k_min=k_min, k_max=k_max)
    seconds: dict[str, float] = {}
    with _harness.temporary_storage() as storage:
        studies = {}
        for stage in ("timesteps", "architecture"):
            timer = _harness.Timer()
            studies.update(run_optimize(config, storage, stages=(stage,), echo=lambda _: None))
            seconds[stage] = timer.seconds
        # Materialise the trials before the temporary storage goes away.
        stage1 = ranked_trials(studies["timesteps"], args.steps)
        stage2 = ranked_trials(studies["architecture"], args.steps)
        front2 = pareto_front(studies["architecture"])
        counts = {stage: len(study.trials) for stage, study in studies.items()}
        waste = wasted_share(studies["timesteps"], studies["architecture"])
        by_k = {stage: steps_histogram(study) for stage, study in studies.items()}
    total = sum(seconds.values())
    print(f"{args.study} (seed {args.seed}): stage 1 {counts['timesteps']} trials in {seconds['timesteps']:.0f}s, "
          f"stage 2 {counts['architecture']} trials in {seconds['architecture']:.0f}s; "
          f"both {total:.0f}s ({total / 60:.1f} min), {torch.get_num_threads()} thread(s)")
    print("(one thread of the machine's cores, other jobs sharing them)")
    for stage, histogram in by_k.items():
        print(f"{stage}: complete full-fidelity trials by K: " + ", ".join(f"{k}: {n}" for k, n in sorted(histogram.items())))
    print(waste)
    if not stage1:
        print(f"stage 1 has no complete {args.steps}-step trial")
        return
    evaluator = build_evaluator(config)
    schedule = evaluator.generator.schedule

    # Stage 1 against the baselines.
    finalists = [(evaluator.evaluate(plan, args.samples).fid, macs, fid, plan) for fid, macs, plan in stage1[: args.rescore]]
    anchor_fid, anchor_macs, anchor_search_fid, anchor = min(finalists, key=lambda row: row[0])
    print(f"\nstage 1, K = {args.steps}, FID with {args.samples} samples (same seeded noise and labels)")
    print(f"  searched   {list(anchor.timesteps)}: FID {anchor_fid:.3f} ({config.timesteps.num_samples}-sample search FID "
          f"{anchor_search_fid:.3f}), {anchor_macs / 1e6:.2f} MMACs")
    baseline_fids = {}
    for name, plan in baseline_plans(args.steps, schedule).items():
        baseline_fids[name] = evaluator.evaluate(plan, args.samples).fid
        print(f"  {name:<10} {list(plan.timesteps)}: FID {baseline_fids[name]:.3f}")
    ratio = anchor_fid / baseline_fids["uniform"]
    below = all(anchor_fid < fid for fid in baseline_fids.values())
    print(f"ratio to uniform: {ratio:.3f} (target <= 0.5: {'met' if ratio <= 0.5 else 'NOT met'}); "
          f"below every baseline: {'yes' if below else 'NO'} (best baseline {min(baseline_fids.values()):.3f})")

    # Stage 2 at the same K.
    cheap = [(fid, macs, plan) for fid, macs, plan in stage2 if macs <= (1 - MACS_CUT) * anchor_macs]
    print(f"\nstage 2, K = {args.steps}: {len(stage2)} complete trials, {len(cheap)} with >= {MACS_CUT:.0%} fewer MACs "
          f"than the stage-1 plan ({anchor_macs / 1e6:.2f} MMACs)")
    rescored = [(evaluator.evaluate(plan, args.samples).fid, macs, plan) for _, macs, plan in cheap[: args.rescore_stage2]]
    for fid, macs, plan in rescored:
        print(f"  FID {fid:.3f} ({(fid / anchor_fid - 1) * 100:+.1f}%), {macs / 1e6:.2f} MMACs "
              f"({(1 - macs / anchor_macs) * 100:.1f}% fewer)  [{plan}]")
    within = [row for row in rescored if row[0] <= (1 + FID_SLACK) * anchor_fid]
    if within:
        fid, macs, plan = min(within, key=lambda row: row[1])
        print(f"target met: {(1 - macs / anchor_macs) * 100:.1f}% fewer MACs at {(fid / anchor_fid - 1) * 100:+.1f}% FID  [{plan}]")
    else:
        print(f"target NOT met by the search: no re-scored plan with >= {MACS_CUT:.0%} fewer MACs is within "
              f"{FID_SLACK:.0%} of FID {anchor_fid:.3f} (see benchmarks/sensitivity.py --study {args.study})")
    # The best stage-2 plan of any cost at this K, for the First-Block-Cache comparison.
    best2 = [(evaluator.evaluate(plan, args.samples).fid, macs, plan) for _, macs, plan in stage2[: args.rescore_stage2]
             if not plan.is_full_network]
    evaluator.close()
    if args.plans_out is not None:
        payload = {
            "study": args.study,
            "samples": args.samples,
            "stage1": {"fid": anchor_fid, "macs": anchor_macs, "plan": anchor.to_dict()},
            "stage2": [{"fid": fid, "macs": macs, "plan": plan.to_dict()} for fid, macs, plan in rescored + best2],
            "baselines": baseline_fids,
            "stage2_front": [{"search_fid": fid, "macs": macs, "plan": plan.to_dict()} for fid, macs, plan in front2],
        }
        args.plans_out.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"plans written to {args.plans_out}")


if __name__ == "__main__":
    _harness.timed_main(main)
