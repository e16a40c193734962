"""Typed, frozen, validated settings of an experiment.

Each experiment declares its settings as a frozen dataclass deriving from
:class:`Settings`, one field per setting made with :func:`setting`, which names the
default and the :class:`Rule` the value must satisfy. Building an instance checks every
field (its type and range) and then the experiment's cross-field :meth:`Settings.check`,
so a bad value is refused, with an error naming the setting and its value, before the
runner writes anything. ``--set KEY=VALUE`` goes through :meth:`Settings.replace`.

The settings are recorded in every result file as :meth:`Settings.to_dict` (lists for
tuples), the same dictionary the string-keyed settings of earlier versions wrote, so a
results directory started by them still resumes.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from stochbp.experiments.errors import UsageError


class SettingError(UsageError, ValueError):
    """A setting with an invalid value or an unknown name (one line, names both)."""

    def __init__(self, message: str, name: str = None, value: Any = None,
                 requirement: str = None):
        super().__init__(message)
        self.name, self.value, self.requirement = name, value, requirement


def _identity(value):
    return value


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a setting's value must be: ``text`` completes "NAME must be ...",
    ``accepts`` tests a value as given (for instance parsed from JSON), ``convert``
    gives the stored form (float for numbers, tuple for lists)."""

    text: str
    accepts: Callable[[Any], bool]
    convert: Callable[[Any], Any] = _identity


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def int_at_least(low: int) -> Rule:
    text = {0: "a non-negative integer", 1: "a positive integer"}.get(
        low, f"an integer >= {low}")
    return Rule(text, lambda v: _is_int(v) and v >= low)


POSITIVE_INT = int_at_least(1)
NON_NEGATIVE_INT = int_at_least(0)
POSITIVE_NUMBER = Rule("a positive number", lambda v: _is_number(v) and v > 0, float)
TEXT = Rule("a string", lambda v: isinstance(v, str))


def one_of(*choices) -> Rule:
    text = "one of " + ", ".join(str(c) for c in choices)
    return Rule(text, lambda v: any(v == c and type(v) is type(c) for c in choices))


def optional(rule: Rule, null_means: str = None) -> Rule:
    """The rule, or None (JSON null)."""
    text = f"{rule.text} or null" + (f" ({null_means})" if null_means else "")
    return Rule(text, lambda v: v is None or rule.accepts(v),
                lambda v: None if v is None else rule.convert(v))


def non_empty_list(rule: Rule) -> Rule:
    """A non-empty list (stored as a tuple) of values that each satisfy the rule."""
    return Rule(f"a non-empty list, each element {rule.text}",
                lambda v: isinstance(v, (list, tuple)) and len(v) > 0
                and all(rule.accepts(x) for x in v),
                lambda v: tuple(rule.convert(x) for x in v))


def setting(default, rule: Rule, doc: str = ""):
    """A settings field: its default (the paper's setting), its rule and what it is."""
    return dataclasses.field(default=default, metadata={"rule": rule, "doc": doc})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of every experiment's settings; subclasses add fields made by :func:`setting`
    and may override :meth:`check` for constraints between fields."""

    def __post_init__(self):
        for field in dataclasses.fields(self):
            rule = field.metadata["rule"]
            value = getattr(self, field.name)
            if not rule.accepts(value):
                raise SettingError(f"setting {field.name} must be {rule.text}; got "
                                   f"{field.name}={value!r}", field.name, value, rule.text)
            object.__setattr__(self, field.name, rule.convert(value))
        self.check()

    def check(self) -> None:
        """Constraints between fields; raise :class:`SettingError` (via :meth:`fail`)."""

    def fail(self, name: str, requirement: str):
        """Raise the error for setting ``name`` failing ``requirement``."""
        value = getattr(self, name)
        raise SettingError(f"setting {name} must be {requirement}; got {name}={value!r}",
                           name, value, requirement)

    @classmethod
    def names(cls) -> tuple:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes) -> "Settings":
        """A validated copy with some settings changed; unknown names are refused."""
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise SettingError(f"unknown setting(s) {unknown}; valid settings: "
                               f"{', '.join(sorted(self.names()))}", unknown[0])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The JSON form recorded in manifests and result files (lists for tuples)."""
        return {name: list(v) if isinstance(v, tuple) else v
                for name, v in ((f.name, getattr(self, f.name))
                                for f in dataclasses.fields(self))}
