"""Print, per pipeline family, how far the project's images are from the pipeline's own (tests' export calls).

Runs the ``test_export_*`` tests of ``tests/test_pipelines.py`` on the tiny random pipelines and prints the
largest absolute difference between the project's images and ``pipe(..., output_type="pt")`` (both in [0, 1]).

    PYTHONPATH=$PWD python benchmarks/pipeline_exactness.py
"""

from __future__ import annotations

import torch

import tests.test_pipelines as cases

torch.set_num_threads(1)

RUNS = [
    ("SD 1.x, dpmpp-2m", cases.test_export_stable_diffusion, dict(solver="dpmpp-2m", skips=False)),
    ("SD 1.x, dpmpp-2m, skips", cases.test_export_stable_diffusion, dict(solver="dpmpp-2m", skips=True)),
    ("SD 1.x, euler", cases.test_export_stable_diffusion, dict(solver="euler", skips=False)),
    ("SD 1.x, ddpm", cases.test_export_stable_diffusion_ddpm_with_the_same_generator, {}),
    ("SD 2.x v-prediction, dpmpp-2m", cases.test_export_stable_diffusion_2_v_prediction, {}),
    ("SDXL, euler, zero negatives", cases.test_export_stable_diffusion_xl, dict(negatives="none")),
    ("SDXL, euler, per-prompt negatives", cases.test_export_stable_diffusion_xl, dict(negatives="per-prompt")),
    ("PixArt-Sigma, dpmpp-2m", cases.test_export_pixart, dict(alpha=False, skips=False)),
    ("PixArt-alpha 1024-style, dpmpp-2m", cases.test_export_pixart, dict(alpha=True, skips=False)),
    ("PixArt-Sigma, dpmpp-2m, skips", cases.test_export_pixart, dict(alpha=False, skips=True)),
    ("SD3 (shift 3), flow-euler", cases.test_export_stable_diffusion_3, dict(skips=False)),
    ("SD3 (shift 3), flow-euler, skips", cases.test_export_stable_diffusion_3, dict(skips=True)),
    ("Flux schnell, flow-euler, skips", cases.test_export_flux, dict(variant="schnell")),
    ("Flux dev (guidance 3.5, dynamic shift), skips", cases.test_export_flux, dict(variant="dev-dynamic-shift")),
    ("DiT (64 images), dpmpp-2m", cases.test_export_dit, {}),
]


def main() -> None:
    measured: list[float] = []
    original = cases.difference

    def recording(project: torch.Tensor, pipeline_images: torch.Tensor) -> float:
        measured.append(original(project, pipeline_images))
        return measured[-1]

    cases.difference = recording
    print(f"{'pipeline, solver':48s} max |project - pipeline|")
    for name, case, kwargs in RUNS:
        case(**kwargs)
        print(f"{name:48s} {measured[-1]:.2e}")


if __name__ == "__main__":
    main()
