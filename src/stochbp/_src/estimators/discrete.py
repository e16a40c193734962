"""Shared pieces of the estimators for binary and categorical variables.

arm, disarm, gumbel_softmax, rebar and relax all work in logit space: their gradient
estimate ghat is with respect to the distribution's logits l, and the surrogate adds
sum (l(theta) - sg l(theta)) * sg(ghat), so jax.grad chains it to whatever the
distribution was built from. For a probs-parameterised distribution l is
log p - log(1 - p) (Bernoulli) or log p (Categorical), which is why these estimators need
p strictly inside (0, 1).
"""
from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
from jax import lax

from stochbp._src import checks, series
from stochbp._src.estimators.base import known_families, unsupported
from stochbp._src.families.base import family_of, unwrap

BERNOULLI, CATEGORICAL = "Bernoulli", "Categorical"


def require_discrete(owner: str, dist, allowed=(BERNOULLI, CATEGORICAL),
                     alternatives: str = ""):
    """The family of ``dist`` if it is among ``allowed``, else an error naming it."""
    fam = family_of(dist)
    if fam is None or fam.name not in allowed:
        names = " and ".join(allowed)
        raise unsupported(owner, dist, f"it is defined for {names} variables only",
                          alternatives or "For other families use stochbp.fourier(), "
                          "stochbp.pathwise() or stochbp.score_function() (families with "
                          f"rules: {known_families()}).")
    base = unwrap(dist)
    if isinstance(base, nd.BernoulliProbs):
        checks.check_values(owner, "probs", base.probs, lambda v: (v > 0) & (v < 1),
                            "in the open interval (0, 1) (the estimator works on logits "
                            "log p - log(1 - p))")
    elif isinstance(base, nd.CategoricalProbs):
        checks.check_values(owner, "probs", base.probs, lambda v: v > 0,
                            "positive (the estimator works on logits log p)")
    else:
        checks.finite(owner, "logits", base.logits)
    return fam


def logits_of(base) -> jax.Array:
    """The logits as a differentiable function of the distribution's parameters.

    Bernoulli: logits, or log p - log(1 - p); Categorical: logits, or log p. Broadcast to
    batch_shape (+ (K,)).
    """
    if isinstance(base, nd.BernoulliProbs):
        p = base.probs
        l = jnp.log(p) - jnp.log1p(-p)
        return jnp.broadcast_to(l, base.batch_shape)
    if isinstance(base, nd.BernoulliLogits):
        return jnp.broadcast_to(base.logits, base.batch_shape)
    if isinstance(base, nd.CategoricalProbs):
        l = jnp.log(base.probs)
    else:
        l = base.logits
    return jnp.broadcast_to(l, base.batch_shape + l.shape[-1:])


def _zero_valued(coeffs, stats, stop: bool):
    if stop:
        return series.zero_valued(coeffs, stats)
    return jnp.sum((coeffs - lax.stop_gradient(coeffs)) * stats)


def logit_surrogate(base, ghat, f_mean, *, stop: bool = True) -> jax.Array:
    """Zero-valued term whose gradient is ghat (w.r.t. the logits) chained to theta.

    For a probs-parameterised Categorical the probabilities are unnormalised parameters:
    the gradient reported is that of the multilinear extension sum_k p_jk E[f | z_j = k],
    as for fourier() and score_function(). It differs from the logit-chained gradient
    by E[f] along (1, ..., 1) per coordinate, added here with f_mean (the sample mean of
    f, an unbiased estimate of E[f]). With stop=False, ghat keeps its own dependencies
    (used to differentiate the estimator's gradient with respect to control variates).
    """
    out = _zero_valued(logits_of(base), ghat, stop)
    if isinstance(base, nd.CategoricalProbs):
        probs = jnp.broadcast_to(base.probs, ghat.shape)
        out = out + _zero_valued(probs, jnp.broadcast_to(f_mean, ghat.shape), stop)
    return out


def is_categorical(base) -> bool:
    return isinstance(base, (nd.CategoricalProbs, nd.CategoricalLogits))


def positive_number(owner: str, name: str, x) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not np.isfinite(x) \
            or x <= 0:
        raise ValueError(f"{owner}: {name} must be a positive finite number; got "
                         f"{name}={x!r}")
    return float(x)


def finite_number(owner: str, name: str, x) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not np.isfinite(x):
        raise ValueError(f"{owner}: {name} must be a finite number; got {name}={x!r}")
    return float(x)


def boolean(owner: str, name: str, x) -> bool:
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{owner}: {name} must be True or False; got {name}={x!r}")
    return bool(x)


def open_uniform(key, shape, dtype) -> jax.Array:
    """Uniform draws clipped to [eps, 1 - eps] so that their logs stay finite."""
    eps = jnp.finfo(dtype).eps
    return jnp.clip(jax.random.uniform(key, shape, dtype), eps, 1 - eps)
