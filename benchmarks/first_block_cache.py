"""diffusers' First-Block-Cache on the digits DiT along the stage-1 plan, thresholds swept, against our stage-2 plan.

``apply_first_block_cache(transformer, FirstBlockCacheConfig(threshold=...))`` runs the first transformer
block at every call and skips the others, adding their cached residual, when the first block's output
residual changed by less than ``threshold`` (relative mean absolute difference over the batch) since
the last call. Here it runs along the stage-1 plan (flow Euler, the preset's batches of 500, same seeded
noise and labels); its state is reset at the start of each batch's trajectory. MACs are counted as
actually spent: a full forward when the cache misses, the forward without blocks 1..L-1 when it hits
(hits counted by a hook on the second block). Our stage-2 plan (skips and reuses from the search) is
scored the same way, with its MACs from the per-block table. Target: our stage-2 plan has lower FID
than every First-Block-Cache setting that spends as many MACs or more.
Plans come from ``python benchmarks/digits_dit_study.py --plans-out dit_plans.json``.
Run: python benchmarks/first_block_cache.py --plans dit_plans.json [--thresholds 0.05 0.1 ...] [--extra plan.json]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

import _harness
from optuna_diffusion.plan import Plan
from optuna_diffusion.study import build_evaluator
from optuna_diffusion.study_config import load_study_config

FULL_SAMPLES = _harness.ALL_DIGITS
DEFAULT_THRESHOLDS = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 2.0]


def main() -> None:
    parser = _harness.argument_parser(__doc__)
    parser.add_argument("--plans", type=Path, required=True, help="JSON from digits_dit_study.py --plans-out")
    parser.add_argument("--thresholds", type=float, nargs="+", default=DEFAULT_THRESHOLDS)
    parser.add_argument("--samples", type=int, default=FULL_SAMPLES)
    _harness.add_common_arguments(parser, threads=1)
    parser.add_argument("--extra", type=Path, nargs="*", default=[],
                        help="more plans to score alike (JSON, e.g. sensitivity.py --greedy ... --plan-out)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    plans = json.loads(args.plans.read_text())
    config = load_study_config(plans["study"])
    # No prefix cache: First-Block-Cache must see every denoiser call of every plan.
    config = _harness.replace_section(config, "sampling", prefix_cache_mb=0)
    evaluator = build_evaluator(config)
    table = evaluator.macs_table
    transformer = evaluator.model.denoiser
    layers = len(transformer.transformer_blocks)
    cached = table.full - sum(table.reuse_savings[f"blocks.{i}"] for i in range(1, layers))
    anchor = Plan.from_dict(plans["stage1"]["plan"])
    ours = [(Plan.from_dict(row["plan"])) for row in plans["stage2"]]
    print(f"{plans['study']}: one DiT call {table.full / 1e6:.3f} MMACs, first block only (cache hit) {cached / 1e6:.3f} MMACs; "
          f"{args.samples} samples, batches of {config.sampling.batch_size}")
    print(f"stage-1 plan {list(anchor.timesteps)} ({anchor.num_steps} steps)")
    rows = []
    for plan in ours:
        result = evaluator.evaluate(plan, args.samples)
        rows.append(("ours (stage 2)", str(plan), result.fid, result.macs, None))
    for path in args.extra:
        plan = Plan.from_json(path.read_text())
        result = evaluator.evaluate(plan, args.samples)
        rows.append((f"{path.stem}", str(plan), result.fid, result.macs, None))

    apply_first_block_cache(transformer, FirstBlockCacheConfig(threshold=args.thresholds[0]))
    # A cache hit skips blocks 1..L-1 (they run only on a miss): the second block's first norm marks a miss.
    probes = [(transformer.transformer_blocks[1].norm1, table.full - cached)]
    meter = _harness.SpentMacsMeter(transformer, anchor.num_steps, table.full, probes)
    head = transformer.transformer_blocks[0]._diffusers_hook.get_hook("fbc_leader_block_hook")
    for threshold in args.thresholds:
        head.threshold = threshold
        meter.restart()
        result = evaluator.evaluate(anchor, args.samples)
        assert meter.calls % anchor.num_steps == 0, "a trajectory was not run through the denoiser"
        rows.append((f"FBC {threshold:g}", f"{meter.partial}/{meter.calls} calls cached", result.fid,
                     meter.macs / args.samples, threshold))
    meter.remove()
    evaluator.close()

    anchor_macs = plans["stage1"]["macs"]
    print(f"{'setting':<16} {'FID':>8} {'MMACs/image':>12} {'vs stage 1':>10}  detail")
    for name, detail, fid, macs, _ in sorted(rows, key=lambda row: -row[3]):
        print(f"{name:<16} {fid:8.3f} {macs / 1e6:12.3f} {(macs / anchor_macs - 1) * 100:+9.1f}%  {detail}")
    fbc = [row[:4] for row in rows if row[4] is not None]
    for line in _harness.equal_macs_verdicts([row[:4] for row in rows if row[4] is None], fbc, "FBC"):
        print(line)


if __name__ == "__main__":
    _harness.timed_main(main)
