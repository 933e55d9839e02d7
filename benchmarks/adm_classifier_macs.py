"""Work of classifier guidance with guided-diffusion's published noisy classifiers (ADM-G).

For each published classifier (random weights: work does not depend on them) it prints, per image:

* the forward MACs of ``ADMClassifier`` counted by :func:`optuna_diffusion.macs.count_macs` (fvcore,
  as the study counts UNets);
* the multiply-adds of the forward and of the backward pass that guidance needs,
  ``grad_x log softmax(classifier(x_t, t))[y]``, counted by torch's ``FlopCounterMode`` (FLOPs / 2)
  with the math attention kernel (so attention products are counted in both passes), once with the
  classifier's parameters frozen and once with ``requires_grad=True`` (guided-diffusion's scripts
  leave them so, but ask ``torch.autograd.grad`` for the input gradient only);
* with ``--unet``, the MACs of the matching converted UNet (``UNet2DModel``) for scale.

Run: python benchmarks/adm_classifier_macs.py [--presets imagenet64 imagenet128 imagenet256] [--unet]
"""

from __future__ import annotations

import argparse

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from optuna_diffusion.macs import count_macs
from optuna_diffusion.zoo.adm_classifier import CLASSIFIER_PRESETS, ADMClassifier
from optuna_diffusion.zoo.convert_adm import ADM_PRESETS, diffusers_unet_config


def _multiply_adds(run) -> int:
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops() // 2


def guidance_work(model: ADMClassifier, frozen: bool) -> tuple[int, int]:
    """Multiply-adds of the forward and of the input-gradient backward, batch 1."""
    model.requires_grad_(not frozen)
    size = model.config.image_size
    x = torch.randn(1, 3, size, size, requires_grad=True)
    t = torch.tensor([500])
    outputs = {}

    def forward() -> None:
        outputs["log_p"] = torch.log_softmax(model(x, t), dim=-1)[0, 0]

    def backward() -> None:
        torch.autograd.grad(outputs["log_p"], x)

    with sdpa_kernel(SDPBackend.MATH):
        return _multiply_adds(forward), _multiply_adds(backward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["imagenet64", "imagenet128", "imagenet256"])
    parser.add_argument("--unet", action="store_true", help="also count the matching UNet2DModel")
    args = parser.parse_args()
    torch.manual_seed(0)
    for name in args.presets:
        model = ADMClassifier(CLASSIFIER_PRESETS[name]).eval()
        fvcore = count_macs(model)
        forward, backward_frozen = guidance_work(model, frozen=True)
        _, backward_trainable = guidance_work(model, frozen=False)
        print(
            f"{name:12s} classifier forward {fvcore / 1e9:7.3f} GMACs (fvcore) {forward / 1e9:7.3f} GMACs (torch); "
            f"input-gradient backward {backward_frozen / 1e9:7.3f} GMACs frozen = {backward_frozen / forward:.2f}x "
            f"forward, {backward_trainable / 1e9:7.3f} GMACs with requires_grad params = "
            f"{backward_trainable / forward:.2f}x"
        )
        del model
        if args.unet and name in ADM_PRESETS:
            from diffusers import UNet2DModel

            try:
                unet = UNet2DModel(**diffusers_unet_config(ADM_PRESETS[name])).eval()
            except ValueError as error:
                print(f"{name:12s} UNet: {error}")
                continue
            print(f"{name:12s} UNet forward {count_macs(unet) / 1e9:7.3f} GMACs (fvcore)")
            del unet


if __name__ == "__main__":
    main()
