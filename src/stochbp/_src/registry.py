"""The family registry: which :class:`Family` object answers for a numpyro distribution.

A leaf module (it imports no other part of stochbp), so that families, estimators, the
mixture sampler and the checks can all look families up without import cycles.
Dispatch walks the distribution's class hierarchy (most specific class first), after
removing ``Independent`` wrappers, which do not change how coordinates are drawn.
"""
from __future__ import annotations

from typing import Any, Optional

import numpyro.distributions as nd

_REGISTRY: dict = {}


def register_family(family: Any) -> Any:
    """Make ``family`` the rule set for every numpyro class in ``family.types``.

    A later registration for the same class replaces the earlier one (so a user can
    override a built-in rule). Returns ``family``, so it can decorate an instance
    expression. Raises TypeError naming what is missing.
    """
    types = getattr(family, "types", None)
    if not isinstance(types, tuple) or not types or not all(
            isinstance(t, type) and issubclass(t, nd.Distribution) for t in types):
        raise TypeError("register_family(): family.types must be a non-empty tuple of "
                        f"numpyro Distribution classes; got types={types!r}")
    if not isinstance(getattr(family, "name", None), str):
        raise TypeError("register_family(): family.name must be a string; got "
                        f"name={getattr(family, 'name', None)!r}")
    for t in types:
        _REGISTRY[t] = family
    return family


def unwrap(d: nd.Distribution) -> nd.Distribution:
    """Independent(base) draws the same independent coordinates as base."""
    while isinstance(d, nd.Independent):
        d = d.base_dist
    return d


def family_of(d: nd.Distribution) -> Optional[Any]:
    """The registered family of ``d`` (after unwrapping ``Independent``), or None."""
    for cls in type(unwrap(d)).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def parameter_items(d):
    """(name, constraint, array) for the parameters a distribution holds, recursing into
    the distributions it wraps (Independent, mixtures). Lazily derived parameters that
    were never computed are skipped: reading them could cache a value of another trace."""
    constraints = getattr(d, "arg_constraints", {})
    for name, constraint in constraints.items():
        value = d.__dict__.get(name)
        if value is not None and hasattr(value, "dtype"):
            yield name, constraint, value
    for value in d.__dict__.values():
        if isinstance(value, nd.Distribution):
            yield from parameter_items(value)


def registered_families() -> list:
    """Every registered family, once each, in registration order."""
    seen: list = []
    for fam in _REGISTRY.values():
        if fam not in seen:
            seen.append(fam)
    return seen


def known_families() -> str:
    return ", ".join(f.name for f in registered_families())
