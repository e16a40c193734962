"""The delta-method control variate (Paisley, Blei & Jordan 2012; Miller et al. 2017).

A second-order Taylor expansion of f around the mean m = sg(E[z]) of a distribution of
independent coordinates,

    f~(z) = f(m) + g^T (z - m) + 1/2 sum_j h_j (z_j - m_j)^2,
    g = grad f(m),  h_j = d^2 f / dz_j^2 (m),

has a closed-form expectation, E_theta f~ = f(m) + g^T (mu - m) + 1/2 sum_j h_j
(v_j + (mu_j - m_j)^2), with mu = E_theta[z] and v = Var_theta[z] (the family's mean and
variance). Any unbiased estimator of grad E[f - beta f~] plus the exact
beta grad E_theta f~ is an unbiased estimator of grad E[f]; when f is close to its
expansion the first term has little variance. ``delta_method(inner, coefficient=beta)``
wraps ``inner`` (score_function, measure_valued, ...) this way. The surrogate's value is
mean(f - beta f~) + beta E f~: an unbiased control-variate estimate of E[f] rather than
the plain sample mean of f.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from stochbp._src import checks
from stochbp._src.estimators.base import (Estimator, register_estimator, require_family,
                                          unsupported)
from stochbp._src.registry import unwrap


def _expansion(f, m):
    """f(m), grad f(m) and the diagonal of the Hessian at m (Hessian-vector products)."""
    value, grad = jax.value_and_grad(f)(m)
    flat = m.reshape(-1)
    f_flat = lambda x: f(x.reshape(m.shape))  # noqa: E731
    basis = jnp.eye(flat.shape[0], dtype=flat.dtype)
    hvp = jax.vmap(lambda e: jax.jvp(jax.grad(f_flat), (flat,), (e,))[1])(basis)
    return value, grad, jnp.diagonal(hvp).reshape(m.shape)


@register_estimator(data_fields=("coefficient",))
class DeltaMethod(Estimator):
    inner: Any = None
    coefficient: Any = 1.0

    @property
    def name(self) -> str:
        return f"delta_method({self.inner.name})"

    def init(self, f, dist, key):
        return self.inner.init(f, dist, key)

    def check_state(self, state):
        self.inner.check_state(state)

    def check(self, dist):
        fam = require_family("delta_method()", dist)
        base = unwrap(dist)
        if fam.discrete or base.event_shape != ():
            raise unsupported("delta_method()", dist, "the expansion needs continuous "
                              "independent coordinates", "Use it with Normal, Laplace, "
                              "Gamma, Beta, ... (event_shape ()).")
        self.inner.check(dist)

    def surrogate(self, f, dist, key, num_samples, state):
        base = unwrap(dist)
        mu = jnp.broadcast_to(base.mean, base.batch_shape)
        var = jnp.broadcast_to(base.variance, base.batch_shape)
        m = lax.stop_gradient(mu)
        f_m, g, h = _expansion(f, m)
        beta = self.coefficient

        def f_tilde(z):
            dz = z - m
            return f_m + jnp.sum(g * dz) + 0.5 * jnp.sum(h * dz ** 2)

        expected = f_m + jnp.sum(g * (mu - m)) + 0.5 * jnp.sum(h * (var + (mu - m) ** 2))
        residual = lambda z: f(z) - beta * f_tilde(z)  # noqa: E731
        value, state = self.inner.surrogate(residual, dist, key, num_samples, state)
        return value + beta * expected, state


def delta_method(estimator: Estimator, coefficient=1.0) -> DeltaMethod:
    """Wrap ``estimator`` with the delta-method control variate (module docstring).

    Args:
      estimator: the estimator of the residual's gradient, e.g. ``score_function()`` or
        ``measure_valued()`` (with ``pathwise()`` or ``fourier()`` the control variate
        cancels exactly and only costs time).
      coefficient: beta, a number or array (traced under jit); 1 uses the full
        expansion, 0 is the plain estimator.
    """
    if not isinstance(estimator, Estimator):
        raise TypeError("delta_method(): estimator must be a stochbp estimator; got "
                        f"estimator={estimator!r}")
    if not hasattr(coefficient, "dtype"):
        coefficient = checks.finite_number("delta_method()", "coefficient", coefficient)
    return DeltaMethod(inner=estimator, coefficient=coefficient)
