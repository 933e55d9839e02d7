"""Per-step, per-block sensitivity: what skipping or reusing one block at one step costs in FID.

Starts from a plan (default: the 4-step plan stage 1 finds on the digits model) and, for every step and
every block, changes only that choice; prints FID (500 samples, common random numbers) and the MACs
saved, so it shows which blocks stage 2 can give up cheaply. ``--study digits-dit`` does the same on
the bundled DiT (its blocks ``blocks.i``, ``blocks.i.attn``, ``blocks.i.ff``; pass its plan's steps).

``--greedy F`` then combines single changes: at each round it tries adding every remaining change (of
those whose single FID change is at most ``--greedy-max-change``) to the plan so far and keeps the one
with the least FID increase per MAC saved, until the plan saves at least the fraction F of the base
plan's MACs; the base and the final plan are re-scored with ``--final-samples``, changes are dropped
while that FID falls and the cut holds, and both plans are re-scored on held-out seeds. Single changes
do not add up, so this path is what a cheap combination costs, not a bound.
Run: python benchmarks/sensitivity.py [--timesteps 887 439 199 86] [--samples 500] [--study digits]
     [--greedy 0.25]
"""

from __future__ import annotations

from pathlib import Path

import torch

import _harness
from optuna_diffusion.blocks import check_plan_blocks
from optuna_diffusion.errors import OptunaDiffusionError
from optuna_diffusion.plan import Plan
from optuna_diffusion.study import build_evaluator
from optuna_diffusion.study_config import load_study_config


def main() -> None:
    parser = _harness.argument_parser(__doc__)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[887, 439, 199, 86])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--study", default="digits", help="a preset of a digits model: digits or digits-dit")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--greedy", type=float, default=None, help="fraction of MACs the greedy combination must save")
    parser.add_argument("--greedy-max-change", type=float, default=1.0, help="single FID changes above this are left out")
    parser.add_argument("--final-samples", type=int, default=_harness.ALL_DIGITS)
    parser.add_argument("--plan-out", type=Path, default=None, help="write the greedy plan here (JSON)")
    parser.add_argument("--check-seeds", type=int, nargs="*", default=[1], help="sampling seeds of a held-out re-check")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    prefix_cache_mb = _harness.PREFIX_CACHE_BYTES / 2**20
    config = _harness.replace_section(load_study_config(args.study), "sampling", prefix_cache_mb=prefix_cache_mb)
    evaluator = build_evaluator(config)
    schedule = evaluator.generator.schedule
    base = Plan(args.timesteps, num_train_timesteps=schedule.num_train_timesteps, schedule_kind=schedule.kind)
    base_fid = evaluator.evaluate(base, args.samples).fid
    full = evaluator.macs_table.full
    denoiser = type(evaluator.model.denoiser).__name__
    print(f"{args.study}: base plan {base}: FID {base_fid:.3f} ({args.samples} samples); "
          f"one {denoiser} evaluation = {full / 1e6:.2f} MMACs")
    print(f"{'block':<16} {'action':<6} {'MMACs saved':>11}  FID change when applied at " + " ".join(f"{'t=' + str(t):>8}" for t in base.timesteps))
    singles: list[tuple[float, str, str, int]] = []  # (FID change, block, action, step)
    for block in evaluator.generator.switch.blocks:
        for action in sorted(block.actions):
            saved = (evaluator.macs_table.skip_savings if action == "skip" else evaluator.macs_table.reuse_savings)[block.name]
            cells = []
            for step in range(base.num_steps):
                if action == "reuse" and step == 0:
                    cells.append(f"{'-':>8}")
                    continue
                choice = [set() for _ in base.timesteps]
                choice[step].add(block.name)
                plan = base.with_blocks(choice, None) if action == "skip" else base.with_blocks([()] * base.num_steps, choice)
                fid = evaluator.evaluate(plan, args.samples).fid
                cells.append(f"{fid - base_fid:+8.2f}")
                singles.append((fid - base_fid, block.name, action, step))
            print(f"{block.name:<16} {action:<6} {saved / 1e6:11.2f}  " + " ".join(cells), flush=True)
    if args.greedy is not None:
        changes = [(name, action, step) for change, name, action, step in singles if change <= args.greedy_max_change]
        plan = greedy(evaluator, base, base_fid, changes, args.greedy, args.samples, args.final_samples)
        if args.plan_out is not None:
            args.plan_out.write_text(plan.to_json() + "\n")
        for seed in args.check_seeds:
            held_out_check(config, base, plan, seed, args.final_samples)
    evaluator.close()


