"""The generalized reparameterization gradient (Ruiz, Titsias & Blei, 2016) for gamma.

GRG writes z = T(eps; theta) with a standardisation eps = T^{-1}(z; theta) whose law
still depends (weakly) on theta, and splits the gradient into a pathwise part and a
score-function correction on eps:
    grad E[f] = E[grad_z f(z) dT/dtheta] + E[f(z) grad_theta log q_eps(eps; theta)],
where log q_eps(eps; theta) = log q(T(eps; theta); theta) + log|dT/deps|.
For Gamma(shape k, scale mu) the standardisation matches the first two moments of log z:
    T(eps; k, mu) = mu exp(eps sqrt(psi1(k)) + psi(k)),
with psi the digamma and psi1 the trigamma function. Exponential and Chi2 are the
gamma cases k = 1 and (k, mu) = (df/2, 2).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import digamma, polygamma
from jax.scipy.stats import gamma as gamma_stats

from stochbp._src.estimators.base import Estimator, draw, register_estimator, unsupported
from stochbp._src.registry import family_of, unwrap


def _transform(eps, k, mu):
    return mu * jnp.exp(eps * jnp.sqrt(polygamma(1, k)) + digamma(k))


def _log_density_eps(eps, k, mu):
    """log q_eps(eps; k, mu) = log Gamma(T(eps)) + log T(eps) + log sqrt(psi1(k))."""
    z = _transform(eps, k, mu)
    return gamma_stats.logpdf(z, k, scale=mu) + jnp.log(z) + 0.5 * jnp.log(polygamma(1, k))


@register_estimator
class GRG(Estimator):
    @property
    def name(self) -> str:
        return "grg"

    def check(self, dist):
        fam = family_of(dist)
        if fam is None or not fam.is_gamma():
            raise unsupported("grg()", dist, "stochbp implements the generalized "
                              "reparameterization only for the gamma family",
                              "Supported: Gamma, Exponential, Chi2 (families that "
                              "define gamma_shape_scale).")

    def surrogate(self, f, dist, key, num_samples, state):
        base = unwrap(dist)
        k, mu = family_of(base).gamma_shape_scale(base)
        k = jnp.broadcast_to(k, base.batch_shape)
        mu = jnp.broadcast_to(mu, base.batch_shape)
        z = draw(base, key, num_samples)
        k0, mu0 = lax.stop_gradient(k), lax.stop_gradient(mu)
        eps = lax.stop_gradient((jnp.log(z) - digamma(k0) - jnp.log(mu0))
                                / jnp.sqrt(polygamma(1, k0)))
        z_theta = _transform(eps, k, mu)
        # Value exactly f(z); gradient through T(eps; theta) (the g_rep term).
        z_rep = z + (z_theta - lax.stop_gradient(z_theta))
        fz = jax.vmap(f)(z_rep)
        logq = _log_density_eps(eps, k, mu).reshape(num_samples, -1).sum(axis=1)
        correction = jnp.mean(lax.stop_gradient(fz) * (logq - lax.stop_gradient(logq)))
        return jnp.mean(fz) + correction, state


def grg() -> GRG:
    """Generalized reparameterization gradient for Gamma, Exponential and Chi2."""
    return GRG()
