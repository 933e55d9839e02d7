"""diffusers' video caches on the digits-video model along the stage-1 plan, swept, against stage 2's plans at equal MACs.

Four caches of the installed diffusers (``diffusers.hooks``), each put on the bundled ``WanTransformer3DModel``
with ``transformer.enable_cache(config)`` and run along the stage-1 plan (the study's solver, seeded noise
and labels), their state reset at the start of each batch's trajectory:

* First-Block-Cache (``FirstBlockCacheConfig(threshold)``): block 0 always runs; blocks 1..3 are replaced by
  their cached residual when block 0's output residual changed by less than ``threshold`` since the last call.
* MagCache (``MagCacheConfig(threshold, max_skip_steps=3, retention_ratio=0.2, num_inference_steps=K,
  mag_ratios)``): all blocks are replaced by the last call's residual while the accumulated error
  ``sum |1 - prod ratios|`` stays under ``threshold``. The ratios are calibrated on this model along this
  plan by diffusers' own calibration mode (``calibrate=True``: per step, the mean over tokens of the norm
  of all blocks' residual over the last step's), on the first batch of the scored samples.
* Pyramid Attention Broadcast (``PyramidAttentionBroadcastConfig``): inside a time-step range, self-attention
  is recomputed every N calls and cross-attention (the label) every M, their outputs reused in between.
* FasterCache (``FasterCacheConfig``, ``is_guidance_distilled=True``: at guidance 1 there is no
  unconditional branch to cache): inside a time-step range self-attention runs every N calls; in between
  its output is extrapolated from its last two, ``t + 0.5 (t - t_prev)``.

MACs are counted as spent, per denoiser call: the full call less what did not run (a block's first norm,
an attention's query projection mark that they ran; priced from the per-block table). Stage 2's plans
(skips and reuses from the search: its re-scored plans at the stage-1 plan's K and its Pareto front of any
K) are scored alike, their MACs from the table.
Each setting prints its MACs, the per-frame FID and the teacher PSNR (dB, per frame, against the model's
own many-step samples of the same noise and labels: ``optuna_diffusion.fitness`` teacher distance), all
from the same samples. Plans come from
``python benchmarks/digits_dit_study.py --study digits-video --samples 200 --plans-out video_plans.json``.
Run: python benchmarks/video_caches.py --plans video_plans.json [--samples 400] [--caches fbc mag pab faster]
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

import _harness
from optuna_diffusion.evaluation import PlanEvaluator, default_cache_dir
from optuna_diffusion.fitness import TeacherFitness, TeacherStore
from optuna_diffusion.plan import Plan
from optuna_diffusion.study import build_evaluator
from optuna_diffusion.study_config import load_study_config

CACHES = ("fbc", "mag", "pab", "faster")
FBC_THRESHOLDS = (0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5)
MAG_THRESHOLDS = (0.06, 0.25, 0.5, 1.0, 2.0, 4.0)
PAB_RANGES = ((None, 2), (2, None), (2, 2), (4, 4))  # (self-attention N, cross-attention M)
FASTER_RANGES = (2, 3, 4)  # self-attention N
TIMESTEP_CUTS = (1000.0, 500.0)  # the caches act only below this time step (and above -1)

Row = tuple[str, str, float, float, float]  # name, detail, FID, PSNR, MACs per sample


def score(evaluator: PlanEvaluator, teacher: TeacherFitness, plan: Plan, samples: int) -> tuple[float, float]:
    """(FID, teacher PSNR in dB) of the same ``samples`` samples of ``plan``, generated once."""
    images = evaluator.generate(plan, samples, 0, samples).clamp(-1, 1)
    values = []
    for meter in (evaluator.fitness, teacher):
        meter.begin(samples)
        meter.update(images, 0, samples)
        values.append(meter.compute())
    fid, negative_psnr = values
    return fid, -negative_psnr


def block_probes(transformer: torch.nn.Module, table: Any, first: int = 0) -> list[tuple[torch.nn.Module, int]]:
    """Blocks ``first``.. of a Wan transformer: each block's first norm runs only when the block runs."""
    return [(block.norm1, table.reuse_savings[f"blocks.{i}"]) for i, block in enumerate(transformer.blocks) if i >= first]


def attention_probes(transformer: torch.nn.Module, table: Any, cross: bool) -> list[tuple[torch.nn.Module, int]]:
    """Self-attention (and with ``cross`` cross-attention) of each Wan block: the query projection runs only when it runs."""
    probes = [(block.attn1.to_q, table.reuse_savings[f"blocks.{i}.attn"]) for i, block in enumerate(transformer.blocks)]
    if cross:
        probes += [(block.attn2.to_q, table.reuse_savings[f"blocks.{i}.cross_attn"]) for i, block in enumerate(transformer.blocks)]
    return probes


