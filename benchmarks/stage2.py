"""What stage 2 (skipped and reused blocks) adds over stage 1 (time steps) on the digits model.

Runs the digits study's two stages with their default budgets into a fresh SQLite storage, prints both
Pareto fronts and their hypervolumes (one reference point), then re-scores with all 1,797 samples:
stage 1's best 4-step plan, the best stage-2 plan with no more MACs, and the cheapest stage-2 plan
within 5% of its FID. Targets: FID >= 10% lower at no more MACs, or FID within 5% at >= 20% fewer MACs.
It also prints how much of stage 2's budget went to plans that were bound to be bad: the share of its
trials whose FID is above twice the best stage-1 FID at the same number of steps, 2-step plans included
(target: <= 20%, issue 36), and how many of them each K holds.
``--study digits-dit`` runs the bundled DiT's preset instead.
Run: python benchmarks/stage2.py [--study digits] [--seed 0] [--architecture-trials 100] [--probe-samples N]
"""

from __future__ import annotations

import math

import numpy as np

import _harness
from optuna_diffusion.runner import run_optimize
from optuna_diffusion.front import format_front, pareto_front
from optuna_diffusion.study import build_evaluator
from optuna_diffusion.trial_plan import is_low_fidelity

FULL_SAMPLES = _harness.ALL_DIGITS


def hypervolume(rows, reference: np.ndarray) -> float:
    """Hypervolume of a front's (FID, MACs) rows against ``reference``."""
    return _harness.hypervolume([(row.fid, row.macs) for row in rows], reference)


def wasted_share(stage1, stage2) -> str:
    """Stage 2's trials scored above twice the best stage-1 FID at their number of steps, as a line."""
    best: dict[int, float] = {}
    for trial in stage1.trials:
        if trial.values and math.isfinite(trial.values[0]):
            k = len(trial.user_attrs["timesteps"])
            best[k] = min(best.get(k, math.inf), trial.values[0])
    scored = [t for t in stage2.trials if t.values and len(t.user_attrs.get("timesteps", ())) in best]
    above = [t for t in scored if t.values[0] > 2 * best[len(t.user_attrs["timesteps"])]]
    share = len(above) / len(scored) if scored else math.nan
    low = [t for t in above if is_low_fidelity(t)]
    ks = [len(t.user_attrs["timesteps"]) for t in above]
    by_k = ", ".join(f"K={k}: {ks.count(k)}" for k in sorted(set(ks)))
    return (f"stage 2 trials above 2x the best stage-1 FID at their K: {len(above)}/{len(scored)} = {share:.0%} "
            f"(target <= 20%; {len(low)} of them stopped at the low fidelity; {by_k or 'none'})")


def main() -> None:
    parser = _harness.argument_parser(__doc__)
    _harness.add_common_arguments(parser, model="digits", seed=0)
    parser.add_argument("--reference-fid", type=float, default=20.0, help="FID coordinate of the hypervolume reference")
    parser.add_argument("--architecture-trials", type=int, default=None, help="stage 2's budget (default: the preset's)")
    parser.add_argument("--study", default="digits", choices=["digits", "digits-dit"])
    parser.add_argument("--probe-samples", type=int, default=None, help="stage 2's probes (default: the preset's; 0: none)")
    args = parser.parse_args()
    if args.study != "digits" and args.model != "digits":
        parser.error("--model changes the digits study's model; digits-dit has its own")
    config = _harness.replace_section(_harness.study_config(args.study, args.model), "sampling", seed=args.seed)
    changes = {"n_trials": args.architecture_trials, "probe_samples": args.probe_samples}
    changes = {key: value for key, value in changes.items() if value is not None}
    config = _harness.replace_section(config, "architecture", **changes)
    with _harness.temporary_storage("digits.db") as storage:
        studies = run_optimize(config, storage, echo=lambda _: None)
        fronts = {stage: pareto_front(study) for stage, study in studies.items()}
    print(wasted_share(studies["timesteps"], studies["architecture"]))
    max_macs = max(row.macs for rows in fronts.values() for row in rows)
    reference = np.array([args.reference_fid, 1.1 * max_macs])
    for stage, rows in fronts.items():
        print(f"{stage} front ({len(studies[stage].trials)} trials, {config.timesteps.num_samples} samples per trial), "
              f"hypervolume {hypervolume(rows, reference):.4g} (reference FID {reference[0]:g}, MACs {reference[1]:.4g})")
        print(format_front(rows))
    stage1_four = [row for row in fronts["timesteps"] if row.plan.num_steps == 4]
    if not stage1_four:
        print("stage 1 front has no 4-step plan")
        return
    anchor = min(stage1_four, key=lambda row: row.fid)
    cheaper = [row for row in fronts["architecture"] if row.macs <= anchor.macs]
    evaluator = build_evaluator(config)
    anchor_fid = evaluator.evaluate(anchor.plan, FULL_SAMPLES).fid
    print(f"\nre-scored with {FULL_SAMPLES} samples (same seeded noise and labels)")
    print(f"stage 1 best 4-step plan: FID {anchor_fid:.3f}, {anchor.macs / 1e9:.4f} GMACs  [{anchor.plan}]")
    if cheaper:
        best = min(cheaper, key=lambda row: row.fid)
        fid = evaluator.evaluate(best.plan, FULL_SAMPLES).fid
        print(f"stage 2 best at <= its MACs: FID {fid:.3f} ({(1 - fid / anchor_fid) * 100:+.1f}% lower), "
              f"{best.macs / 1e9:.4f} GMACs ({(1 - best.macs / anchor.macs) * 100:.1f}% fewer)  [{best.plan}]")
    rescored = [(evaluator.evaluate(row.plan, FULL_SAMPLES).fid, row) for row in cheaper]
    within = [(fid, row) for fid, row in rescored if fid <= 1.05 * anchor_fid]
    if within:
        fid, row = min(within, key=lambda pair: pair[1].macs)
        print(f"stage 2 cheapest within 5% of its FID: FID {fid:.3f}, {row.macs / 1e9:.4f} GMACs "
              f"({(1 - row.macs / anchor.macs) * 100:.1f}% fewer)  [{row.plan}]")
    evaluator.close()


if __name__ == "__main__":
    _harness.timed_main(main)
