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

``coefficient="estimated"`` chooses beta from the draws, separately for every element
of every parameter. With S draws, let A_s be the inner estimator's gradient estimate of
E[f] from draw s alone, B_s its estimate of grad E[f~] from the same draw (common
random numbers, so A_s and B_s are correlated) and b = grad E f~ (exact). The estimate
is

    g = (1/S) sum_s [A_s - beta_(-s) (B_s - b)],
    beta_(-s) = Cov_(-s)(A, B) / Var_(-s)(B),

the variance-minimising coefficient Cov(A, B) / Var(B) computed from the other S - 1
draws only (leave one out). Why this stays unbiased: draw s is independent of the
others, so beta_(-s) is independent of B_s, and E[beta_(-s) (B_s - b)] =
E[beta_(-s)] E[B_s - b] = 0 because B_s is unbiased for b. (A coefficient fitted on
all S draws, including draw s, would correlate with B_s and bias g.) The same is done
for the value with the draws' estimates of E[f] and E[f~]. It needs S >= 3 (a
covariance from at least two other draws) and runs the inner estimator one draw at a
time, so inner estimators that pool draws (a leave-one-out baseline) or keep a state
(a moving average) are refused; the gradient is taken inside the surrogate with
respect to the distribution's parameters (its pytree leaves) and then chained to
whatever they were computed from.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from stochbp._src import checks, series
from stochbp._src.estimators.base import (EmptyState, Estimator, register_estimator,
                                          require_family, unsupported)
from stochbp._src.registry import unwrap


def _expansion(f, m):
    """f(m), grad f(m) and the diagonal of the Hessian at m (Hessian-vector products)."""
    value, grad = jax.value_and_grad(f)(m)
    flat = m.reshape(-1)
    f_flat = lambda x: f(x.reshape(m.shape))  # noqa: E731
    basis = jnp.eye(flat.shape[0], dtype=flat.dtype)
    hvp = jax.vmap(lambda e: jax.jvp(jax.grad(f_flat), (flat,), (e,))[1])(basis)
    return value, grad, jnp.diagonal(hvp).reshape(m.shape)


ESTIMATED = "estimated"


def _leave_one_out_coefficient(a, b, b_mean):
    """beta_(-s) = Cov_(-s)(a, b) / Var_(-s)(b) along axis 0 (S draws), elementwise,
    from the draws other than s; ``b_mean`` is E[b] (exact). 0 where the other draws'
    b do not vary beyond rounding."""
    n = a.shape[0] - 1
    a = a - jnp.mean(a, axis=0)  # Cov_(-s) does not depend on a shift of a; this keeps
    b = b - b_mean               # the differences of sums below well conditioned
    sa, sb = jnp.sum(a, 0) - a, jnp.sum(b, 0) - b
    sab, sbb = jnp.sum(a * b, 0) - a * b, jnp.sum(b * b, 0) - b * b
    cov, var = sab - sa * sb / n, sbb - sb * sb / n
    ok = var > 100 * jnp.finfo(b.dtype).eps * sbb  # the threshold uses draws t != s only
    return jnp.where(ok, cov / jnp.where(ok, var, 1.0), 0.0)


