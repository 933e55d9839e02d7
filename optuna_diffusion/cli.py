"""The ``optuna-diffusion`` command line: thin commands over the library.

Library errors (:class:`~optuna_diffusion.errors.OptunaDiffusionError`) become one line on stderr and
exit code 2, in :func:`_one_line_errors`; nothing else prints tracebacks on purpose.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from .errors import OptunaDiffusionError

app = typer.Typer(
    help="Search few-step diffusion sampling plans (time steps and skipped UNet blocks) with Optuna.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
zoo_app = typer.Typer(help="Bundled models: retrain them, or convert third-party checkpoints.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


def _one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into ``error: ...`` on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except OptunaDiffusionError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper


@zoo_app.command("train")
@_one_line_errors
def zoo_train(
    name: Annotated[str, typer.Argument(help="Bundled model to retrain (digits).")],
    out: Annotated[Path, typer.Option(help="Folder to write the diffusers model and feature net to.")],
    seed: Annotated[int, typer.Option(help="Seed of the training run.")] = 0,
    steps: Annotated[Optional[int], typer.Option(help="Diffusion training steps (default: the bundled run's).")] = None,
) -> None:
    """Retrain a bundled model from scratch, reproducibly (digits: about 20 minutes on 2 CPU cores)."""
    from .zoo import BUNDLED_MODELS
    from .zoo.training import train_digits

    if name != "digits":
        raise typer.BadParameter(f"unknown bundled model {name!r}; bundled: {', '.join(BUNDLED_MODELS)}")
    if steps is not None and steps < 1:
        raise typer.BadParameter("--steps must be positive")
    report = train_digits(out, seed=seed, diffusion_steps=steps, log=typer.echo)
    typer.echo(json.dumps(report, indent=2))


@zoo_app.command("convert-adm")
@_one_line_errors
def zoo_convert_adm(
    checkpoint: Annotated[Path, typer.Argument(help="guided-diffusion checkpoint, e.g. 64x64_diffusion.pt.")],
    out: Annotated[Path, typer.Option(help="Folder to write the diffusers UNet2DModel and scheduler to.")],
) -> None:
    """Convert guided-diffusion's ImageNet 64x64 class-conditional checkpoint to a diffusers folder."""
    from .zoo.convert_adm import convert_adm_checkpoint

    folder = convert_adm_checkpoint(checkpoint, out)
    typer.echo(f"wrote {folder}")


def main() -> None:
    """Console-script entry point."""
    app()
