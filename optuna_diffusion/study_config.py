"""Study presets and files: a TOML file in, a validated :class:`StudyConfig` out.

Presets live in the repository's ``studies/`` folder (installed as ``optuna_diffusion/studies``).
Every mistake is one line that names the file, the key and, where it can, the line.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .sampling import SamplingSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class TimestepStage:
    """Stage 1: time steps only, with the full network."""

    k_min: int = 4
    k_max: int = 4
    n_trials: int = 200
    num_samples: int = 500
    population_size: int = 20
    low_fidelity_fraction: float = 0.0


@dataclass(frozen=True)
class ArchitectureStage:
    """Stage 2: per-step skipped and reused blocks (time steps may be nudged)."""

    n_trials: int = 100
    num_samples: int = 500
    population_size: int = 20
    macs_budget: float | None = None
    low_fidelity_fraction: float = 0.0


@dataclass(frozen=True)
class StudyConfig:
    """Everything a search needs: model, sampling, FID reference and the two stages."""

    name: str
    model: str
    sampling: SamplingSettings
    features: str = "digits"
    reference: str = "digits"
    feature_weights: str | None = None
    timesteps: TimestepStage = field(default_factory=TimestepStage)
    architecture: ArchitectureStage = field(default_factory=ArchitectureStage)
    prefix_cache_mb: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StudyConfig":
        return cls(
            **{
                **data,
                "sampling": SamplingSettings(**data["sampling"]),
                "timesteps": TimestepStage(**data["timesteps"]),
                "architecture": ArchitectureStage(**data["architecture"]),
            }
        )

    def low_fidelity_samples(self, stage: str) -> int | None:
        """Samples of a candidate's first look in ``stage``; None when every candidate gets the full count."""
        settings = getattr(self, stage)
        low = round(settings.low_fidelity_fraction * settings.num_samples)
        return low if 2 <= low < settings.num_samples else None

    def stage_study_name(self, stage: str) -> str:
        """Name of the Optuna study of ``stage`` ("timesteps" or "architecture")."""
        return f"{self.name}-{stage}"


_SECTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "model": {"source": str},
    "sampling": {
        "solver": str,
        "guidance_scale": (int, float),
        "num_classes": int,
        "null_class": int,
        "clip_x0": bool,
        "seed": int,
        "batch_size": int,
        "prefix_cache_mb": (int, float),
    },
    "fid": {"features": str, "reference": str, "feature_weights": str},
    "timesteps": {
        "k_min": int, "k_max": int, "n_trials": int, "num_samples": int, "population_size": int, "low_fidelity_fraction": (int, float),
    },
    "architecture": {
        "n_trials": int, "num_samples": int, "population_size": int, "macs_budget": (int, float), "low_fidelity_fraction": (int, float),
    },
}
_POSITIVE = {"batch_size", "k_min", "k_max", "n_trials", "num_samples", "population_size", "macs_budget"}


def preset_names() -> list[str]:
    """Names of the bundled study presets."""
    return sorted(p.stem for p in _presets_dir().iterdir() if p.suffix == ".toml")


def _presets_dir() -> Path:
    """``studies/`` inside an installed package, else the source checkout's top-level ``studies/``."""
    installed = Path(__file__).resolve().parent / "studies"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "studies"


def _line_of(text: str, section: str, key: str) -> int | None:
    """Line number of ``key`` inside ``[section]`` of a TOML text (for error messages)."""
    current = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"\s*\[([^\]]+)\]", line)
        if header:
            current = header.group(1).strip()
        elif current == section and re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    return None


def _where(origin: str, text: str, section: str, key: str) -> str:
    line = _line_of(text, section, key)
    return f"{origin}, line {line}" if line else origin