def calibrate_magcache(evaluator: PlanEvaluator, plan: Plan, samples: int, batch: int) -> list[float]:
    """MagCache's magnitude ratios of this model along ``plan``: diffusers' calibration mode on one batch."""
    from diffusers.hooks import MagCacheConfig

    transformer = evaluator.model.denoiser
    # One step more than the plan has, so the ratios are not printed and cleared at the trajectory's end.
    transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=plan.num_steps + 1))
    try:
        _harness.reset_cache_hooks(transformer)
        evaluator.generate(plan, samples, 0, min(batch, samples))
        head = transformer.blocks[0]._diffusers_hook.get_hook("mag_cache_leader_block_hook")
        ratios = list(head.state_manager.get_state().calibration_ratios)
    finally:
        transformer.disable_cache()
    if len(ratios) != plan.num_steps:
        raise RuntimeError(f"MagCache calibration gave {len(ratios)} ratios for {plan.num_steps} steps")
    return ratios


def settings(cache: str, plan: Plan, timestep: Callable[[], float], mag_ratios: list[float] | None) -> Iterator[tuple[str, Any]]:
    """(name, diffusers config) of each swept setting of ``cache``."""
    from diffusers.hooks import (
        FasterCacheConfig,
        FirstBlockCacheConfig,
        MagCacheConfig,
        PyramidAttentionBroadcastConfig,
    )

    if cache == "fbc":
        for threshold in FBC_THRESHOLDS:
            yield f"FBC {threshold:g}", FirstBlockCacheConfig(threshold=threshold)
    elif cache == "mag":
        for threshold in MAG_THRESHOLDS:
            yield f"MagCache {threshold:g}", MagCacheConfig(
                threshold=threshold, num_inference_steps=plan.num_steps, mag_ratios=list(mag_ratios or []))
    elif cache == "pab":
        for cut in TIMESTEP_CUTS:
            for spatial, cross in PAB_RANGES:
                yield f"PAB {spatial or '-'}/{cross or '-'} t<{cut:g}", PyramidAttentionBroadcastConfig(
                    spatial_attention_block_skip_range=spatial, cross_attention_block_skip_range=cross,
                    spatial_attention_timestep_skip_range=(-1, cut), cross_attention_timestep_skip_range=(-1, cut),
                    current_timestep_callback=timestep)
    elif cache == "faster":
        # FasterCache skips from its first call when that lies in its range (and has nothing cached yet):
        # the range must end at or below the first time step.
        for cut in sorted({min(cut, float(plan.timesteps[0]) - 0.5) for cut in TIMESTEP_CUTS}, reverse=True):
            for spatial in FASTER_RANGES:
                yield f"Faster {spatial} t<{cut:g}", FasterCacheConfig(
                    spatial_attention_block_skip_range=spatial, spatial_attention_timestep_skip_range=(-1, cut),
                    is_guidance_distilled=True, attention_weight_callback=lambda _: 0.5,
                    current_timestep_callback=timestep)
    else:
        raise ValueError(f"unknown cache {cache!r}; known: {', '.join(CACHES)}")


def probes_of(cache: str, transformer: torch.nn.Module, table: Any) -> list[tuple[torch.nn.Module, int]]:
    """What each cache may leave out of a call: blocks 1.. (FBC), all blocks (MagCache), attention (PAB, FasterCache)."""
    return {
        "fbc": lambda: block_probes(transformer, table, first=1),
        "mag": lambda: block_probes(transformer, table),
        "pab": lambda: attention_probes(transformer, table, cross=True),
        "faster": lambda: attention_probes(transformer, table, cross=False),
    }[cache]()


def sweep(evaluator: PlanEvaluator, teacher: TeacherFitness, plan: Plan, caches: list[str], samples: int) -> list[Row]:
    """Every setting of every cache along ``plan``, each scored with FID, teacher PSNR and the MACs spent."""
    transformer, table = evaluator.model.denoiser, evaluator.macs_table
    mag_ratios = calibrate_magcache(evaluator, plan, samples, evaluator.batch_size) if "mag" in caches else None
    if mag_ratios is not None:
        print(f"MagCache ratios calibrated along {list(plan.timesteps)}: " + ", ".join(f"{r:.3f}" for r in mag_ratios))
    rows = []
    for cache in caches:
        meter = _harness.SpentMacsMeter(transformer, plan.num_steps, table.full, probes_of(cache, transformer, table))
        try:
            for name, config in settings(cache, plan, lambda: meter.timestep, mag_ratios):
                transformer.enable_cache(config)
                meter.restart()
                try:
                    fid, psnr = score(evaluator, teacher, plan, samples)
                finally:
                    transformer.disable_cache()
                if meter.calls % plan.num_steps:
                    raise RuntimeError(f"{name}: a trajectory was not run through the denoiser")
                detail = f"{meter.skipped_parts / (meter.calls or 1):.2f} parts left out per call of {len(meter.savings)}"
                rows.append((name, detail, fid, psnr, meter.macs / samples))
        finally:
            meter.remove()
    return rows


