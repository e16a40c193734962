"""Shared pieces of the estimators that work in logit space (arm, disarm,
gumbel_softmax, rebar, relax).

Their gradient estimate ghat is with respect to the distribution's logits l, and the
surrogate adds sum (l(theta) - sg l(theta)) * sg(ghat), so jax.grad chains it to
whatever the distribution was built from. The family supplies l as a function of the
parameters (``Family.logits``: log p - log(1 - p) for a probs-parameterised Bernoulli,
log p for a Categorical), the number of classes, and the chaining
(``Family.logit_surrogate``); these estimators never look at distribution classes.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from stochbp._src.registry import family_of, unwrap

#: Key streams of one draw of the REBAR / RELAX and ARM constructions.
NOISE_STREAM, CONDITIONAL_STREAM = 0, 1


class LogitView(NamedTuple):
    """What a logit-space estimator needs to know about a discrete distribution."""

    family: object
    base: object  # the distribution without Independent wrappers
    logits: jax.Array  # differentiable function of the parameters
    num_classes: Optional[int]  # None: binary coordinates

    @property
    def categorical(self) -> bool:
        return self.num_classes is not None

    def surrogate(self, ghat, f_mean, *, stop: bool = True) -> jax.Array:
        """Zero-valued term whose gradient is ghat chained to the parameters."""
        return self.family.logit_surrogate(self.base, ghat, f_mean, stop=stop)


def logit_view(dist) -> LogitView:
    base = unwrap(dist)
    fam = family_of(base)
    return LogitView(fam, base, fam.logits(base), fam.num_classes(base))


def open_uniform(key, shape, dtype) -> jax.Array:
    """Uniform draws clipped to [eps, 1 - eps] so that their logs stay finite."""
    eps = jnp.finfo(dtype).eps
    return jnp.clip(jax.random.uniform(key, shape, dtype), eps, 1 - eps)


def require_categorical(owner: str, dist, alternatives: str):
    """The family of ``dist`` if it is a categorical family with logits (K classes per
    coordinate), after checking the logits; else an error naming the distribution."""
    from stochbp._src.estimators.base import require_logits, unsupported
    fam = family_of(dist)
    if fam is None or not fam.discrete or not fam.has_logits() \
            or fam.num_classes(unwrap(dist)) is None:
        raise unsupported(owner, dist, "it is defined for categorical variables only",
                          alternatives)
    return require_logits(owner, dist, alternatives=alternatives)


def flat_logits(view: LogitView) -> jax.Array:
    """The logits as (d, K): one row per independent categorical variable."""
    return view.logits.reshape(-1, view.num_classes)
