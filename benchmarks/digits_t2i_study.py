"""The digits-t2i preset end to end: both stages on the bundled text-to-image pipeline, then its 4-step plans.

Runs ``optuna-diffusion optimize --study digits-t2i`` (default budgets: stage 1 scored by PSNR to the
pipeline's own 50-step images, fronts re-scored by FID) into a fresh SQLite storage and a fresh
artifacts folder (the teacher's images are generated inside the timed run), and prints its wall time.
Then, on ``--samples`` samples (prompt i mod 300 of the shipped prompts, the study's seeded noise), it
scores at 4 steps: the best searched 4-step plan of stage 1, the hand-designed uniform and quadratic
schedules, the schedule the pipeline's own scheduler config gives (``set_timesteps(4)``: leading
spacing, offset 1), all under the study's solver, and diffusers' ``StableDiffusionPipeline`` exactly as
shipped (its PNDM scheduler, ``num_inference_steps=4``). For each: FID (digits feature space, 8x8, all
1,797 real digits) and the share of images whose digit the digits classifier reads as the prompted one.
Run: python benchmarks/digits_t2i_study.py [--samples 1000]
"""

from __future__ import annotations

import torch

import _harness
from optuna_diffusion.baselines import baseline_plan
from optuna_diffusion.fid import fid_of_images, load_feature_extractor
from optuna_diffusion.reference_stats import reference_stats
from optuna_diffusion.plan import Plan
from optuna_diffusion.runner import run_optimize
from optuna_diffusion.front import format_front, pareto_front
from optuna_diffusion.study import build_evaluator, metric_label
from optuna_diffusion.study_config import load_study_config
from optuna_diffusion.zoo import bundled_model_path
from optuna_diffusion.zoo.data import load_digits_images
from optuna_diffusion.zoo.digit_prompts import digit_of_prompt
from optuna_diffusion.zoo.feature_net import as_digits


def scores(images: torch.Tensor, texts: list[str], extractor, reference) -> tuple[float, float]:
    """FID of ``images`` (in [-1, 1], any size) and the share read as their prompt's digit."""
    digits = as_digits(images)
    with torch.inference_mode():
        predicted = extractor.classify(digits).argmax(dim=1)
    wanted = torch.tensor([digit_of_prompt(text) for text in texts])
    return fid_of_images(digits, reference, extractor), (predicted == wanted).float().mean().item()


def shipped_pipeline_images(config, texts: list[str], steps: int, batch_size: int = 250) -> torch.Tensor:
    """Images of diffusers' StableDiffusionPipeline as shipped (its own scheduler), in [-1, 1]."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(bundled_model_path("digits-t2i"))
    pipe.set_progress_bar_config(disable=True)
    batches = []
    for start in range(0, len(texts), batch_size):
        out = pipe(texts[start:start + batch_size], num_inference_steps=steps, guidance_scale=config.sampling.guidance_scale,
                   generator=torch.Generator().manual_seed(config.sampling.seed + start), output_type="pt").images
        batches.append(out * 2 - 1)
    return torch.cat(batches)


def pipeline_default_plan(steps: int, schedule) -> Plan:
    """The time steps the pipeline's scheduler config gives for ``steps`` steps (DDIM's set_timesteps)."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_pretrained(bundled_model_path("digits-t2i"), subfolder="scheduler")
    scheduler.set_timesteps(steps)
    return Plan([int(t) for t in scheduler.timesteps], num_train_timesteps=schedule.num_train_timesteps)


def main() -> None:
    parser = _harness.argument_parser(__doc__)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    config = load_study_config("digits-t2i")
    with _harness.temporary_storage("digits-t2i.db") as storage:
        timer = _harness.Timer()
        studies = run_optimize(config, storage, echo=lambda _: None)
        seconds = timer.seconds
        fronts = {stage: pareto_front(study) for stage, study in studies.items()}
    print(f"digits-t2i preset, both stages with default budgets: {seconds / 60:.1f} min "
          f"({len(studies['timesteps'].trials)} + {len(studies['architecture'].trials)} trials, teacher generated inside)")
    for stage, rows in fronts.items():
        print(f"{stage} front:\n{format_front(rows, metric=metric_label(config))}")
    searched = [row for row in fronts["timesteps"] if row.plan.num_steps == args.steps]
    evaluator = build_evaluator(config)
    schedule = evaluator.generator.schedule
    plans = {
        f"searched (stage 1, {config.fitness.metric} fitness)": searched[0].plan if searched else None,
        "uniform": baseline_plan("uniform", args.steps, schedule),
        "quadratic": baseline_plan("quadratic", args.steps, schedule),
        "pipeline config's schedule": pipeline_default_plan(args.steps, schedule),
    }
    extractor = load_feature_extractor("digits")
    reference = reference_stats(load_digits_images()[0], extractor)
    prompts = [prompt.text for prompt in config.prompts.load()]
    texts = [prompts[i % len(prompts)] for i in range(args.samples)]
    print(f"\n{args.steps} steps, {args.samples} samples, guidance {config.sampling.guidance_scale:g}; "
          f"FID vs all 1,797 real digits, prompt accuracy by the digits classifier")
    print(f"{'plan':<40} {'FID':>7} {'accuracy':>9}  time steps")
    for label, plan in plans.items():
        if plan is None:
            print(f"{label:<40} (no {args.steps}-step plan on the front)")
            continue
        images = evaluator.evaluate(plan, args.samples, keep_images=args.samples).images
        fid, accuracy = scores(images, texts, extractor, reference)
        print(f"{label:<40} {fid:7.2f} {accuracy:9.1%}  {list(plan.timesteps)}  [{config.sampling.solver}]", flush=True)
    evaluator.close()
    fid, accuracy = scores(shipped_pipeline_images(config, texts, args.steps), texts, extractor, reference)
    print(f"{'StableDiffusionPipeline as shipped':<40} {fid:7.2f} {accuracy:9.1%}  (its PNDM scheduler, "
          f"num_inference_steps={args.steps})")


if __name__ == "__main__":
    _harness.timed_main(main, "total {:.0f} s")