@register_estimator(data_fields=("coefficient",))
class DeltaMethod(Estimator):
    inner: Any = None
    coefficient: Any = 1.0
    estimated: bool = False

    @property
    def name(self) -> str:
        if self.estimated:
            return f"delta_method({self.inner.name}, coefficient='estimated')"
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
                              "Gamma, Weibull, Beta, ... (event_shape ()).")
        self.inner.check(dist)
        if self.estimated:
            try:
                self.inner.check_state(EmptyState())
                pools = getattr(self.inner, "baseline", None) == "leave_one_out"
            except TypeError:
                pools = True
            if pools:
                raise ValueError(
                    "delta_method(coefficient='estimated') runs the inner estimator one "
                    "draw at a time, so it cannot pool draws or keep a state; got "
                    f"estimator={self.inner.name}. Use it without a baseline (the "
                    "control variate plays that role) or with a fixed coefficient.")

    def min_samples(self, dist):
        """Three draws when the coefficient is estimated (each draw's from the two
        others), else what the inner estimator needs."""
        return 3 if self.estimated else self.inner.min_samples(dist)

    def surrogate(self, f, dist, key, num_samples, state):
        base = unwrap(dist)
        mu = jnp.broadcast_to(base.mean, base.batch_shape)
        var = jnp.broadcast_to(base.variance, base.batch_shape)
        m = lax.stop_gradient(mu)
        f_m, g, h = _expansion(f, m)

        def f_tilde(z):
            dz = z - m
            return f_m + jnp.sum(g * dz) + 0.5 * jnp.sum(h * dz ** 2)

        expected = f_m + jnp.sum(g * (mu - m)) + 0.5 * jnp.sum(h * (var + (mu - m) ** 2))
        if self.estimated:
            def expected_of(d):  # E_theta f~ as a function of the distribution
                d = unwrap(d)
                mu_d = jnp.broadcast_to(d.mean, d.batch_shape)
                var_d = jnp.broadcast_to(d.variance, d.batch_shape)
                return f_m + jnp.sum(g * (mu_d - m)) + 0.5 * jnp.sum(
                    h * (var_d + (mu_d - m) ** 2))
            return self._estimated(f, f_tilde, expected_of, dist, key, num_samples,
                                   state)
        beta = self.coefficient
        residual = lambda z: f(z) - beta * f_tilde(z)  # noqa: E731
        value, state = self.inner.surrogate(residual, dist, key, num_samples, state)
        return value + beta * expected, state

    def _estimated(self, f, f_tilde, expected_of, dist, key, num_samples, state):
        if num_samples < 3:
            raise ValueError("delta_method(coefficient='estimated') needs num_samples >= 3 "
                             "(each draw's coefficient is fitted on the other draws); got "
                             f"num_samples={num_samples}")
        leaves, treedef = jax.tree_util.tree_flatten(dist)
        is_float = [checks.is_float_dtype(jnp.asarray(x)) for x in leaves]
        outer = [jnp.asarray(x) for x, ok in zip(leaves, is_float) if ok]
        params = [lax.stop_gradient(x) for x in outer]

        def rebuild(ps):
            it = iter(ps)
            return jax.tree_util.tree_unflatten(
                treedef, [next(it) if ok else x for x, ok in zip(leaves, is_float)])

        def one_draw(fn, ps, k):
            return self.inner.surrogate(fn, rebuild(ps), k, 1, state)[0]

        def per_draw(k):  # value and gradient of both estimates from the same draw
            va, ga = jax.value_and_grad(one_draw, argnums=1)(f, params, k)
            vb, gb = jax.value_and_grad(one_draw, argnums=1)(f_tilde, params, k)
            return va, ga, vb, gb

        va, ga, vb, gb = jax.vmap(per_draw)(jax.random.split(key, num_samples))
        exact, exact_grad = jax.value_and_grad(lambda ps: expected_of(rebuild(ps)))(params)
        out = jnp.mean(va) - lax.stop_gradient(jnp.mean(
            _leave_one_out_coefficient(va, vb, exact) * (vb - exact)))
        for theta, a, b, b_exact in zip(outer, ga, gb, exact_grad):
            beta = _leave_one_out_coefficient(a, b, b_exact)
            out = out + series.zero_valued(theta, jnp.mean(a - beta * (b - b_exact), 0))
        return out, state

def delta_method(estimator: Estimator, coefficient=1.0) -> DeltaMethod:
    """Wrap ``estimator`` with the delta-method control variate (module docstring).

    Args:
      estimator: the estimator of the residual's gradient, e.g. ``score_function()`` or
        ``measure_valued()`` (with ``pathwise()`` or ``fourier()`` the control variate
        cancels exactly and only costs time).
      coefficient: beta, a number or array (traced under jit); 1 uses the full
        expansion, 0 is the plain estimator. ``"estimated"``: a leave-one-out estimate
        of the variance-minimising beta for every element of every parameter (needs
        num_samples >= 3; unbiased, see the module docstring).
    """
    if not isinstance(estimator, Estimator):
        raise TypeError("delta_method(): estimator must be a stochbp estimator; got "
                        f"estimator={estimator!r}")
    if isinstance(coefficient, str):
        if coefficient != ESTIMATED:
            raise ValueError("delta_method(): coefficient must be a number, an array or "
                             f"'estimated'; got coefficient={coefficient!r}")
        return DeltaMethod(inner=estimator, coefficient=None, estimated=True)
    if not hasattr(coefficient, "dtype"):
        coefficient = checks.finite_number("delta_method()", "coefficient", coefficient)
    return DeltaMethod(inner=estimator, coefficient=coefficient)
