"""Images per second of the project's generation of a 4-step plan against a bare diffusers loop, per dtype.

Full-size denoisers built from their published configs with random weights (nothing is downloaded):

* ``sd15``: Stable Diffusion 1.5's UNet (``UNet2DConditionModel``, 4x64x64 latents, 77x768 text), CFG 7.5;
* ``sdxl``: SDXL base's UNet (4x128x128 latents, text_time additions) in a ``StableDiffusionXLPipeline``, CFG 5;
* ``dit-xl-2-256``: DiT-XL/2 at 256x256 (``DiTTransformer2DModel``, 4x32x32 latents, 1,000 classes), CFG 4;
* ``pixart-sigma``: PixArt-Sigma XL/2 1024 (``PixArtTransformer2DModel``, 4x128x128 latents) in a
  ``PixArtSigmaPipeline``, CFG 4.5;
* ``adm64``: guided-diffusion's ImageNet 64x64 UNet (``UNet2DModel``) with its noisy classifier (ADM-G,
  classifier scale 1), class-conditional.

The pipelines' text encoders and VAEs are small stand-ins of the right widths: prompts are encoded once
per study and images are not decoded here (``decoded=False``), so neither enters the timing.

Per model and dtype: images/s of ``ImageGenerator.batches(plan, batch)`` (the project's evaluation path:
common-random-number noise, block switch, guidance, solver) and of a bare loop of the same denoiser calls
and the same diffusers scheduler (DPM-Solver++(2M) on the same 4 time steps, guidance by batching, the
classifier's input gradient for ADM), both timed in turns after one warm-up run each, best of ``--repeats``; their ratio
(the evaluation's overhead: the target is at most 1.05); and the peak accelerator memory of the project's
run (``torch.cuda.max_memory_allocated``; "n/a" on the CPU); and the largest difference between the two
loops' samples (they do the same work). No GPU numbers are quoted anywhere: none
were measured when this was written.

Run: python benchmarks/gpu_throughput.py [--models sd15 dit-xl-2-256 ...] [--dtypes float32 bfloat16 float16]
     [--batch-size 8] [--repeats 3] [--device auto]
     [--sample-size N]
CPU proof that it works (one model, batch 1, reduced size): python benchmarks/gpu_throughput.py
     --models dit-xl-2-256 --dtypes float32 bfloat16 --batch-size 1 --repeats 1 --sample-size 8 --device cpu
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optuna_diffusion.baselines import baseline_plan  # noqa: E402
from optuna_diffusion.devices import DTYPES, peak_memory, reset_peak_memory, resolve_device  # noqa: E402
from optuna_diffusion.families import Conditions, TextConditioning  # noqa: E402
from optuna_diffusion.models import DiffusionModel, model_from_pipeline  # noqa: E402
from optuna_diffusion.prompts import PromptSet  # noqa: E402
from optuna_diffusion.generation import ImageGenerator, SamplingSettings, class_labels, classifier_gradient  # noqa: E402

STEPS = 4
SOLVER = "dpmpp-2m"
SD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    prediction_type="epsilon", _class_name="DDPMScheduler")
LINEAR_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                        prediction_type="epsilon", _class_name="DDPMScheduler")


@dataclass
class Subject:
    """A model to time: the project's model, its sampling settings, the generator's extra arguments."""

    model: DiffusionModel
    settings: SamplingSettings
    generator_kwargs: dict[str, Any]
    classifier: torch.nn.Module | None = None


# Published configs (diffusers' config.json of each released checkpoint) -----------------------------------


def _sd15_unet(size: int | None):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=size or 64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768, attention_head_dim=8,
    )


def _sdxl_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )


def _dit_xl_2_256(size: int | None):
    from diffusers import DiTTransformer2DModel

    return DiTTransformer2DModel(
        num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28, patch_size=2,
        sample_size=size or 32, num_embeds_ada_norm=1000, norm_type="ada_norm_zero", activation_fn="gelu-approximate",
    )


def _pixart_sigma():
    from diffusers import PixArtTransformer2DModel

    return PixArtTransformer2DModel(
        num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
        cross_attention_dim=1152, caption_channels=4096, sample_size=128, patch_size=2, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6, interpolation_scale=2, use_additional_conditions=False,
    )


# Small stand-ins of the components that do not enter the timing ----------------------------------------------


def _tokenizers():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.tiny_pipelines import tiny_clip_tokenizer, tiny_t5_tokenizer

    return tiny_clip_tokenizer, tiny_t5_tokenizer


def _clip(hidden: int, projection: int | None = None):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden, intermediate_size=64,
                            num_attention_heads=8, num_hidden_layers=2, vocab_size=1000, projection_dim=projection or 32)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _t5(width: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=128, d_model=width, d_kv=64, d_ff=64, num_layers=1, num_heads=2,
                      relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=0, eos_token_id=1)
    return T5EncoderModel(config).eval()


def _vae(levels: int):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[8] * levels, in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D"] * levels, up_block_types=["UpDecoderBlock2D"] * levels,
        layers_per_block=1, force_upcast=True,
    ).eval()


# Subjects --------------------------------------------------------------------------------------------------


def _prompts(batch: int) -> PromptSet:
    return PromptSet([f"a photograph of object number {i}" for i in range(batch)])


def sd15(dtype: torch.dtype, device: torch.device, batch: int, size: int | None) -> Subject:
    unet = _sd15_unet(size).to(device=device, dtype=dtype).eval().requires_grad_(False)
    model = DiffusionModel(unet, SD_SCHEDULER, "sd15 UNet (random)")
    generator = torch.Generator().manual_seed(0)
    text = TextConditioning(torch.randn(1, 77, 768, generator=generator).to(device, dtype),
                            torch.randn(1, 77, 768, generator=generator).to(device, dtype))
    return Subject(model, SamplingSettings(solver=SOLVER, guidance_scale=7.5, batch_size=batch), {"text": text})


def sdxl(dtype: torch.dtype, device: torch.device, batch: int, size: int | None) -> Subject:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    clip_tokenizer, _ = _tokenizers()
    pipe = StableDiffusionXLPipeline(
        unet=_sdxl_unet(), vae=_vae(4), scheduler=EulerDiscreteScheduler(**{k: v for k, v in SD_SCHEDULER.items() if k[0] != "_"}),
        text_encoder=_clip(768), tokenizer=clip_tokenizer(), text_encoder_2=_clip(1280, projection=1280),
        tokenizer_2=clip_tokenizer(), image_encoder=None, feature_extractor=None, add_watermarker=False,
    ).to(device=device, dtype=dtype)
    pipe.vae.to(torch.float32)  # as the pipeline decodes SDXL (force_upcast); not timed here
    model = model_from_pipeline(pipe, source="sdxl UNet (random)", image_size=8 * (size or 128))
    return _pipeline_subject(model, 5.0, batch)


def pixart_sigma(dtype: torch.dtype, device: torch.device, batch: int, size: int | None) -> Subject:
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline

    _, t5_tokenizer = _tokenizers()
    pipe = PixArtSigmaPipeline(
        transformer=_pixart_sigma(), vae=_vae(4), scheduler=DPMSolverMultistepScheduler(**{k: v for k, v in LINEAR_SCHEDULER.items() if k[0] != "_"}),
        text_encoder=_t5(4096), tokenizer=t5_tokenizer(),
    ).to(device=device, dtype=dtype)
    model = model_from_pipeline(pipe, source="pixart-sigma transformer (random)", image_size=8 * (size or 128))
    return _pipeline_subject(model, 4.5, batch)


def _pipeline_subject(model: DiffusionModel, guidance: float, batch: int) -> Subject:
    for module in model.pipeline.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval().requires_grad_(False)
    return Subject(model, SamplingSettings(solver=SOLVER, guidance_scale=guidance, batch_size=batch),
                   {"prompts": _prompts(batch)})


def dit_xl_2_256(dtype: torch.dtype, device: torch.device, batch: int, size: int | None) -> Subject:
    transformer = _dit_xl_2_256(size).to(device=device, dtype=dtype).eval().requires_grad_(False)
    model = DiffusionModel(transformer, LINEAR_SCHEDULER, "DiT-XL/2-256 (random)")
    settings = SamplingSettings(solver=SOLVER, guidance_scale=4.0, num_classes=1000, null_class=1000, batch_size=batch)
    return Subject(model, settings, {})


def adm64(dtype: torch.dtype, device: torch.device, batch: int, size: int | None) -> Subject:
    import dataclasses

    from diffusers import UNet2DModel

    from optuna_diffusion.zoo.adm_classifier import CLASSIFIER_PRESETS, ADMClassifier
    from optuna_diffusion.zoo.convert_adm import ADM_PRESETS, diffusers_scheduler_config, diffusers_unet_config

    unet = UNet2DModel(**{**diffusers_unet_config(ADM_PRESETS["imagenet64"]), **({"sample_size": size} if size else {})})
    unet = unet.to(device=device, dtype=dtype).eval().requires_grad_(False)
    scheduler = {**diffusers_scheduler_config(ADM_PRESETS["imagenet64"]), "_class_name": "DDPMScheduler"}
    # The classifier stays in float32, as the project runs it (its input gradient is taken in float32).
    layout = CLASSIFIER_PRESETS["imagenet64"]
    layout = dataclasses.replace(layout, image_size=size) if size else layout
    classifier = ADMClassifier(layout).to(device).eval().requires_grad_(False)
    settings = SamplingSettings(solver=SOLVER, num_classes=1000, classifier="stand-in", classifier_scale=1.0,
                                labels="random", batch_size=batch)
    return Subject(DiffusionModel(unet, scheduler, "ADM ImageNet64 (random)"), settings, {"classifier": classifier},
                   classifier=classifier)


MODELS: dict[str, Callable[[torch.dtype, torch.device, int, int | None], Subject]] = {
    "sd15": sd15, "sdxl": sdxl, "dit-xl-2-256": dit_xl_2_256, "pixart-sigma": pixart_sigma, "adm64": adm64,
}


# Timing ----------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def project_run(subject: Subject, generator: ImageGenerator, plan, batch: int) -> torch.Tensor:
    return torch.cat(list(generator.batches(plan, batch, decoded=False)))


def bare_run(subject: Subject, generator: ImageGenerator, plan, batch: int) -> torch.Tensor:
    """The same denoiser calls and diffusers scheduler, without the generator (no block switch, no per-batch
    conditions or noise drawing, no prefix cache): x <- scheduler.step(guided(denoiser(x, t)), t, x)."""
    from diffusers import DPMSolverMultistepScheduler

    model, settings, family = subject.model, subject.settings, subject.model.family
    schedule = model.schedule
    scheduler = DPMSolverMultistepScheduler.from_config(
        {**schedule.config, "prediction_type": "epsilon", "clip_sample": False, "thresholding": False},
        algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero",
    )
    scheduler.set_timesteps(timesteps=list(plan.timesteps), device=model.device)
    conditions = generator_conditions(subject, generator, batch)
    guided = family.uses_guidance(settings)
    conditional = family.inputs(model, conditions, settings, unconditional=False)
    inputs = conditional
    if guided:
        unconditional = family.inputs(model, conditions, settings, unconditional=True)
        halves = {"conditional": conditional, "unconditional": unconditional}
        first, second = (halves[name] for name in family.guidance_order)
        inputs = {key: _stack(first[key], second[key]) for key in first}
    x = family.initial_noise(model, settings.seed, 0, batch).to(device=model.device, dtype=model.dtype)
    with torch.inference_mode():
        for t in scheduler.timesteps:
            output = family.call(model, torch.cat([x, x]) if guided else x, t, inputs)
            if guided:
                parts = dict(zip(family.guidance_order, output.chunk(2)))
                output = parts["unconditional"] + settings.guidance_scale * (parts["conditional"] - parts["unconditional"])
            if subject.classifier is not None:
                alpha_prod_t = schedule.alpha_prod(int(t)).float()
                gradient = classifier_gradient(subject.classifier, x, t, conditions.labels, settings.classifier_scale)
                output = (output.float() - (1 - alpha_prod_t).sqrt() * gradient).to(output.dtype)
            x = scheduler.step(output, t, x).prev_sample
    return x


def _stack(first: Any, second: Any) -> Any:
    from optuna_diffusion.families import stack

    return stack(first, second)


def generator_conditions(subject: Subject, generator: ImageGenerator, batch: int) -> Conditions:
    settings, device = subject.settings, subject.model.device
    labels = class_labels(settings.seed, batch, settings.num_classes, settings.labels).to(device) if settings.num_classes else None
    prompts = generator.prompts.indices(0, batch) if generator.prompts is not None else None
    return Conditions(size=batch, labels=labels, prompts=prompts, text=generator.text)


def best_seconds(runs: dict[str, Callable[[], torch.Tensor]], device: torch.device, repeats: int) -> dict[str, tuple[float, torch.Tensor]]:
    """Best wall time of each of ``runs`` over ``repeats``, taken in turns (so that a machine whose speed drifts
    slows both alike), after one warm-up run of each; with each warm-up's result."""
    results = {name: run() for name, run in runs.items()}  # warm-up: kernels, caches, the prompt encodings
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            _sync(device)
            started = time.perf_counter()
            run()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: (best[name], results[name]) for name in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "float16"], choices=list(DTYPES))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sample-size", type=int, default=None,
                        help="side of the denoiser's input (latents or pixels) instead of the published one, to try the "
                             "benchmark on a CPU at reduced size (same architecture, fewer positions)")
    args = parser.parse_args()
    if args.batch_size < 1 or args.repeats < 1:
        parser.error("--batch-size and --repeats must be positive")
    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type}, {torch.get_num_threads()} threads"
    size = f", sample size {args.sample_size} (reduced)" if args.sample_size else ", published sample sizes"
    print(f"{STEPS}-step {SOLVER} plan, batch {args.batch_size}{size}, best of {args.repeats}, on {where}")
    print(f"{'model':<14} {'dtype':<9} {'project img/s':>13} {'bare img/s':>11} {'ratio':>6} {'peak GiB':>9} {'max |diff|':>10}")
    for name in args.models:
        for dtype_name in args.dtypes:
            torch.manual_seed(0)
            subject = MODELS[name](DTYPES[dtype_name], device, args.batch_size, args.sample_size)
            plan = baseline_plan("uniform", STEPS, subject.model.schedule)
            with ImageGenerator(subject.model, subject.settings, **subject.generator_kwargs) as generator:
                reset_peak_memory(device)
                project_run(subject, generator, plan, args.batch_size)
                peak = peak_memory(device)  # of the project's run alone
                timed = best_seconds({"project": lambda: project_run(subject, generator, plan, args.batch_size),
                                      "bare": lambda: bare_run(subject, generator, plan, args.batch_size)},
                                     device, args.repeats)
                (project, ours), (bare, theirs) = timed["project"], timed["bare"]
            peak_text = f"{peak / 2**30:9.2f}" if peak is not None else f"{'n/a':>9}"
            # The two loops do the same work: their samples agree (bit for bit where the operations are the same).
            difference = float((ours.float() - theirs.float()).abs().max())
            print(f"{name:<14} {dtype_name:<9} {args.batch_size / project:13.3f} {args.batch_size / bare:11.3f} "
                  f"{project / bare:6.3f} {peak_text} {difference:10.2e}", flush=True)
            del subject, generator
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
