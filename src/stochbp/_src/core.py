"""The one entry point: a scalar surrogate of E_{z ~ dist}[f(z)]."""
from __future__ import annotations

from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp
import numpyro.distributions as nd

from stochbp._src import checks
from stochbp._src.estimators.base import Estimator
from stochbp._src.families.base import family_of, unwrap


def _check_key(key) -> None:
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"expectation(): key must be a single PRNG key; got a key "
                             f"array of shape {key.shape} (use jax.vmap over keys)")
        return
    if dtype == jnp.uint32 and jnp.shape(key) == (2,):
        return
    raise TypeError("expectation(): key must be a JAX PRNG key (jax.random.key(0) or "
                    f"jax.random.PRNGKey(0)); got key={key!r}")


def _validate(f, dist, key, estimator, num_samples) -> None:
    if not isinstance(estimator, Estimator):
        raise TypeError("expectation(): estimator must be built by a stochbp factory such "
                        "as stochbp.fourier(), stochbp.pathwise() or "
                        f"stochbp.score_function(); got estimator={estimator!r}")
    checks.positive_int("expectation()", "num_samples", num_samples)
    if not isinstance(dist, nd.Distribution):
        raise TypeError("expectation(): dist must be a numpyro distribution; got "
                        f"dist={dist!r}")
    if not callable(f):
        raise TypeError(f"expectation(): f must be callable; got f={f!r}")
    _check_key(key)
    fam = family_of(dist)
    if fam is not None:
        fam.check(unwrap(dist))
    estimator.check(dist)
    sample = jax.eval_shape(lambda k: dist.sample(k), key)
    out = jax.eval_shape(f, sample)
    if not (hasattr(out, "shape") and out.shape == ()):
        shape = getattr(out, "shape", type(out).__name__)
        raise TypeError("expectation(): f must map one sample (shape "
                        f"{tuple(sample.shape)}) to a scalar; it returned {shape}")


def expectation(f: Callable, dist: nd.Distribution, key, *, estimator: Estimator,
                num_samples: int = 1) -> jax.Array:
    """Monte Carlo surrogate of E_{z ~ dist}[f(z)] whose gradient is ``estimator``'s.

    Args:
      f: maps one sample, of shape ``dist.batch_shape + dist.event_shape``, to a scalar.
        Every element of the batch shape is an independent coordinate.
      dist: a numpyro distribution built from parameter arrays theta.
      key: a JAX PRNG key.
      estimator: e.g. ``stochbp.fourier(order=8)``, ``stochbp.pathwise()``,
        ``stochbp.score_function()``.
      num_samples: number of independent draws averaged.

    Returns:
      A scalar whose value is the mean of f over ``num_samples`` draws and whose
      ``jax.grad`` with respect to theta is the estimator's estimate of grad E[f].
      Gradients with respect to arrays that f closes over are the ordinary
      gradients of that mean at the drawn samples.

    Raises ValueError / TypeError naming the argument for invalid input, before any
    sampling. Parameter values are checked only when concrete (eagerly or under
    ``jax.grad``); under ``jax.jit`` or ``jax.vmap`` they cannot be read and invalid
    values produce NaN instead.
    """
    if isinstance(estimator, Estimator) and estimator.stateful:
        raise TypeError(f"expectation(): {estimator.name} keeps state; use "
                        "stochbp.expectation_with_state(f, dist, key, state, ...) with "
                        "state=estimator.init()")
    value, _ = expectation_with_state(f, dist, key, None, estimator=estimator,
                                      num_samples=num_samples)
    return value


def expectation_with_state(f: Callable, dist: nd.Distribution, key, state: Any, *,
                           estimator: Estimator, num_samples: int = 1
                           ) -> Tuple[jax.Array, Any]:
    """Like :func:`expectation` for stateful estimators; returns (surrogate, new_state).

    Use ``jax.value_and_grad(loss, has_aux=True)`` with the new state as the auxiliary
    output. ``state`` starts as ``estimator.init()``.
    """
    _validate(f, dist, key, estimator, num_samples)
    return estimator.surrogate(f, dist, key, int(num_samples), state)
