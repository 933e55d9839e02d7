"""What reproducing the paper costs: MACs of the imagenet64 (ADM-G) study, and a time estimate.

Builds full-size random stand-ins of guided-diffusion's ImageNet 64x64 UNet and its classifier (work
does not depend on the weights), counts one guided DDIM step as the study does (UNet forward with
fvcore, classifier forward plus its input-gradient backward counted by torch), and times a batch on
this machine. It then prints the MACs of each part of the paper's pipeline (stage 1, stage 2, the
final 50,000-sample FID) and two times: measured-throughput CPU hours on this machine, and an
estimate for one GPU. No GPU was measured when this was written: the GPU figure is an assumed sustained
throughput (``--gpu-tmacs``, default 50 TMAC/s: a recent data-centre GPU in half precision at about a
third of its peak), and every GPU figure printed says so next to it. Once ``benchmarks/gpu_throughput.py``
has measured the ``adm64`` row on a GPU, pass its project images/s (``--gpu-images-per-second``, a 4-step
plan at the published size, in the dtype the study runs in) and the GPU figures use that measurement
instead, labelled as measured.

    python benchmarks/paper_cost.py [--batch 8] [--gpu-tmacs 50 | --gpu-images-per-second X]
"""

from __future__ import annotations

import argparse
import time

import torch
from diffusers import UNet2DModel

from optuna_diffusion.evaluation import classifier_step_macs
from optuna_diffusion.macs import count_macs
from optuna_diffusion.generation import classifier_gradient
from optuna_diffusion.study_config import load_study_config
from optuna_diffusion.zoo.adm_classifier import CLASSIFIER_PRESETS, ADMClassifier
from optuna_diffusion.zoo.convert_adm import ADM_PRESETS, diffusers_unet_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--gpu-tmacs", type=float, default=50.0, help="assumed sustained GPU throughput")
    parser.add_argument("--gpu-images-per-second", type=float, default=None,
                        help="measured: benchmarks/gpu_throughput.py's adm64 project images/s (4-step plan)")
    args = parser.parse_args()
    if args.gpu_tmacs <= 0 or (args.gpu_images_per_second is not None and args.gpu_images_per_second <= 0):
        parser.error("throughputs must be positive")
    torch.manual_seed(0)
    unet = UNet2DModel(**diffusers_unet_config(ADM_PRESETS["imagenet64"])).eval().requires_grad_(False)
    classifier = ADMClassifier(CLASSIFIER_PRESETS["imagenet64"]).eval().requires_grad_(False)
    unet_macs = count_macs(unet, (3, 64, 64), class_labels=True)
    guidance_macs = classifier_step_macs(classifier, (3, 64, 64))
    step = unet_macs + guidance_macs

    x = torch.randn(args.batch, 3, 64, 64)
    labels = torch.randint(1000, (args.batch,))
    t = torch.tensor(500)
    with torch.inference_mode():
        unet(x, t, class_labels=labels)  # warm-up
        started = time.perf_counter()
        unet(x, t, class_labels=labels)
        classifier_gradient(classifier, x, t, labels, 1.0)
        seconds = (time.perf_counter() - started) / args.batch

    config = load_study_config("imagenet64")
    stages = {
        "stage 1 (time steps)": config.timesteps.n_trials * config.timesteps.num_samples * config.timesteps.k_max,
        "stage 2 (architecture)": config.architecture.n_trials * config.architecture.num_samples * config.timesteps.k_max,
        "final FID, 50,000 samples": 50_000 * config.timesteps.k_max,
    }
    print(f"one guided DDIM step, batch 1: UNet {unet_macs / 1e9:.1f} GMACs + classifier forward and backward "
          f"{guidance_macs / 1e9:.1f} GMACs = {step / 1e9:.1f} GMACs")
    print(f"this machine ({torch.get_num_threads()} threads, batch {args.batch}): {seconds:.2f} s per guided step "
          f"and image, {step / seconds / 1e9:.1f} GMAC/s")
    if args.gpu_images_per_second is not None:
        steps_per_second = args.gpu_images_per_second * 4  # gpu_throughput.py times a 4-step plan
        basis = f"measured {args.gpu_images_per_second:g} img/s x 4 steps"
    else:
        steps_per_second = args.gpu_tmacs * 1e12 / step
        basis = f"ASSUMED {args.gpu_tmacs:g} TMAC/s, no GPU measured"
    print(f"{'part':<28}{'steps x images':>16}{'PMACs':>10}{'CPU hours here':>16}{'GPU hours':>11}  basis of the GPU hours")
    total_steps = 0
    for part, evaluations in stages.items():
        macs = evaluations * step  # stage 2 skips blocks: an upper bound for it
        total_steps += evaluations
        print(f"{part:<28}{evaluations:>16,}{macs / 1e15:>10.2f}{evaluations * seconds / 3600:>16,.0f}"
              f"{evaluations / steps_per_second / 3600:>11.1f}  {basis}")
    print(f"{'all':<28}{'':>16}{total_steps * step / 1e15:>10.2f}{total_steps * seconds / 3600:>16,.0f}"
          f"{total_steps / steps_per_second / 3600:>11.1f}  {basis}")


if __name__ == "__main__":
    main()
