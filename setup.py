"""Package discovery: every package under optuna_diffusion/, and the presets of studies/ as optuna_diffusion.studies.

Everything else is in pyproject.toml. Its ``[tool.setuptools.packages.find]`` cannot add one package that
lives outside the searched folder, and the presets stay in the repository's top-level ``studies/``.
Discovery counts folders without ``__init__.py`` too (namespace packages), so the bundled models and the
prompt sets ship with their files (by pattern, in pyproject.toml's package-data) and a new subpackage
can never be left out of the wheel.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["optuna_diffusion*"], exclude=["*.__pycache__"]), "optuna_diffusion.studies"],
    package_dir={"optuna_diffusion.studies": "studies"},
)
