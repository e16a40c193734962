"""Fourier stochastic backpropagation (Echraibi et al., 2020).

Theorem 1 (Eqs. 3-4): if grad_theta log phi_theta(w) = sum_n a_n(theta) (i w)^n, then
grad_theta E[f(z)] = sum_n a_n(theta) E[d^n f(z)]. The a_n are the gradients of the
cumulant-generating-function coefficients c_n = kappa_n / n!, so one surrogate serves
every series rule; the families supply their c_n (Eqs. 15, 19-22), discrete families
their Theorem 2 rules (Eqs. 17-18), and Eq. 24's truncation is the ``order`` argument.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpyro.distributions as nd
from jax import lax

from stochbp._src import checks, series, smoothness
from stochbp._src.estimators.base import (Estimator, alternatives, draw, float_dtype,
                                          register_estimator, require_family, unsupported)
from stochbp._src.families.base import require_order
from stochbp._src.registry import family_of, unwrap


@register_estimator
class Fourier(Estimator):
    order: Optional[int] = None
    cgf: Optional[Callable] = None
    smooth: str = "check"

    @property
    def name(self) -> str:
        args = ([] if self.order is None else [f"order={self.order}"]) + (
            [] if self.smooth == "check" else [f"smooth={self.smooth!r}"])
        return "fourier" if not args else f"fourier({', '.join(args)})"

    def require_smooth(self, f, dist, key):
        """Refuse an f with a jump in a derivative below the rule's order (Theorem 1
        needs distributional derivatives; ``stochbp._src.smoothness``)."""
        base = unwrap(dist)
        if self.smooth != "check":
            return
        order = self.order if self.cgf is not None else \
            family_of(base).fourier_derivative_order(self.order)
        if order < 2:
            return
        example = jax.eval_shape(lambda k: dist.sample(k), key)
        smoothness.require_smooth(
            self.name, f, example, order,
            fix_kink="Use stochbp.pathwise() (unbiased for a continuous f) or "
                     "stochbp.score_function(), or a smooth f (e.g. softplus for relu).",
            fix_jump="Use stochbp.score_function() (pathwise() is biased for an f that "
                     "jumps too).")

    def check(self, dist):
        if self.cgf is not None:
            base = unwrap(dist)
            if base.event_shape != ():
                raise unsupported("fourier(cgf=...)", dist,
                                  "a user cumulant needs independent scalar coordinates "
                                  f"(event_shape ()), got event_shape {base.event_shape}",
                                  "Wrap only univariate distributions.")
            if self.order is None:
                raise ValueError("fourier(cgf=...): order is required with a user cumulant "
                                 "generating function; pass e.g. fourier(order=8, cgf=...)")
            checks.order_fits("fourier()", self.order, float_dtype(base))
            return
        fam = require_family("fourier()", dist)
        if not fam.has_fourier:
            raise unsupported("fourier()", dist, f"stochbp has no Fourier rule for "
                              f"{fam.name}", alternatives(dist))
        if fam.needs_order():
            require_order(fam, self.order)
            checks.order_fits("fourier()", self.order, float_dtype(unwrap(dist)))

    def surrogate(self, f, dist, key, num_samples, state):
        self.require_smooth(f, dist, key)
        base = unwrap(dist)
        if self.cgf is None:
            return family_of(base).fourier(f, base, key, num_samples, self.order), state
        z = draw(base, key, num_samples)
        t0 = jnp.zeros((), z.dtype if checks.is_float_dtype(z) else jnp.result_type(float))
        cgf = lambda t: jnp.broadcast_to(self.cgf(base, t), base.batch_shape)  # noqa: E731
        coeffs = series.coefficients_from_cgf(cgf, t0, self.order)
        return series.series_surrogate(f, z, coeffs), state


def fourier(order: Optional[int] = None, *, cgf: Optional[Callable] = None,
            smooth: str = "check") -> Fourier:
    """Fourier stochastic backpropagation, dispatched on the distribution family.

    Args:
      order: highest derivative of f the rule may use (the truncation N of Eq. 24).
        Required for the series families (Laplace, Gamma, Exponential, Chi2, Beta,
        Dirichlet). For Normal and MultivariateNormal the rule is exact at order 2 and a
        smaller order drops the scale term; Delta, Bernoulli and Categorical ignore it.
        For Laplace only even orders add terms: order = 2N keeps N terms of Eq. 19.
      cgf: optional ``cgf(dist, t) -> K`` giving each coordinate's cumulant generating
        function log E[exp(t z_j)] (shape: dist.batch_shape) for a distribution of
        independent scalar coordinates that stochbp has no rule for (Theorem 1). Its
        Taylor coefficients are found by Taylor mode, so it must be written in JAX
        (lgamma and digamma are fine).
      smooth: ``"check"`` (default) or ``"assume"``. Theorem 1 holds with
        distributional derivatives: where f or one of its derivatives below the rule's
        order jumps (relu, abs, clip, max(z, c) at order 2; floor, sign,
        where(z > 0, 1, 0) at any order), the classical derivatives that Taylor mode
        computes miss a Dirac delta and the rule is biased. With ``"check"``, every rule
        that uses derivatives of order >= 2 first reads f's jaxpr and raises a
        ValueError naming the primitive and its place when it cannot prove f smooth
        enough (``stochbp._src.smoothness``; static, so it works under jit).
        ``"assume"`` skips the proof.

    The rule's value checks run only on concrete parameters (not under jit/vmap).
    """
    if order is not None:
        order = checks.positive_int("fourier()", "order", order)
    checks.callable_or_none("fourier()", "cgf", cgf, "(dist, t)")
    smooth = checks.smooth_option("fourier()", smooth)
    return Fourier(order=order, cgf=cgf, smooth=smooth)


@register_estimator(data_fields=("epsilon",))
class FourierExponential(Estimator):
    epsilon: Any = None

    @property
    def name(self) -> str:
        return "fourier_exponential"

    def check(self, dist):
        fam = require_family("fourier_exponential()", dist)
        base = unwrap(dist)
        if not fam.has_cgf() or base.event_shape != () or fam.discrete:
            raise unsupported("fourier_exponential()", dist,
                              "Eq. 23 needs continuous independent coordinates with a "
                              "closed-form cumulant generating function",
                              "Supported: Normal, Laplace, Gamma, Exponential, Chi2, Delta. "
                              "Use fourier(order=...) otherwise.")
        eps = jnp.broadcast_to(jnp.asarray(self.epsilon), base.batch_shape)
        checks.finite("fourier_exponential()", "epsilon", eps)
        fam.cgf_domain_check(base, eps)

    def valid(self, dist):
        base = unwrap(dist)
        eps = jnp.broadcast_to(jnp.asarray(self.epsilon), base.batch_shape)
        return jnp.all(family_of(base).cgf_in_domain(base, eps))

    def surrogate(self, f, dist, key, num_samples, state):
        base = unwrap(dist)
        fam = family_of(base)
        z = draw(base, key, num_samples)
        value = jnp.mean(jax.vmap(f)(z))
        grads = jnp.mean(jax.vmap(jax.grad(f))(z), axis=0)
        eps = jnp.broadcast_to(jnp.asarray(self.epsilon, z.dtype), base.batch_shape)
        zero = eps == 0
        safe = jnp.where(zero, jnp.ones_like(eps), eps)
        _, slope0 = jax.jvp(lambda t: fam.cgf(base, t), (jnp.zeros_like(eps),),
                            (jnp.ones_like(eps),))
        ratio = jnp.where(zero, slope0, fam.cgf(base, safe) / safe)
        return value + series.zero_valued(ratio, grads), state


def fourier_exponential(epsilon) -> FourierExponential:
    """The exact rule of Eq. 23 for exponential f, needing only first derivatives.

    Declares that along each coordinate j, f satisfies d^2 f / dz_j^2 = eps_j df/dz_j:
    true for f(z) = c exp(eps^T z) and for sums such as sum_j exp(eps_j z_j) (toy problem
    2 of Section 6.1). Then d^n f / dz_j^n = eps_j^(n-1) df/dz_j and Theorem 1's series
    sums to
        grad E[f] = sum_j grad_theta [K_j(eps_j) / eps_j] E[df/dz_j],
    with K_j coordinate j's cumulant generating function; for f = exp(eps^T z) this is
    Eq. 23, grad log phi(eps / i) E[f]. If f does not have this form the result is wrong:
    stochbp cannot verify the declaration.

    Args:
      epsilon: scalar or array broadcastable to the distribution's batch shape; must lie
        in the domain of the CGF (|eps| < 1/b for Laplace, eps < rate for Gamma).
    """
    return FourierExponential(epsilon=epsilon)
