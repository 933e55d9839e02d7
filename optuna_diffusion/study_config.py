"""Study presets and files: a TOML file in, a validated :class:`StudyConfig` out.

A study file has one table per section of :class:`StudyConfig`; each section is a
:class:`~optuna_diffusion.settings.Section` that checks itself, so a study built from a TOML file,
from a stored dict or with command-line overrides is valid by construction. Presets live in the
repository's ``studies/`` folder (installed as ``optuna_diffusion/studies``). Every mistake is one
line that names the file, the key and, where it can, the line.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .devices import DTYPES
from .errors import ConfigError, read_utf8
from .fitness import FitnessSettings
from .generation import SamplingSettings
from .prompts import PromptSettings, shipped_prompt_set
from .settings import FID_SAMPLES_RULE, POPULATION_RULE, Section, SettingError, at_least, fraction, one_of, positive, setting
from .trial_plan import STAGES  # noqa: F401  (re-exported: the stages, named in trial_plan)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class ModelSection(Section):
    """``[model]``: the diffusion model to search plans for."""

    SECTION: ClassVar[str] = "model"

    source: str = setting("", help="bundled name, diffusers folder or Hugging Face hub id")
    image_size: int | None = setting(None, check=positive, help="height and width of a pipeline's images")
    num_frames: int | None = setting(None, check=positive, help="frames of a video pipeline's videos")
    dtype: str = setting("float32", check=one_of(DTYPES), help="precision of the model: float32, bfloat16 or float16")
    offload: bool = setting(
        False, help="move each pipeline component to the accelerator only while it runs (diffusers' enable_model_cpu_offload)"
    )


@dataclass(frozen=True)
class FidSection(Section):
    """``[fid]``: the feature network and the reference statistics FID is measured against."""

    SECTION: ClassVar[str] = "fid"

    features: str = setting("digits", help="digits, digits-frames (16x16 moving-digit frames), inception, or a TorchScript feature network (.pt)")
    reference: str = setting("digits", help="digits (all 1,797 real digits), digits-video (the frames of the real moving digits), "
                                            "an .npz with mu and sigma, or a folder of images")
    feature_weights: str | None = setting(None, help="weights file of the feature network")


@dataclass(frozen=True)
class HintsSection(Section):
    """``[hints]``: how a user gets each input this preset needs and cannot ship (shown when it is missing)."""

    SECTION: ClassVar[str] = "hints"

    model: str = setting("", help="how to get the model folder")
    classifier: str = setting("", help="how to get the classifier folder")
    reference: str = setting("", help="how to get the reference statistics")


@dataclass(frozen=True)
class TimestepStage(Section):
    """``[timesteps]``: stage 1, time steps only, with the full network."""

    SECTION: ClassVar[str] = "timesteps"

    k_min: int = setting(4, check=positive)
    k_max: int = setting(4, check=positive)
    n_trials: int = setting(200, check=positive)
    num_samples: int = setting(500, check=FID_SAMPLES_RULE)
    population_size: int = setting(20, check=POPULATION_RULE)
    low_fidelity_fraction: float = setting(0.0, check=fraction)

    def validate(self) -> None:
        if self.k_min > self.k_max:
            raise self.error("k_max", f"timesteps.k_max ({self.k_max}) is below k_min ({self.k_min})")


@dataclass(frozen=True)
class ArchitectureStage(Section):
    """``[architecture]``: stage 2, per-step skipped and reused blocks (time steps may be nudged)."""

    SECTION: ClassVar[str] = "architecture"

    n_trials: int = setting(100, check=positive)
    num_samples: int = setting(500, check=FID_SAMPLES_RULE)
    population_size: int = setting(20, check=POPULATION_RULE)
    macs_budget: float | None = setting(None, check=positive)
    low_fidelity_fraction: float = setting(0.0, check=fraction)
    probe_samples: int = setting(
        0, check=at_least(0), help="samples to score each single skip or reuse with before the search, at most num_samples (0: no probes)"
    )

    def validate(self) -> None:
        if self.probe_samples == 1:
            raise self.error("probe_samples", "architecture.probe_samples must be 0 (off) or at least 2")


@dataclass(frozen=True)
class StudyConfig:
    """Everything a search needs: model, sampling, fitness, FID reference and the two stages."""

    name: str
    model: ModelSection = field(default_factory=ModelSection)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    fitness: FitnessSettings = field(default_factory=FitnessSettings)
    fid: FidSection = field(default_factory=FidSection)
    timesteps: TimestepStage = field(default_factory=TimestepStage)
    architecture: ArchitectureStage = field(default_factory=ArchitectureStage)
    prompts: PromptSettings = field(default_factory=PromptSettings)
    hints: HintsSection = field(default_factory=HintsSection)

    SECTIONS: ClassVar[dict[str, type[Section]]] = {
        "model": ModelSection,
        "sampling": SamplingSettings,
        "fitness": FitnessSettings,
        "fid": FidSection,
        "timesteps": TimestepStage,
        "architecture": ArchitectureStage,
        "prompts": PromptSettings,
        "hints": HintsSection,
    }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StudyConfig":
        """From :meth:`to_dict`'s form: ``{"name": ..., section: {key: value}}`` (sections may be left out)."""
        sections = {name: kind.from_mapping(data.get(name, {})) for name, kind in cls.SECTIONS.items()}
        return cls(name=data["name"], **sections)

    def low_fidelity_samples(self, stage: str) -> int | None:
        """Samples of a candidate's first look in ``stage``; None when every candidate gets the full count.

        Multi-fidelity extrapolates small-sample FID, so it applies to the ``fid`` fitness only: with
        another metric (a mean over samples, unbiased at any count) every candidate gets the full count.
        """
        if self.fitness.metric != "fid":
            return None
        settings = getattr(self, stage)
        low = round(settings.low_fidelity_fraction * settings.num_samples)
        return low if 2 <= low < settings.num_samples else None

    def stage_study_name(self, stage: str) -> str:
        """Name of the Optuna study of ``stage`` ("timesteps" or "architecture")."""
        return f"{self.name}-{stage}"


