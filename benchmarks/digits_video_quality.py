"""Quality of the bundled video model digits-video: per-frame FID, motion direction and digit, many steps vs few.

Runs the preset's model and fitness (``studies/digits-video.toml``: flow Euler, every frame through the
digits feature net on its 8x8 ink window, against the frames of all 7,188 real clips) with a many-step
uniform plan and few-step uniform plans, on the preset's seeded noise and balanced labels. Besides FID it
prints how often the clip moves in its label's direction (the sign of the ink's centre-of-mass displacement
from the first frame to the last, along the larger axis) and how often the digits classifier (the feature
net's head) recognises the label's digit in the middle frame's ink window. Two halves of the real clips
give the FID floor.
Run: python benchmarks/digits_video_quality.py [--samples 400] [--many 100] [--few 4 8] [--guidance 1.0]
"""

from __future__ import annotations

import dataclasses
import time

import torch

import _harness
from optuna_diffusion.baselines import baseline_plan
from optuna_diffusion.fid import fid_of_images, load_feature_extractor
from optuna_diffusion.frames import frames_as_images
from optuna_diffusion.generation import class_labels
from optuna_diffusion.reference_stats import reference_stats
from optuna_diffusion.study import build_evaluator
from optuna_diffusion.study_config import load_study_config
from optuna_diffusion.zoo.frame_features import ink_windows, motion_directions
from optuna_diffusion.zoo.moving_digits import digit_of, direction_of, load_moving_digits


def main() -> None:
    parser = _harness.argument_parser(__doc__)
    parser.add_argument("--samples", type=int, default=400, help="clips per plan (8 frames each)")
    parser.add_argument("--many", type=int, default=100, help="steps of the many-step plan")
    parser.add_argument("--few", type=int, nargs="+", default=[4, 8], help="steps of the few-step plans")
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale")
    args = parser.parse_args()
    config = load_study_config("digits-video")
    config = dataclasses.replace(config, sampling=dataclasses.replace(config.sampling, guidance_scale=args.guidance))
    evaluator = build_evaluator(config)
    digits_net = load_feature_extractor("digits")
    labels = class_labels(config.sampling.seed, args.samples, config.sampling.num_classes, config.sampling.labels)
    rows = []
    try:
        for steps in [args.many, *args.few]:
            plan = baseline_plan("uniform", steps, evaluator.generator.schedule)
            started = time.perf_counter()
            result = evaluator.evaluate(plan, args.samples, keep_images=args.samples)
            videos = result.images  # (N, F, C, H, W), clamped to [-1, 1]
            direction_right = (motion_directions(videos) == direction_of(labels)).float().mean().item()
            middle = videos[:, videos.shape[1] // 2]
            with torch.inference_mode():
                digit_right = (digits_net.classify(ink_windows(middle)).argmax(1) == digit_of(labels)).float().mean().item()
            rows.append((f"flow Euler, uniform, {steps} steps", result.fid, direction_right, digit_right,
                         time.perf_counter() - started))
            print(f"{rows[-1][0]}: FID {result.fid:.2f}, direction {direction_right:.3f}, digit {digit_right:.3f}", flush=True)
    finally:
        evaluator.close()
    real, real_labels = load_moving_digits()
    real = real.transpose(1, 2)
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    extractor = load_feature_extractor("digits-frames")
    half = len(real) // 2
    halves_fid = fid_of_images(frames_as_images(real[order[half:]])[0], reference_stats(real[order[:half]], extractor), extractor)
    with torch.inference_mode():
        real_digit = (digits_net.classify(ink_windows(real[:, real.shape[1] // 2])).argmax(1) == digit_of(real_labels)).float().mean().item()
    real_direction = (motion_directions(real) == direction_of(real_labels)).float().mean().item()
    print(f"\ndigits-video, {args.samples} clips x 8 frames per plan, guidance {args.guidance:g}; "
          f"FID per frame against all {len(real) * real.shape[1]:,} real frames")
    print(f"{'sampler':<34} {'FID':>7} {'direction':>10} {'digit':>7} {'seconds':>8}")
    for label, fid, direction, digit, seconds in rows:
        print(f"{label:<34} {fid:7.2f} {direction:10.3f} {digit:7.3f} {seconds:8.1f}")
    print(f"{'real clips (half vs other half)':<34} {halves_fid:7.2f} {real_direction:10.3f} {real_digit:7.3f}")


if __name__ == "__main__":
    main()
