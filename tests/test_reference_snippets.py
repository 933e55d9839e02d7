"""The reference page's pipeline snippets (one per family, docs/reference.md), run as written on tiny random stand-ins.

Each snippet loads its pipeline with ``from_pretrained(hub id)``, which the test answers with the stand-in
(the hub is not reachable here), reads ``plan.json`` from the working folder, and makes one image. The test
then checks that the pipeline's scheduler ran exactly the plan's time steps (one denoiser call per step)
and that the block switch applied the plan's skips at every step. That these calls give the project's
images, to 1e-5, is ``tests/test_pipelines.py``'s ``test_export_*``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from optuna_diffusion.blocks import BlockSwitch, find_blocks
from optuna_diffusion.plan import Plan

from .tiny_pipelines import tiny_dit, tiny_flux, tiny_pixart, tiny_sd, tiny_sd3, tiny_sdxl
from .tiny_video_pipelines import COGVIDEOX_SIZE, LTX_SIZE, WAN_SIZE, tiny_cogvideox, tiny_ltx, tiny_wan

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"

# family: (pipeline class name, stand-in, plan kind)
FAMILIES = {
    "sd": ("StableDiffusionPipeline", tiny_sd, "ddpm"),
    "sdxl": ("StableDiffusionXLPipeline", tiny_sdxl, "ddpm"),
    "pixart": ("PixArtSigmaPipeline", tiny_pixart, "ddpm"),
    "sd3": ("StableDiffusion3Pipeline", tiny_sd3, "flow"),
    "flux": ("FluxPipeline", lambda: tiny_flux(guidance_embeds=True, dynamic_shifting=True), "flow"),
    "dit": ("DiTPipeline", tiny_dit, "ddpm"),
    "wan": ("WanPipeline", tiny_wan, "flow"),
    "cogvideox": ("CogVideoXPipeline", tiny_cogvideox, "ddpm"),
    "ltx-video": ("LTXPipeline", tiny_ltx, "flow"),
}
VIDEO_SIZES = {"wan": WAN_SIZE, "cogvideox": COGVIDEOX_SIZE, "ltx-video": LTX_SIZE}
"""The video families' stand-ins run at a small size (the snippets ask for the pipelines' defaults)."""
STEPS = {"ddpm": (901, 651, 301, 51), "flow": (1000, 750, 400, 100)}


def reference_snippets() -> dict[str, str]:
    """The reference page's Python blocks that start with ``# family: NAME``, by name."""
    blocks = re.findall(r"```python\n(.*?)```", REFERENCE.read_text(), flags=re.S)
    return {match.group(1): block for block in blocks if (match := re.match(r"# family: (\S+)", block))}


# The example values the reference page renders each family's call with (export renders the study's own).
REFERENCE_EXAMPLES = {
    "sd": dict(source="stable-diffusion-v1-5/stable-diffusion-v1-5", solver="dpmpp-2m", guidance_scale=7.5),
    "sdxl": dict(source="stabilityai/stable-diffusion-xl-base-1.0", solver="euler", guidance_scale=5.0),
    "pixart": dict(source="PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", solver="dpmpp-2m", guidance_scale=4.5),
    "sd3": dict(source="stabilityai/stable-diffusion-3-medium-diffusers", solver="flow-euler", guidance_scale=5.0),
    "flux": dict(source="black-forest-labs/FLUX.1-schnell", solver="flow-euler", guidance_scale=0.0),
    "dit": dict(source="facebook/DiT-XL-2-256", solver="dpmpp-2m", guidance_scale=4.0),
    "wan": dict(source="Wan-AI/Wan2.1-T2V-1.3B-Diffusers", solver="flow-euler", guidance_scale=5.0, num_frames=33),
    "cogvideox": dict(source="THUDM/CogVideoX-2b", solver="ddim", guidance_scale=6.0),
    "ltx-video": dict(source="Lightricks/LTX-Video", solver="flow-euler", guidance_scale=3.0, num_frames=65),
}


