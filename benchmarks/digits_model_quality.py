"""Quality of the bundled digits models: FID of 100-step DDIM and 1000-step ancestral DDPM on the UNet,
100-step flow Euler on the DiT (``digits-dit``), and the text-to-image pipeline (``digits-t2i``).

FID is measured in the bundled digits feature space against all 1,797 real digits. ``digits-t2i`` runs
as diffusers' own ``StableDiffusionPipeline`` (its PNDM scheduler, 50 steps, the preset's guidance
scale) on the shipped prompts (sample i takes prompt i mod 300); its 32x32 images are area-averaged
back to 8x8. It prints how often the digits classifier (the feature net's head) recognises the
prompted digit, the measured ink mass and slant per prompted attribute beside the real digits', and FID.
Run: python benchmarks/digits_model_quality.py [--samples 1797] [--models digits digits-dit digits-t2i]
"""

from __future__ import annotations

import dataclasses

import torch

import _harness
from optuna_diffusion.evaluation import DIGITS_DIT_SETTINGS, DIGITS_SETTINGS, digits_evaluator
from optuna_diffusion.fid import fid_of_images, load_feature_extractor
from optuna_diffusion.reference_stats import reference_stats
from optuna_diffusion.plan import Plan
from optuna_diffusion.baselines import baseline_plan
from optuna_diffusion.zoo.data import load_digits_images
from optuna_diffusion.zoo.training import feature_net_accuracy


def main() -> None:
    parser = _harness.argument_parser(__doc__)
    parser.add_argument("--samples", type=int, default=_harness.ALL_DIGITS, help="samples of 100-step DDIM")
    parser.add_argument("--ddpm-samples", type=int, default=1000, help="samples of 1000-step DDPM (slow)")
    parser.add_argument("--models", nargs="+", default=["digits", "digits-dit", "digits-t2i"],
                        choices=["digits", "digits-dit", "digits-t2i"])
    parser.add_argument("--t2i-steps", type=int, default=50, help="digits-t2i: the pipeline's inference steps")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    extractor = load_feature_extractor("digits")
    accuracy = feature_net_accuracy(extractor)
    # Context for the model's FIDs: two random halves of the real digits, one against the other.
    images, _ = load_digits_images()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    halves_fid = fid_of_images(images[order[899:]], reference_stats(images[order[:899]], extractor), extractor)
    runs = []
    if "digits" in args.models:
        runs += [
            ("digits", "DDIM, 100 steps", DIGITS_SETTINGS, lambda schedule: baseline_plan("uniform", 100, schedule), args.samples),
            ("digits", "DDPM ancestral, 1000 steps", dataclasses.replace(DIGITS_SETTINGS, solver="ddpm"),
             lambda schedule: Plan(range(999, -1, -1)), args.ddpm_samples),
        ]
    if "digits-dit" in args.models:
        runs.append(("digits-dit", "flow Euler, 100 steps", DIGITS_DIT_SETTINGS,
                     lambda schedule: baseline_plan("uniform", 100, schedule), args.samples))
    if "digits-t2i" in args.models:
        rows.append(text_to_image_quality(extractor, args.samples, args.t2i_steps))
    for model, label, settings, plan_of, num_samples in runs:
        evaluator = digits_evaluator(settings, model=model)
        plan = plan_of(evaluator.generator.schedule)
        result = evaluator.evaluate(plan, num_samples)
        evaluator.close()
        rows.append((model, label, result.fid, num_samples, result.seconds))
        print(f"{model} {label}: FID {result.fid:.2f} ({num_samples} samples, {result.seconds:.0f}s)", flush=True)
    print(f"feature net held-out accuracy: {accuracy:.4f} ({len(images)} digits, fixed split)")
    print(f"FID of 898 real digits against the other 899: {halves_fid:.2f}")
    print(f"{'model':<11} {'sampler':<38} {'FID':>7} {'samples':>8} {'seconds':>8}   (vs all 1797 real digits)")
    for model, label, fid, num_samples, seconds in rows:
        print(f"{model:<11} {label:<38} {fid:7.2f} {num_samples:8d} {seconds:8.1f}")


def text_to_image_quality(extractor, num_samples: int, steps: int, batch_size: int = 100) -> tuple:
    """Prompt accuracy, attribute adherence and FID of ``digits-t2i`` run by diffusers' own pipeline."""
    from diffusers import StableDiffusionPipeline

    from optuna_diffusion.study_config import load_study_config
    from optuna_diffusion.zoo import bundled_model_path
    from optuna_diffusion.zoo.digit_prompts import digit_of_prompt, ink_mass, measure_attributes, slant
    from optuna_diffusion.zoo.feature_net import as_digits

    config = load_study_config("digits-t2i")
    guidance = config.sampling.guidance_scale
    prompts = [prompt.text for prompt in config.prompts.load()]
    pipe = StableDiffusionPipeline.from_pretrained(bundled_model_path("digits-t2i"))
    pipe.set_progress_bar_config(disable=True)
    timer = _harness.Timer()
    texts = [prompts[i % len(prompts)] for i in range(num_samples)]
    batches = []
    for start in range(0, num_samples, batch_size):
        generator = torch.Generator().manual_seed(start)
        out = pipe(texts[start:start + batch_size], num_inference_steps=steps, guidance_scale=guidance,
                   generator=generator, output_type="pt").images
        batches.append(as_digits(out * 2 - 1))
    images = torch.cat(batches)
    seconds = timer.seconds
    with torch.inference_mode():
        predicted = extractor.classify(images).argmax(dim=1)
    wanted = torch.tensor([digit_of_prompt(text) for text in texts])
    accuracy = (predicted == wanted).float().mean().item()
    real, labels = load_digits_images()
    fid = fid_of_images(images, reference_stats(real, extractor), extractor)
    label = f"SD pipeline, PNDM {steps} steps, guidance {guidance:g}"
    print(f"digits-t2i {label}: prompted digit recognised in {accuracy:.1%} of {num_samples} samples; "
          f"FID {fid:.2f} ({seconds:.0f}s)")
    # Attribute adherence: the measures the captions were made from, per prompted word, beside the real
    # digits that carry the word (terciles within each digit, as in training).
    real_words = measure_attributes(real, labels)
    measures = {"ink mass": (ink_mass, ("thin", "thick")), "slant": (slant, ("backslanted", "upright", "slanted"))}
    for measure, (function, words) in measures.items():
        generated, reference = function(images), function(real)
        cells = []
        for word in words:
            asked = torch.tensor([f" {word}" in f" {text.replace(',', ' ')} " for text in texts])
            had = torch.tensor([word in (w.thickness, w.slant) for w in real_words])
            cells.append(f"{word} {generated[asked].mean():.2f} (real {reference[had].mean():.2f}, n={int(asked.sum())})")
        print(f"  {measure} by prompted word: " + "; ".join(cells))
    return ("digits-t2i", label, fid, num_samples, seconds)


if __name__ == "__main__":
    _harness.timed_main(main)
