"""``optuna-diffusion zoo``: retrain the bundled models, or convert third-party checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_errors import one_line_errors, positive

zoo_app = typer.Typer(help="Bundled models: retrain them, or convert third-party checkpoints.", no_args_is_help=True)



@zoo_app.command("train")
@one_line_errors
def zoo_train(
    name: Annotated[str, typer.Argument(help="Model to train: digits, digits-dit, digits-t2i (a text-to-image pipeline) or digits-video.")],
    out: Annotated[Path, typer.Option(help="Folder to write the diffusers model (and, for digits, the feature net) to.")],
    seed: Annotated[int, typer.Option(help="Seed of the training run.")] = 0,
    steps: Annotated[Optional[int], typer.Option(help="Diffusion training steps (default: the bundled run's).")] = None,
    beta_schedule: Annotated[str, typer.Option(help="digits only: the noise schedule, linear (the bundled model's) or "
                                                    "squaredcos_cap_v2 (cosine).")] = "linear",
    prediction_type: Annotated[str, typer.Option(help="digits only: what the model predicts, epsilon (the bundled "
                                                      "model's), v_prediction or sample.")] = "epsilon",
) -> None:
    """Retrain a bundled model from scratch, reproducibly (how long each takes: docs/reference.md, below the module table)."""
    from .zoo import TRAINABLE_MODELS

    if name not in TRAINABLE_MODELS:
        raise typer.BadParameter(f"unknown model {name!r}; trainable: {', '.join(TRAINABLE_MODELS)}")
    positive("--steps", steps)
    if name != "digits" and (beta_schedule, prediction_type) != ("linear", "epsilon"):
        raise typer.BadParameter(f"--beta-schedule and --prediction-type train digits only, not {name}")
    if name == "digits-t2i":
        from .zoo.t2i_training import T2ITraining, train_digits_t2i

        settings = T2ITraining(seed=seed) if steps is None else T2ITraining(seed=seed, steps=steps)
        report = train_digits_t2i(out, settings, log=typer.echo)
    elif name == "digits-video":
        from .zoo.video_training import VideoTraining, train_digits_video

        settings = VideoTraining(seed=seed) if steps is None else VideoTraining(seed=seed, steps=steps)
        report = train_digits_video(out, settings, log=typer.echo)
    elif name == "digits-dit":
        from .zoo.dit_training import DiTTraining, train_digits_dit

        settings = DiTTraining(seed=seed) if steps is None else DiTTraining(seed=seed, steps=steps)
        report = train_digits_dit(out, settings, log=typer.echo)
    else:
        from .zoo.training import BETA_SCHEDULES, PREDICTION_TYPES, train_digits

        if beta_schedule not in BETA_SCHEDULES:
            raise typer.BadParameter(f"--beta-schedule must be one of {', '.join(BETA_SCHEDULES)}, not {beta_schedule!r}")
        if prediction_type not in PREDICTION_TYPES:
            raise typer.BadParameter(f"--prediction-type must be one of {', '.join(PREDICTION_TYPES)}, not {prediction_type!r}")
        report = train_digits(out, seed=seed, diffusion_steps=steps, log=typer.echo,
                              beta_schedule=beta_schedule, prediction_type=prediction_type)
    typer.echo(json.dumps(report, indent=2))


ArchOption = Annotated[
    Optional[str],
    typer.Option(help="The checkpoint's flags: a preset name or a JSON file of them (default: read from the weights "
                      "and the matching published checkpoint)."),
]


@zoo_app.command("convert-adm")
@one_line_errors
def zoo_convert_adm(
    checkpoint: Annotated[Path, typer.Argument(help="guided-diffusion UNet checkpoint, e.g. 64x64_diffusion.pt.")],
    out: Annotated[Path, typer.Option(help="Folder to write the diffusers UNet2DModel and scheduler to.")],
    arch: ArchOption = None,
    own_weights: Annotated[bool, typer.Option("--own-weights", help="The weights are your own, trained with --arch's "
                                              "flags, though shaped like a published checkpoint's.")] = False,
) -> None:
    """Convert a guided-diffusion (ADM) UNet checkpoint to a diffusers folder, or say why it cannot be.

    Presets: imagenet64, imagenet128 (refused: per-level head widths), imagenet256, imagenet256-uncond, lsun256,
    imagenet512 (refused). An --arch that contradicts the published checkpoint of the weights' layout is refused.
    """
    from .zoo.convert_adm import convert_adm_checkpoint

    folder = convert_adm_checkpoint(checkpoint, out, arch=arch, own_weights=own_weights)
    typer.echo(f"wrote {folder}")


@zoo_app.command("convert-adm-classifier")
@one_line_errors
def zoo_convert_adm_classifier(
    checkpoint: Annotated[Path, typer.Argument(help="guided-diffusion noisy-image classifier, e.g. 64x64_classifier.pt.")],
    out: Annotated[Path, typer.Option(help="Folder to write the classifier (config.json, model.safetensors) to.")],
    arch: ArchOption = None,
) -> None:
    """Convert a guided-diffusion classifier checkpoint for classifier guidance (presets: imagenet64/128/256/512)."""
    from .zoo.convert_adm_classifier import convert_adm_classifier_checkpoint

    folder = convert_adm_classifier_checkpoint(checkpoint, out, arch=arch)
    typer.echo(f"wrote {folder}")
