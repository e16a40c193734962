"""The entry points: a scalar surrogate of E_{z ~ dist}[f(z)], and control-variate
training for stateful estimators."""
from __future__ import annotations

from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp
import numpyro.distributions as nd

from stochbp._src.estimators.base import (EmptyState, Estimator, invalid_term,
                                          validate_call)


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
    ``jax.grad``); under ``jax.jit`` or ``jax.vmap`` they cannot be read, and a
    parameter outside its numpyro constraint makes the value and the gradient NaN
    (never a plausible finite number). Estimators that keep a state (moving-average baselines,
    ``rebar(tune=True)``, ``relax()``) need :func:`expectation_with_state`.
    """
    value, _ = expectation_with_state(f, dist, key, EmptyState(), estimator=estimator,
                                      num_samples=num_samples)
    return value


def expectation_with_state(f: Callable, dist: nd.Distribution, key, state: Any, *,
                           estimator: Estimator, num_samples: int = 1
                           ) -> Tuple[jax.Array, Any]:
    """Like :func:`expectation`, threading the estimator's state; returns
    (surrogate, new_state).

    ``state`` starts as ``estimator.init(f, dist, key)`` (``EmptyState()`` for
    stateless estimators). Use ``jax.value_and_grad(loss, has_aux=True)`` with the new
    state as the auxiliary output.
    """
    n = validate_call(f, dist, key, estimator, num_samples, state)
    value, new_state = estimator.surrogate(f, dist, key, n, state)
    poison = invalid_term(dist, estimator)
    return (value if poison is None else value + poison), new_state


def variance_gradient(f: Callable, make_dist: Callable, theta: Any, key, state: Any, *,
                      estimator: Estimator, num_samples: int = 1
                      ) -> Tuple[jax.Array, Any]:
    """(||g||^2, its gradient with respect to ``state``): how to train a control variate.

    g is the estimator's gradient estimate with respect to ``theta`` for the
    distribution ``make_dist(theta)``, drawn with ``key`` (pass the key given to
    :func:`expectation_with_state` to score the same draw). Because the mean of g does
    not depend on the state (the estimators are unbiased for every state), the
    returned gradient is an unbiased estimate of the gradient of the total variance of
    g, the RELAX objective. Apply it with any optimiser::

        est = stochbp.relax()
        state = est.init(f, make_dist(theta), jax.random.key(1))
        _, g_state = stochbp.variance_gradient(f, make_dist, theta, key, state,
                                               estimator=est)
        updates, opt_state = opt.update(g_state, opt_state, state)
        state = optax.apply_updates(state, updates)

    Pass ``make_dist=lambda l: nd.Bernoulli(logits=l)`` and ``theta=logits`` to
    minimise the variance with respect to the logits themselves. For estimators whose
    gradient does not depend on a trainable state the returned gradient is zero.
    """
    if not callable(make_dist):
        raise TypeError("variance_gradient(): make_dist must be callable(theta) -> "
                        f"distribution; got make_dist={make_dist!r}")
    n = validate_call(f, make_dist(theta), key, estimator, num_samples, state)

    def second_moment(st):
        g = jax.grad(lambda th: estimator.differentiable_surrogate(
            f, make_dist(th), key, n, st)[0])(theta)
        return sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(g))

    return jax.value_and_grad(second_moment)(state)
