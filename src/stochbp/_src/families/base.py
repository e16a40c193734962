"""The per-family interface and the registry that dispatches on a distribution's type.

A :class:`Family` gathers what stochbp knows about one numpyro distribution family:
how to validate its parameters, its Fourier rule (the paper's Equations 15-22), its
cumulant generating function (used by Equation 23) and whether it has a pathwise sample.
Estimators look the family up with :func:`family_of`; they never inspect concrete
distribution classes themselves.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import numpyro.distributions as nd

from stochbp._src import checks

Surrogate = jax.Array


class Family:
    """Rules for one distribution family. Subclasses override what they support."""

    name: str = "?"
    types: tuple = ()
    series: bool = False  # True: the Fourier rule is an infinite series and needs `order`
    reparameterized: bool = False  # True: pathwise() is available

    def check(self, d: nd.Distribution) -> None:
        """Raise ValueError for invalid (concrete) parameter values."""

    def fourier(self, f: Callable, d: nd.Distribution, key, num_samples: int,
                order: Optional[int]) -> Surrogate:
        raise NotImplementedError

    def cgf(self, d: nd.Distribution, t) -> jax.Array:
        """Per-coordinate cumulant generating function log E[exp(t z_j)]."""
        raise NotImplementedError(f"{self.name} has no closed-form cumulant generating "
                                  "function in stochbp")

    def cgf_domain_check(self, d: nd.Distribution, t) -> None:
        """Raise ValueError if t lies outside the CGF's domain (concrete values only)."""

    def has_cgf(self) -> bool:
        return type(self).cgf is not Family.cgf

    def pathwise_sample(self, d: nd.Distribution, key, num_samples: int):
        return d.rsample(key, (num_samples,))


_REGISTRY: dict[type, Family] = {}


def register(family: Family) -> Family:
    for t in family.types:
        _REGISTRY[t] = family
    return family


def unwrap(d: nd.Distribution) -> nd.Distribution:
    """Independent(base) draws the same independent coordinates as base."""
    while isinstance(d, nd.Independent):
        d = d.base_dist
    return d


def family_of(d: nd.Distribution) -> Optional[Family]:
    for cls in type(unwrap(d)).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def registered_families() -> list[Family]:
    seen: list[Family] = []
    for fam in _REGISTRY.values():
        if fam not in seen:
            seen.append(fam)
    return seen


def require_order(family: Family, order: Optional[int]) -> int:
    if order is None:
        raise ValueError(
            f"fourier(): order is required for {family.name}: its rule is an infinite "
            "series (truncated as in the paper's Eq. 24); pass e.g. stochbp.fourier(order=8)")
    return checks.positive_int("fourier()", "order", order)
