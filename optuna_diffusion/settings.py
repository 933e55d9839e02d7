"""Settings sections that check themselves: one field, one setting, wherever it comes from.

A section of a study file (``[sampling]``, ``[timesteps]`` ...) is a frozen dataclass deriving from
:class:`Section`. Each field is one setting: its type annotation says what values it takes, its
default is the default, and :func:`setting` attaches a check. The section checks every field when it
is built -- from a TOML table, from a stored dict, from Python, or by ``dataclasses.replace`` with a
command-line override -- so adding a setting is one field (plus its test), and no reader repeats
the rules. A wrong value raises :class:`SettingError`, which names the section and the key, so the
TOML reader can add the file and line.

The same types and checks hold for the keyword arguments of the Python API (the samplers,
``PlanObjective``): :func:`check_argument` checks one as a field is checked, so a rule shared by a
study-file setting and an argument (:data:`POPULATION_RULE`, :data:`FID_SAMPLES_RULE`) is written once.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from .errors import ConfigError

Check = Callable[[Any], "str | None"]
"""A check returns what is wrong with a value (``"must be positive"``), or None when it is fine."""


class SettingError(ConfigError):
    """A setting has a wrong value; ``section`` and ``key`` say which (``key`` None: no single key)."""

    def __init__(self, message: str, *, section: str, key: str | None) -> None:
        super().__init__(message)
        self.section = section
        self.key = key


def setting(default: Any, *, check: Check | None = None, help: str = "") -> Any:
    """A field of a :class:`Section`: its default, an optional check and a one-line help text."""
    return dataclasses.field(default=default, metadata={"check": check, "help": help})


# Checks -------------------------------------------------------------------------------------------


def positive(value: Any) -> str | None:
    return None if value > 0 else "must be positive"


def at_least(minimum: float) -> Check:
    return lambda value: None if value >= minimum else f"must be >= {minimum:g}"


def fraction(value: Any) -> str | None:
    return None if 0 <= value < 1 else "must be in [0, 1) (0: off)"


def probability(value: Any) -> str | None:
    return None if 0 <= value <= 1 else "must be in [0, 1]"


def one_of(choices: Callable[[], typing.Iterable[str]] | typing.Iterable[str]) -> Check:
    """The value must be one of ``choices`` (a collection, or a function giving one when checked)."""

    def check(value: Any) -> str | None:
        known = list(choices() if callable(choices) else choices)
        return None if value in known else f"must be one of {', '.join(known)}"

    return check


# Rules shared by study-file settings and Python arguments ------------------------------------------

POPULATION_RULE = at_least(2)
"""A genetic search's population and its parents (a stage's ``population_size``, the samplers'
``population_size`` and ``num_parents``): two at least."""

FID_SAMPLES_RULE = at_least(2)
"""Images per FID (a stage's ``num_samples``, ``PlanObjective``'s): a covariance needs two."""


# Sections -----------------------------------------------------------------------------------------


def _type_name(kind: Any) -> str:
    if kind is float:
        return "int or float"
    if typing.get_origin(kind) is tuple:
        return f"a list of {_type_name(typing.get_args(kind)[0])}"
    return getattr(kind, "__name__", str(kind))


def _coerce(value: Any, annotation: Any, where: str, section: str, key: str) -> Any:
    """``value`` as the annotation's type (an int is a float; a list is a ``tuple[X, ...]``), or SettingError."""
    kinds = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    if value is None and type(None) in kinds:
        return None
    concrete = [kind for kind in kinds if kind is not type(None)]
    for kind in concrete:
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise SettingError(f"{where} must be a finite number, got {value!r}", section=section, key=key)
            return float(value)
        if kind in (int, str, bool) and isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return value
        if typing.get_origin(kind) is tuple and isinstance(value, (list, tuple)):
            item = typing.get_args(kind)[0]
            return tuple(_coerce(element, item, f"every entry of {where}", section, key) for element in value)
    names = " or ".join(_type_name(kind) for kind in concrete)
    raise SettingError(f"{where} must be {names}, got {value!r}", section=section, key=key)


def check_argument(value: Any, name: str, kind: Any, check: Check | None = None) -> Any:
    """A keyword argument of the Python API checked as a :class:`Section` field is: of type ``kind`` (an
    annotation such as ``int`` or ``float | None``; numpy numbers count as Python's), then ``check``.

    Returns:
        the value as that type (an int given for a float is a float).

    Raises:
        ConfigError: one line naming the argument: ``"`k_min` must be positive, got 0"``.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, (bool, float)):
        value = float(value)
    where = f"`{name}`"
    try:
        value = _coerce(value, kind, where, "", name)
    except SettingError as error:
        raise ConfigError(str(error)) from None
    problem = check(value) if check is not None and value is not None else None
    if problem:
        raise ConfigError(f"{where} {problem}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Section:
    """Base of a settings section; subclasses are frozen dataclasses with a ``SECTION`` name."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            where = f"{self.SECTION}.{field.name}"
            value = _coerce(getattr(self, field.name), hints[field.name], where, self.SECTION, field.name)
            object.__setattr__(self, field.name, value)
            check = field.metadata.get("check")
            problem = check(value) if check is not None and value is not None else None
            if problem:
                raise SettingError(f"{where} {problem}, got {value!r}", section=self.SECTION, key=field.name)
        self.validate()

    def validate(self) -> None:
        """Checks that involve several fields; raise :meth:`error` naming the key to blame."""

    def error(self, key: str | None, message: str) -> SettingError:
        """A SettingError about ``key`` of this section (``message`` is the whole text)."""
        return SettingError(message, section=self.SECTION, key=key)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "Section":
        """The section from a table of settings; an unknown key is a SettingError naming it."""
        if not isinstance(values, Mapping):
            raise SettingError(f"[{cls.SECTION}] must be a table", section=cls.SECTION, key=None)
        known = cls.keys()
        for key in values:
            if key not in known:
                raise SettingError(
                    f"unknown key {cls.SECTION}.{key}; known: {', '.join(known)}", section=cls.SECTION, key=key
                )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
