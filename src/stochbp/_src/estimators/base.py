"""The interface every gradient estimator implements (optax-style small objects).

An estimator turns (f, distribution, key, number of samples) into a scalar *surrogate*:
its value is the Monte Carlo mean of f over the drawn samples and its gradient with
respect to the distribution's parameters is the estimator's estimate of
grad_theta E[f(z)]. Stateful estimators (a moving-average baseline) also map a state to
a new state.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Tuple

import jax
import numpyro.distributions as nd

from stochbp._src.families.base import family_of, registered_families, unwrap


@dataclasses.dataclass(frozen=True)
class Estimator:
    """Base class. Subclasses are frozen dataclasses built by lowercase factories."""

    @property
    def name(self) -> str:
        return type(self).__name__

    stateful = False

    def init(self) -> Any:
        """Initial state (None for stateless estimators)."""
        return None

    def check(self, dist: nd.Distribution) -> None:
        """Raise ValueError if this estimator cannot handle ``dist``."""

    def surrogate(self, f: Callable, dist: nd.Distribution, key, num_samples: int,
                  state: Any) -> Tuple[jax.Array, Any]:
        raise NotImplementedError


def unsupported(estimator: str, dist: nd.Distribution, why: str, alternatives: str):
    return ValueError(f"{estimator} does not support {type(unwrap(dist)).__name__}: {why}. "
                      f"{alternatives}")


def known_families() -> str:
    return ", ".join(f.name for f in registered_families())


def require_family(estimator: str, dist: nd.Distribution):
    fam = family_of(dist)
    if fam is None:
        raise unsupported(estimator, dist, "stochbp has no rule for this family",
                          f"Families with rules: {known_families()}.")
    return fam
