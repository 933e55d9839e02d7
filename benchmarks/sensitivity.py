"""Per-step, per-block sensitivity: what skipping or reusing one block at one step costs in FID.

Starts from a plan (default: the 4-step plan stage 1 finds on the digits model) and, for every step and
every block, changes only that choice; prints FID (500 samples, common random numbers) and the MACs
saved, so it shows which blocks stage 2 can give up cheaply. ``--study digits-dit`` does the same on
the bundled DiT (its blocks ``blocks.i``, ``blocks.i.attn``, ``blocks.i.ff``; pass its plan's steps).
Run: python benchmarks/sensitivity.py [--timesteps 887 439 199 86] [--samples 500] [--study digits]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from optuna_diffusion.plan import Plan
from optuna_diffusion.study import build_evaluator
from optuna_diffusion.study_config import load_study_config

PREFIX_CACHE_BYTES = 512 * 2**20  # shared trajectory prefixes: faster, same FIDs bit for bit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, nargs="+", default=[887, 439, 199, 86])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--study", default="digits", help="a preset of a digits model: digits or digits-dit")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_study_config(args.study)
    prefix_cache_mb = PREFIX_CACHE_BYTES / 2**20
    config = dataclasses.replace(config, sampling=dataclasses.replace(config.sampling, prefix_cache_mb=prefix_cache_mb))
    evaluator = build_evaluator(config)
    schedule = evaluator.generator.schedule
    base = Plan(args.timesteps, num_train_timesteps=schedule.num_train_timesteps, schedule_kind=schedule.kind)
    base_fid = evaluator.evaluate(base, args.samples).fid
    full = evaluator.macs_table.full
    denoiser = type(evaluator.model.denoiser).__name__
    print(f"{args.study}: base plan {base}: FID {base_fid:.3f} ({args.samples} samples); "
          f"one {denoiser} evaluation = {full / 1e6:.2f} MMACs")
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
    started = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - started:.0f}s")