def preset_names() -> list[str]:
    """Names of the bundled study presets."""
    return sorted(p.stem for p in _presets_dir().iterdir() if p.suffix == ".toml")


def _presets_dir() -> Path:
    """``studies/`` inside an installed package, else the source checkout's top-level ``studies/``."""
    installed = Path(__file__).resolve().parent / "studies"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "studies"


def _line_of(text: str, section: str, key: str | None) -> int | None:
    """Line number of ``key`` inside ``[section]`` (of the section header when ``key`` is None)."""
    current = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"\s*\[([^\]]+)\]", line)
        if header:
            current = header.group(1).strip()
            if key is None and current == section:
                return number
        elif key is not None and current == section and re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    return None


def parse_study_config(text: str, *, name: str, origin: str, folder: Path | None = None) -> StudyConfig:
    """Parse and validate a study TOML text; ``origin`` names it in errors.

    ``folder``: where a relative ``[prompts] file`` is read from (the study file's folder).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{origin}: malformed TOML: {error}") from None
    for section in data:
        if section not in StudyConfig.SECTIONS:
            raise ConfigError(f"{origin}: unknown section [{section}]; known: {', '.join(StudyConfig.SECTIONS)}")
    prompt_file = data.get("prompts", {}).get("file") if isinstance(data.get("prompts"), dict) else None
    if (
        folder is not None and isinstance(prompt_file, str) and shipped_prompt_set(prompt_file) is None
        and not Path(prompt_file).expanduser().is_absolute()
    ):
        data["prompts"] = {**data["prompts"], "file": str(folder / prompt_file)}
    try:
        return StudyConfig.from_dict({**data, "name": name})
    except SettingError as error:
        line = _line_of(text, error.section, error.key)
        raise ConfigError(f"{origin}, line {line}: {error}" if line else f"{origin}: {error}") from None


def load_study_config(study: str | None = None, *, config: str | Path | None = None) -> StudyConfig:
    """Load the preset ``study`` (``studies/NAME.toml``) or the file ``config``.

    Raises:
        ConfigError: unknown preset, missing file, malformed TOML, unknown key or a wrong value.
    """
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"study file {path} does not exist")
        text = read_utf8(path, "study file")
        return parse_study_config(text, name=study or path.stem, origin=str(path), folder=path.resolve().parent)
    if study is None:
        raise ConfigError("name a study preset (--study) or a study file (--config)")
    preset = _presets_dir() / f"{study}.toml"
    if not preset.is_file():
        raise ConfigError(f"unknown study {study!r}; presets: {', '.join(preset_names())} (or pass --config FILE)")
    return parse_study_config(preset.read_text(), name=study, origin=f"studies/{study}.toml", folder=preset.parent)


OVERRIDES: dict[str, tuple[tuple[str, str], ...]] = {
    "model": (("model", "source"),),
    "features": (("fid", "features"),),
    "reference": (("fid", "reference"),),
    "feature_weights": (("fid", "feature_weights"),),
    "seed": (("sampling", "seed"),),
    "batch_size": (("sampling", "batch_size"),),
    "solver": (("sampling", "solver"),),
    "classifier": (("sampling", "classifier"),),
    "image_size": (("model", "image_size"),),
    "num_frames": (("model", "num_frames"),),
    "dtype": (("model", "dtype"),),
    "offload": (("model", "offload"),),
    "prompts": (("prompts", "file"),),
    "negative_prompt": (("prompts", "negative_prompt"),),
    "num_samples": (("timesteps", "num_samples"), ("architecture", "num_samples")),
}
"""What each command-line override sets: (section, key) pairs."""


def with_overrides(config: StudyConfig, **overrides: Any) -> StudyConfig:
    """``config`` with command-line overrides (keys of :data:`OVERRIDES`; ``None`` values are ignored).

    The changed sections check themselves again, so a bad override is a one-line ConfigError.
    """
    for option, value in overrides.items():
        if option not in OVERRIDES:
            raise ConfigError(f"unknown override {option!r}; known: {', '.join(OVERRIDES)}")
        if value is None:
            continue
        for section, key in OVERRIDES[option]:
            config = dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **{key: value})})
    return config
