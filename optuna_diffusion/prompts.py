"""Prompt sets: the prompts a text-to-image study generates its images from.

A :class:`PromptSet` is read from a file: plain text, one prompt per line (blank lines and lines
starting with ``#`` are skipped), or JSON Lines (``.jsonl``), one object per line with a ``prompt`` and
an optional ``negative_prompt``. Sample i of a study uses prompt ``i mod N``, so every candidate plan
sees the same prompts with the same initial noise (common random numbers).

A negative prompt given for the whole set (``negative_prompt=``) applies to every prompt without one
of its own; a prompt with none at all runs its pipeline's default unconditional pass (the empty
prompt, or SDXL's zero embeddings).

The package ships one set written for this project, :func:`default_prompts` (a few hundred everyday
scenes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterable, Iterator, Sequence

from .errors import ConfigError, MissingFileError, read_utf8
from .settings import Section, setting

SHIPPED_PROMPT_SETS = Path(__file__).parent / "prompt_sets"
"""Prompt files shipped with the package, named by their stem in ``[prompts] file`` (``"digits"``)."""
DEFAULT_PROMPT_FILE = SHIPPED_PROMPT_SETS / "everyday.txt"
"""The prompt set shipped with the package (plain text, one scene per line)."""


@dataclass(frozen=True)
class Prompt:
    """One prompt and its negative prompt (None: the pipeline's default unconditional pass)."""

    text: str
    negative: str | None = None


class PromptSet:
    """An ordered, non-empty set of prompts; sample i uses prompt ``i mod len(self)``.

    Args:
        prompts: the prompts, in order (:class:`Prompt` or plain strings).
        negative_prompt: negative prompt of every prompt that has none of its own.
        source: where the prompts came from (for messages).
    """

    def __init__(
        self, prompts: Iterable[Prompt | str], *, negative_prompt: str | None = None, source: str = "prompts"
    ) -> None:
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise ConfigError(f"negative_prompt must be a string or None, got {negative_prompt!r}")
        items: list[Prompt] = []
        for number, prompt in enumerate(prompts, 1):
            if isinstance(prompt, str):
                prompt = Prompt(prompt)
            if not isinstance(prompt, Prompt) or not isinstance(prompt.text, str) or not prompt.text.strip():
                raise ConfigError(f"{source}: prompt {number} must be a non-empty string, got {prompt!r}")
            if prompt.negative is not None and not isinstance(prompt.negative, str):
                raise ConfigError(
                    f"{source}: negative prompt of prompt {number} must be a string, got {prompt.negative!r}"
                )
            negative = prompt.negative if prompt.negative is not None else negative_prompt
            items.append(Prompt(prompt.text, negative))
        if not items:
            raise ConfigError(f"{source} holds no prompts")
        self._prompts = tuple(items)
        self.source = source

    @classmethod
    def from_file(cls, path: str | Path, *, negative_prompt: str | None = None) -> "PromptSet":
        """Read a prompt file: ``.jsonl`` as JSON Lines, anything else as one prompt per line.

        Raises:
            MissingFileError: the file does not exist.
            ConfigError: the file is empty, not UTF-8, or a line is malformed (the message names the line).
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise MissingFileError(f"prompt file {path} does not exist")
        lines = read_utf8(path, "prompt file").splitlines()
        if path.suffix.lower() == ".jsonl":
            prompts = list(_json_lines(lines, path))
        else:
            prompts = [Prompt(line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not prompts:
            raise ConfigError(f"prompt file {path} holds no prompts (blank lines and # comments are skipped)")
        return cls(prompts, negative_prompt=negative_prompt, source=f"prompt file {path}")

    def __len__(self) -> int:
        return len(self._prompts)

    def __getitem__(self, index: int) -> Prompt:
        return self._prompts[index]

    def __iter__(self) -> Iterator[Prompt]:
        return iter(self._prompts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PromptSet) and self._prompts == other._prompts

    def __hash__(self) -> int:
        return hash(self._prompts)

    def __repr__(self) -> str:
        return f"PromptSet({len(self)} prompts from {self.source})"

    def index_of_sample(self, sample: int) -> int:
        """The prompt index of sample ``sample``: ``sample mod len(self)``."""
        return sample % len(self)

    def indices(self, start: int, stop: int) -> tuple[int, ...]:
        """Prompt indices of samples ``start..stop-1``."""
        return tuple(self.index_of_sample(i) for i in range(start, stop))

    def texts(self, start: int, stop: int) -> list[str]:
        """The prompts of samples ``start..stop-1``, as a pipeline takes them (``pipe(prompt=...)``)."""
        return [self._prompts[i].text for i in self.indices(start, stop)]

    def negatives(self, start: int, stop: int) -> list[str | None]:
        """The negative prompts of samples ``start..stop-1`` (None: the pipeline's default)."""
        return [self._prompts[i].negative for i in self.indices(start, stop)]


def _json_lines(lines: Sequence[str], path: Path) -> Iterator[Prompt]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"prompt file {path}, line {number}: not JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise ConfigError(
                f"prompt file {path}, line {number}: expected an object with a \"prompt\", got {line.strip()[:60]}"
            )
        unknown = sorted(set(record) - {"prompt", "negative_prompt"})
        if unknown:
            raise ConfigError(
                f"prompt file {path}, line {number}: unknown key {unknown[0]!r} (known: prompt, negative_prompt)"
            )
        prompt, negative = record.get("prompt"), record.get("negative_prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(f"prompt file {path}, line {number}: \"prompt\" must be a non-empty string")
        if negative is not None and not isinstance(negative, str):
            raise ConfigError(f"prompt file {path}, line {number}: \"negative_prompt\" must be a string")
        yield Prompt(prompt.strip(), negative)


def shipped_prompt_set(name: str) -> Path | None:
    """The shipped prompt file ``name`` names (a bare stem such as ``"digits"``), else None."""
    if "/" in name or "\\" in name or "." in name:
        return None
    path = SHIPPED_PROMPT_SETS / f"{name}.txt"
    return path if path.is_file() else None


def default_prompts(*, negative_prompt: str | None = None) -> PromptSet:
    """The prompt set shipped with the package: a few hundred everyday scenes, one per line."""
    return PromptSet.from_file(DEFAULT_PROMPT_FILE, negative_prompt=negative_prompt)


@dataclass(frozen=True)
class PromptSettings(Section):
    """The ``[prompts]`` section of a study file.

    Args:
        file: a prompt file (plain text or ``.jsonl``), or the name of a shipped set (``"everyday"``,
            ``"digits"``: the prompt language of the bundled ``digits-t2i``); None: the everyday scenes.
        negative_prompt: negative prompt of every prompt that has none of its own (None: the pipeline's
            default unconditional pass).
    """

    SECTION: ClassVar[str] = "prompts"

    file: str | None = setting(None)
    negative_prompt: str | None = setting(None)

    def load(self, base: str | Path | None = None) -> PromptSet:
        """The prompt set; a relative ``file`` is read relative to ``base`` (e.g. the study file's folder)."""
        if self.file is None:
            return default_prompts(negative_prompt=self.negative_prompt)
        shipped = shipped_prompt_set(self.file)
        if shipped is not None:
            return PromptSet.from_file(shipped, negative_prompt=self.negative_prompt)
        path = Path(self.file).expanduser()
        if base is not None and not path.is_absolute():
            path = Path(base) / path
        return PromptSet.from_file(path, negative_prompt=self.negative_prompt)