def _with(base: Plan, chosen: list[tuple[str, str, int]]) -> Plan:
    skips = [set() for _ in base.timesteps]
    reuses = [set() for _ in base.timesteps]
    for name, action, step in chosen:
        (skips if action == "skip" else reuses)[step].add(name)
    return base.with_blocks(skips, reuses)


def greedy(evaluator, base: Plan, base_fid: float, changes, fraction: float, samples: int, final_samples: int) -> Plan:
    """Add single changes one at a time, least FID increase per MAC saved first, until ``fraction`` is saved;
    then, re-scored with ``final_samples``, drop changes one at a time while the FID falls and ``fraction`` is still saved."""
    base_macs = evaluator.macs(base)
    chosen: list[tuple[str, str, int]] = []
    fid, macs, plan = base_fid, base_macs, base
    print(f"\ngreedy combination to >= {fraction:.0%} fewer MACs ({len(changes)} candidate changes, {samples} samples)")
    print(f"{'round':>5} {'added':<28} {'FID':>8} {'MMACs':>8} {'saved':>7}")
    while macs > (1 - fraction) * base_macs:
        best = None
        for change in changes:
            if change in chosen:
                continue
            try:
                candidate = _with(base, chosen + [change])
                check_plan_blocks(candidate, evaluator.generator.switch.blocks)
                candidate_macs = evaluator.macs(candidate)
            except OptunaDiffusionError:
                continue  # overlaps a change already made (a block and its sub-layer, skip and reuse)
            if candidate_macs >= macs:
                continue
            candidate_fid = evaluator.evaluate(candidate, samples).fid
            score = (candidate_fid - fid) / (macs - candidate_macs)
            if best is None or score < best[0]:
                best = (score, change, candidate, candidate_fid, candidate_macs)
        if best is None:
            print("no change left that saves MACs")
            break
        _, change, plan, fid, macs = best
        chosen.append(change)
        print(f"{len(chosen):5d} {_name(base, change):<28} {fid:8.3f} "
              f"{macs / 1e6:8.2f} {(1 - macs / base_macs) * 100:6.1f}%", flush=True)
    base_full = evaluator.evaluate(base, final_samples).fid
    fid = evaluator.evaluate(plan, final_samples).fid
    print(f"re-scored with {final_samples} samples: base FID {base_full:.3f} at {base_macs / 1e6:.2f} MMACs; greedy plan "
          f"FID {fid:.3f} ({(fid / base_full - 1) * 100:+.1f}%) at {macs / 1e6:.2f} MMACs ({(1 - macs / base_macs) * 100:.1f}% fewer)")
    print(f"dropping changes while the FID falls ({final_samples} samples, >= {fraction:.0%} fewer MACs kept)")
    while True:
        best = None
        for change in chosen:
            rest = [c for c in chosen if c != change]
            candidate = _with(base, rest)
            candidate_macs = evaluator.macs(candidate)
            if candidate_macs > (1 - fraction) * base_macs:
                continue
            candidate_fid = evaluator.evaluate(candidate, final_samples).fid
            if candidate_fid < fid and (best is None or candidate_fid < best[0]):
                best = (candidate_fid, change, rest, candidate, candidate_macs)
        if best is None:
            break
        fid, change, chosen, plan, macs = best
        print(f"  dropped {_name(base, change):<28} FID {fid:.3f} ({(fid / base_full - 1) * 100:+.1f}%) at {macs / 1e6:.2f} "
              f"MMACs ({(1 - macs / base_macs) * 100:.1f}% fewer)", flush=True)
    print(f"final: FID {fid:.3f} ({(fid / base_full - 1) * 100:+.1f}%) at {macs / 1e6:.2f} MMACs "
          f"({(1 - macs / base_macs) * 100:.1f}% fewer)  [{plan}]")
    return plan


def _name(base: Plan, change: tuple[str, str, int]) -> str:
    name, action, step = change
    return f"{action} {name} @{base.timesteps[step]}"


def held_out_check(config, base: Plan, plan: Plan, seed: int, samples: int) -> None:
    """Both plans on other seeded noise and labels than the ones the choices were made on."""
    config = _harness.replace_section(config, "sampling", seed=seed)
    evaluator = build_evaluator(config)
    base_fid = evaluator.evaluate(base, samples).fid
    fid = evaluator.evaluate(plan, samples).fid
    evaluator.close()
    print(f"held out (sampling seed {seed}, {samples} samples): base FID {base_fid:.3f}, plan FID {fid:.3f} "
          f"({(fid / base_fid - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    _harness.timed_main(main)