def _check_types(data: dict[str, Any], origin: str, text: str) -> None:
    for section, values in data.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{origin}: unknown section [{section}]; known: {', '.join(_SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: [{section}] must be a table")
        for key, value in values.items():
            where = _where(origin, text, section, key)
            expected = _SECTIONS[section].get(key)
            if expected is None:
                known = ", ".join(_SECTIONS[section])
                raise ConfigError(f"{where}: unknown key {section}.{key}; known: {known}")
            if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
                names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
                raise ConfigError(f"{where}: {section}.{key} must be {names}, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{where}: {section}.{key} must be a finite number, got {value!r}")
            if key in _POSITIVE and value <= 0:
                raise ConfigError(f"{where}: {section}.{key} must be positive, got {value!r}")


def parse_study_config(text: str, *, name: str, origin: str) -> StudyConfig:
    """Parse and validate a study TOML text; ``origin`` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{origin}: malformed TOML: {error}") from None
    _check_types(data, origin, text)
    fid = data.get("fid", {})
    timesteps = TimestepStage(**data.get("timesteps", {}))
    if timesteps.k_min > timesteps.k_max:
        where = _where(origin, text, "timesteps", "k_max")
        raise ConfigError(f"{where}: timesteps.k_max ({timesteps.k_max}) is below k_min ({timesteps.k_min})")
    for stage in ("timesteps", "architecture"):
        fraction = data.get(stage, {}).get("low_fidelity_fraction", 0)
        if not 0 <= fraction < 1:
            where = _where(origin, text, stage, "low_fidelity_fraction")
            raise ConfigError(f"{where}: {stage}.low_fidelity_fraction must be in [0, 1) (0: off), got {fraction}")
    sampling = dict(data.get("sampling", {}))
    prefix_cache_mb = sampling.pop("prefix_cache_mb", 0.0)
    if prefix_cache_mb < 0:
        raise ConfigError(f"{_where(origin, text, 'sampling', 'prefix_cache_mb')}: sampling.prefix_cache_mb must be >= 0, got {prefix_cache_mb}")
    return StudyConfig(
        name=name,
        model=data.get("model", {}).get("source", ""),
        sampling=SamplingSettings(**sampling),
        prefix_cache_mb=float(prefix_cache_mb),
        features=fid.get("features", "digits"),
        reference=fid.get("reference", "digits"),
        feature_weights=fid.get("feature_weights"),
        timesteps=timesteps,
        architecture=ArchitectureStage(**data.get("architecture", {})),
    )


def load_study_config(study: str | None = None, *, config: str | Path | None = None) -> StudyConfig:
    """Load the preset ``study`` (``studies/NAME.toml``) or the file ``config``.

    Raises:
        ConfigError: unknown preset, missing file, malformed TOML, unknown key or wrong type.
    """
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"study file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not a UTF-8 text file ({error.reason} at byte {error.start})") from None
        return parse_study_config(text, name=study or path.stem, origin=str(path))
    if study is None:
        raise ConfigError("name a study preset (--study) or a study file (--config)")
    preset = _presets_dir() / f"{study}.toml"
    if not preset.is_file():
        raise ConfigError(f"unknown study {study!r}; presets: {', '.join(preset_names())} (or pass --config FILE)")
    return parse_study_config(preset.read_text(), name=study, origin=f"studies/{study}.toml")


def with_overrides(config: StudyConfig, **overrides: Any) -> StudyConfig:
    """``config`` with CLI overrides applied (``None`` values are ignored).

    Known keys: model, features, reference, feature_weights, seed, batch_size, solver, num_samples.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    num_samples = given.pop("num_samples", None)
    if num_samples is not None:
        config = dataclasses.replace(
            config,
            timesteps=dataclasses.replace(config.timesteps, num_samples=num_samples),
            architecture=dataclasses.replace(config.architecture, num_samples=num_samples),
        )
    sampling_keys = {"seed", "batch_size", "solver"}
    sampling = dataclasses.replace(config.sampling, **{k: v for k, v in given.items() if k in sampling_keys})
    top = {k: v for k, v in given.items() if k not in sampling_keys}
    return dataclasses.replace(config, sampling=sampling, **top)