def test_the_reference_has_one_snippet_per_family():
    assert sorted(reference_snippets()) == sorted(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_reference_snippet_is_what_export_writes_for_its_family(family):
    from optuna_diffusion.export_call import pipeline_call

    class_name = FAMILIES[family][0]
    assert reference_snippets()[family] == pipeline_call(class_name, **REFERENCE_EXAMPLES[family])


def test_every_pipeline_family_renders_its_own_template_and_an_unknown_class_is_refused_in_one_line():
    from optuna_diffusion.errors import ConfigError
    from optuna_diffusion.export_call import exporting_family
    from optuna_diffusion.families import PIPELINE_FAMILIES

    exported = {name: family for name, family in PIPELINE_FAMILIES.items() if family.call_template is not None}
    assert {exporting_family(name)[1].label for name in exported} == set(FAMILIES)
    assert all(exporting_family(name)[0] is family for name, family in exported.items())
    with pytest.raises(ConfigError, match=r"no pipeline call for a KandinskyPipeline; export knows StableDiffusionPipeline, "):
        exporting_family("KandinskyPipeline")


def plan_for(denoiser, kind: str) -> Plan:
    """The family's plan with a different skippable block skipped at every step after the first."""
    names = [block.name for block in find_blocks(denoiser) if "skip" in block.actions and block.kind != "transformer"]
    steps = STEPS[kind]
    skips = [frozenset()] + [frozenset({names[i % len(names)]}) for i in range(len(steps) - 1)]
    return Plan(steps, skips=tuple(skips), schedule_kind=kind)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_reference_snippet_runs_the_plan_in_the_pipeline(family, tmp_path, monkeypatch):
    import diffusers

    class_name, stand_in, kind = FAMILIES[family]
    pipe = stand_in()
    pipeline_class = getattr(diffusers, class_name)
    monkeypatch.setattr(pipeline_class, "from_pretrained", classmethod(lambda cls, *args, **kwargs: pipe))
    if family == "flux":
        pipe.default_sample_size = 8  # a 16 x 16 image for the stand-in (1024 x 1024 for FLUX.1)
    if family in VIDEO_SIZES:  # the stand-in's small video, whatever size the snippet asks for
        import optuna_diffusion.study_inputs as study_inputs

        size = VIDEO_SIZES[family]
        monkeypatch.setattr(study_inputs, "study_image_size", lambda pipe, image_size=None: (size["image_size"],) * 2)
        monkeypatch.setattr(study_inputs, "study_num_frames", lambda pipe, num_frames=None: size["num_frames"])
    denoiser = pipe.unet if hasattr(pipe, "unet") else pipe.transformer
    plan = plan_for(denoiser, kind)
    (tmp_path / "plan.json").write_text(json.dumps({"plan": plan.to_dict(), "fid": 1.0}))
    monkeypatch.chdir(tmp_path)

    calls: list[float] = []
    denoiser.register_forward_pre_hook(lambda module, args, kwargs: calls.append(_timestep(args, kwargs)), with_kwargs=True)
    skipped: list[frozenset] = []
    set_step = BlockSwitch.set_step
    monkeypatch.setattr(BlockSwitch, "set_step", lambda self, skip=(), reuse=(), keep=(): (
        skipped.append(frozenset(skip)), set_step(self, skip, reuse, keep))[1])

    namespace: dict = {}
    exec(compile(reference_snippets()[family], f"docs/reference.md ({family})", "exec"), namespace)

    made = namespace["frames"][0] if family in VIDEO_SIZES else namespace["images"][0].size
    assert len(made) > 0
    scale = 1000.0 if family == "flux" else 1.0  # Flux's pipeline passes t / 1000
    per_step = 2 if family == "wan" else 1  # Wan's pipeline calls its transformer twice per guided step
    assert [round(t * scale) for t in calls] == [t for t in plan.timesteps for _ in range(per_step)]
    # each step's skips, in order (set once per denoiser call)
    assert [s for s in skipped if s] == [s for s in plan.skips if s for _ in range(per_step)]


def _timestep(args: tuple, kwargs: dict) -> float:
    value = kwargs.get("timestep", args[1] if len(args) > 1 else None)
    return float(torch.as_tensor(value).reshape(-1)[0])
