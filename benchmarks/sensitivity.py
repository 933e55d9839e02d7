"""Per-step, per-block sensitivity: what skipping or reusing one block at one step costs in FID.

Starts from a plan (default: the 4-step plan stage 1 finds on the digits model) and, for every step and
every block, changes only that choice; prints FID (500 samples, common random numbers) and the MACs
saved, so it shows which blocks stage 2 can give up cheaply.
Run: python benchmarks/sensitivity.py [--timesteps 887 439 199 86] [--samples 500]
"""

from __future__ import annotations

import argparse

from optuna_diffusion.evaluation import digits_evaluator
from optuna_diffusion.plan import Plan

PREFIX_CACHE_BYTES = 512 * 2**20  # shared trajectory prefixes: faster, same FIDs bit for bit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, nargs="+", default=[887, 439, 199, 86])
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()
    evaluator = digits_evaluator(prefix_cache=PREFIX_CACHE_BYTES)
    base = Plan(args.timesteps)
    base_fid = evaluator.evaluate(base, args.samples).fid
    full = evaluator.macs_table.full
    print(f"base plan {base}: FID {base_fid:.3f} ({args.samples} samples); one UNet evaluation = {full / 1e6:.2f} MMACs")
    print(f"{'block':<16} {'action':<6} {'MMACs saved':>11}  FID change when applied at " + " ".join(f"{'t=' + str(t):>8}" for t in base.timesteps))
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
            print(f"{block.name:<16} {action:<6} {saved / 1e6:11.2f}  " + " ".join(cells), flush=True)
    evaluator.close()


if __name__ == "__main__":
    main()
