"""Errors of optuna-diffusion.

Every error the library raises on purpose derives from :class:`OptunaDiffusionError` and carries a
one-line message meant for a person, so the CLI can print it as it is and exit non-zero.
"""

from __future__ import annotations

from pathlib import Path


def first_line(error: BaseException | None) -> str:
    """The first line of ``error``'s message (its type name when the message is empty), for one-line errors."""
    if error is None:
        return "unknown error"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_utf8(path: Path, what: str) -> str:
    """The text of the file ``path``; a one-line ConfigError when it is not UTF-8 (``what`` says what the file is)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{what} {path} is not UTF-8 text ({error.reason} at byte {error.start})") from None


class OptunaDiffusionError(Exception):
    """Base class of the library's own errors: one line, written for the user."""


class PlanError(OptunaDiffusionError, ValueError):
    """A Plan is malformed or does not fit the model it is run on."""


class ModelLoadError(OptunaDiffusionError):
    """A model, scheduler or feature network could not be loaded."""


class ConfigError(OptunaDiffusionError, ValueError):
    """A setting (study file, CLI option, argument) is invalid."""


class ConversionError(OptunaDiffusionError, ValueError):
    """A checkpoint cannot be converted (missing, extra or mis-shaped tensors, wrong file)."""


class MissingFileError(OptunaDiffusionError, FileNotFoundError):
    """A file the user named does not exist."""


class StorageError(OptunaDiffusionError):
    """The storage went away during a search (completed trials are kept; rerunning resumes).

    Not bad input, so the command line exits with its own code."""

    exit_code = 3
