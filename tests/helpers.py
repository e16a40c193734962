"""Shared helpers: closed-form expectations and the unbiasedness assertion."""
import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

import stochbp


# The draws of a statistical test go through one vmapped batch (batch_size=None). The
# library's default, lax.map in batches of 256, traces and compiles the estimator twice
# when 256 does not divide num_draws (once for the batches, once for the remainder),
# which doubled the compile time that dominates these tests; the problems are tiny, so
# all draws at once fit in memory.
DRAW_BATCH = None


def assert_unbiased(f, make_dist, theta, exact, estimator, key, *, num_samples=4,
                    num_draws=2000, num_sigmas=4.0, rtol=1e-6):
    """Mean of num_draws gradient estimates within num_sigmas standard errors of the
    gradient of the closed form `exact(theta)`."""
    check = stochbp.diagnostics.check_unbiased(
        f, make_dist, theta, key, estimator=estimator, reference=exact,
        num_samples=num_samples, num_draws=num_draws, num_sigmas=num_sigmas, rtol=rtol,
        batch_size=DRAW_BATCH)
    assert check.passed, check.message
    return check


def beta_truncated_gradient(alpha, beta, order):
    """Exact value of the order-N truncated Eq. 21 for f(z) = z.

    With s = alpha + beta, z = zeta1 / S and S ~ Gamma(s) independent of z:
    E[d^n z / d zeta1^n] = (-1)^(n+1) n! (beta / s) Gamma(s - n) / Gamma(s),
    E[d^n z / d zeta2^n] = (-1)^n n! (alpha / s) Gamma(s - n) / Gamma(s).
    Returns the truncated gradient with respect to (alpha, beta).
    """
    s = alpha + beta
    ga, gb = 0.0, 0.0
    for n in range(1, order + 1):
        ratio = jnp.exp(gammaln(s - n) - gammaln(s))
        fact = jnp.exp(gammaln(n + 1.0))
        ga += (1.0 / n) * (-1.0) ** (n + 1) * fact * (beta / s) * ratio
        gb += (1.0 / n) * (-1.0) ** n * fact * (alpha / s) * ratio
    return ga, gb
