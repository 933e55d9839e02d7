"""``python -m optuna_diffusion`` runs the command line."""

from .cli import app

app(prog_name="optuna-diffusion")