def main() -> None:
    parser = _harness.argument_parser(__doc__)
    parser.add_argument("--plans", type=Path, required=True, help="JSON from digits_dit_study.py --plans-out")
    parser.add_argument("--caches", nargs="+", choices=CACHES, default=list(CACHES))
    _harness.add_common_arguments(parser, samples=400, threads=1)
    parser.add_argument("--teacher-dir", type=Path, default=default_cache_dir() / "benchmark-teachers",
                        help="where the teacher's samples are kept between runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("diffusers").setLevel(logging.ERROR)  # FasterCache warns that it is experimental, at each use

    plans = json.loads(args.plans.read_text())
    config = load_study_config(plans["study"])
    # No prefix cache: a cache must see every denoiser call of every plan.
    config = _harness.replace_section(config, "sampling", prefix_cache_mb=0)
    evaluator = build_evaluator(config)
    teacher = evaluator.bind(TeacherFitness("psnr", steps=config.fitness.teacher_steps, store=TeacherStore(args.teacher_dir)))
    timer = _harness.Timer()
    teacher.targets(args.samples)  # before any cache is on: the teacher runs the full network
    anchor = Plan.from_dict(plans["stage1"]["plan"])
    full = evaluator.macs(anchor)
    print(f"{plans['study']}: one denoiser call {evaluator.macs_table.full / 1e6:.3f} MMACs; {args.samples} samples "
          f"(the search scored {plans.get('samples', '?')}: the first of these), batches of {config.sampling.batch_size}; "
          f"teacher {teacher.plan.num_steps} steps ({timer.seconds:.0f} s)")
    print(f"stage-1 plan {list(anchor.timesteps)} ({anchor.num_steps} steps), {full / 1e6:.3f} MMACs per sample")

    rows: list[Row] = [("stage 1", "full network", *score(evaluator, teacher, anchor, args.samples), full)]
    ours: list[Row] = []
    plans_by_text: dict[str, Plan] = {}
    # Stage 2's plans at the stage-1 plan's K and its Pareto front of any K, each once.
    entries = [*plans["stage2"], *plans.get("stage2_front", [])]
    for entry in {json.dumps(row["plan"], sort_keys=True): row for row in entries}.values():
        plan = Plan.from_dict(entry["plan"])
        plans_by_text[str(plan)] = plan
        ours.append(("ours (stage 2)", str(plan), *score(evaluator, teacher, plan, args.samples), evaluator.macs(plan)))
    # The caches ride along the stage-1 plan, and along the time steps of stage 2's plans of other K
    # with the full network (where stage 2 started from), so they are also compared at the same steps.
    anchors = {anchor.timesteps: anchor}
    for _, detail, *_ in ours:
        plan = plans_by_text[detail]
        anchors.setdefault(plan.timesteps, Plan(plan.timesteps, num_train_timesteps=plan.num_train_timesteps,
                                                schedule_kind=plan.schedule_kind, solver=plan.solver))
    rivals: list[Row] = []
    for plan in anchors.values():
        if plan is not anchor:
            rows.append((f"K={plan.num_steps} full network", str(plan), *score(evaluator, teacher, plan, args.samples),
                         evaluator.macs(plan)))
        suffix = "" if plan is anchor else f" @K={plan.num_steps}"
        rivals += [(name + suffix, *rest) for name, *rest in sweep(evaluator, teacher, plan, args.caches, args.samples)]
    evaluator.close()

    print(f"{'setting':<24} {'FID':>8} {'PSNR dB':>8} {'MMACs':>8} {'vs stage 1':>10}  detail")
    for name, detail, fid, psnr, macs in sorted(rows + ours + rivals, key=lambda row: (-row[4], row[2])):
        print(f"{name:<24} {fid:8.2f} {psnr:8.2f} {macs / 1e6:8.3f} {(macs / full - 1) * 100:+9.1f}%  {detail}")
    for metric, index in (("FID", 2), ("PSNR", 3)):
        print(f"at equal MACs, by {metric}:")
        pick = [(row[0], row[1], row[index], row[4]) for row in ours]
        rival_rows = [(row[0], row[1], row[index], row[4]) for row in rivals]
        for line in _harness.equal_macs_verdicts(pick, rival_rows, "cache", metric, higher_is_better=metric == "PSNR"):
            print("  " + line)


if __name__ == "__main__":
    _harness.timed_main(main)
