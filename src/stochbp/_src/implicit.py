"""Implicit reparameterisation of univariate samples (Graves 2016, Eqs. 6, 9-10).

A sample x of a density f_theta with CDF F_theta is a fixed uniform pushed through the
inverse CDF, u = F_theta(x). Holding u fixed and differentiating F_theta(x(theta)) = u
gives Graves' Eq. 6: the sample moves by

    dx/dtheta = -(dF_theta/dtheta)(x) / f_theta(x)
              = -(1 / f_theta(x)) * integral_{t <= x} df_theta(t)/dtheta dt.

The primal x may come from any sampler (numpyro's own, here): the derivative depends on
x only, not on how it was drawn. ``integral="analytic"`` differentiates the CDF itself
(one forward-mode pass through ``dist.cdf``), which needs a CDF that JAX can
differentiate in the parameters (Normal, Laplace, Logistic, Gumbel, Cauchy, Gamma,
Exponential, Weibull, 1-D MixtureSameFamily, ...; not Beta or StudentT, whose
``betainc`` has no parameter derivative in JAX).

``integral="sampling"`` is Graves' Eqs. 9-10, for CDFs that cannot be differentiated:
the integral is F(x) times the mean score of the density truncated to t <= x,

    integral_{t <= x} df/dtheta dt = F(x) E_{t ~ f(t) 1[t <= x] / F(x)}[d log f(t)/dtheta],

estimated with M draws t_m = F^{-1}(v_m F(x)), v_m uniform (exact truncated draws) when
the distribution has a usable ``icdf``. Without one it falls back to M plain draws
t_m ~ f weighted by the indicator 1[t_m <= x] (rejection sampling with a fixed budget,
also unbiased; only about M F(x) of the draws count). Either way the estimate is
unbiased given x, so the gradient stays unbiased, but it costs M extra draws and M score
evaluations per sample, and adds variance that shrinks like 1/M (like 1/(M F(x)) for
the fallback, which is poor in the far left tail, as Graves notes).
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpyro.distributions as nd
from jax import lax

from stochbp._src import checks

INTEGRALS = ("analytic", "sampling")


def _has_icdf(dist: nd.Distribution, q) -> bool:
    """Whether ``dist.icdf`` exists and traces (numpyro's Gamma needs TFP for it)."""
    if type(dist).icdf is nd.Distribution.icdf:
        return False
    try:
        jax.eval_shape(dist.icdf, q)
    except (NotImplementedError, ImportError):
        return False
    return True


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _implicit(integral: str, num_integral_samples: int, dist, x, key):
    del integral, num_integral_samples, dist, key
    return x


@_implicit.defjvp
def _implicit_jvp(integral, num_integral_samples, primals, tangents):
    dist, x, key = primals
    ddist = tangents[0]
    density = jnp.exp(dist.log_prob(x))
    if integral == "analytic":  # Eq. 6 with the CDF differentiated exactly
        _, dcdf = jax.jvp(lambda d: d.cdf(x), (dist,), (ddist,))
        return x, -dcdf / density
    # Eqs. 9-10: F(x) times the mean score of the density truncated at x.
    m = num_integral_samples
    cdf = dist.cdf(x)
    k_trunc, k_plain = jax.random.split(key)
    v = jax.random.uniform(k_trunc, (m,) + jnp.shape(x), dtype=x.dtype)
    tiny = jnp.finfo(x.dtype).tiny
    if _has_icdf(dist, v):
        t = lax.stop_gradient(dist.icdf(jnp.clip(v * cdf, tiny, 1.0)))
        weight = jnp.broadcast_to(cdf, t.shape)
    else:
        batch_ndim = len(dist.batch_shape)
        sample_shape = jnp.shape(x)[:jnp.ndim(x) - batch_ndim]
        t = lax.stop_gradient(dist.sample(k_plain, (m,) + sample_shape))
        weight = (t <= x).astype(x.dtype)
    _, dscore = jax.jvp(lambda d: d.log_prob(t), (dist,), (ddist,))
    dintegral = jnp.mean(weight * dscore, axis=0)
    return x, -dintegral / density


def _check_univariate(owner: str, dist) -> None:
    if not isinstance(dist, nd.Distribution):
        raise TypeError(f"{owner}: dist must be a numpyro distribution; got dist={dist!r}")
    if dist.event_shape != ():
        raise ValueError(f"{owner}: dist must be univariate (event_shape ()); got "
                         f"{type(dist).__name__} with event_shape {dist.event_shape}")
    if getattr(dist.support, "is_discrete", False):
        raise ValueError(f"{owner}: dist must be continuous; got the discrete "
                         f"{type(dist).__name__}")
    if type(dist).cdf is nd.Distribution.cdf:
        raise ValueError(f"{owner}: dist must have a CDF; {type(dist).__name__} has no "
                         "cdf method in numpyro")


def implicit_rsample(dist: nd.Distribution, key, sample_shape: tuple = (), *,
                     integral: str = "analytic", num_integral_samples: int = 16,
                     integral_key: Optional[jax.Array] = None) -> jax.Array:
    """Draw from a univariate ``dist`` with implicit pathwise gradients (Graves Eq. 6).

    The values are ``dist.sample(key, sample_shape)``; their derivative with respect to
    the distribution's parameters is dx/dtheta = -(dF/dtheta)(x) / f(x) (module
    docstring). Use it like a reparameterised sample: ``jnp.mean(jax.vmap(f)(x))``.

    Args:
      dist: a continuous numpyro distribution with ``event_shape ()`` and a ``cdf``.
      key: PRNG key for the draws.
      sample_shape: leading sample dimensions.
      integral: ``"analytic"`` (differentiate the CDF; exact) or ``"sampling"``
        (Graves' Eqs. 9-10 estimate of the integral, unbiased; for CDFs that JAX cannot
        differentiate; costs ``num_integral_samples`` extra draws and score
        evaluations per sample).
      num_integral_samples: M, draws per sample for ``integral="sampling"``.
      integral_key: key for those draws (default: derived from ``key``).
    """
    owner = "implicit_rsample()"
    _check_univariate(owner, dist)
    sample_shape = checks.sample_shape(owner, sample_shape)
    if integral not in INTEGRALS:
        raise ValueError(f"{owner}: integral must be 'analytic' or 'sampling'; got "
                         f"integral={integral!r}")
    num_integral_samples = checks.positive_int(owner, "num_integral_samples",
                                               num_integral_samples)
    k_sample, k_integral = jax.random.split(key)
    if integral_key is not None:
        k_integral = integral_key
    x = lax.stop_gradient(dist.sample(k_sample, sample_shape))
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{owner}: dist must be continuous; its samples have dtype "
                         f"{x.dtype}")
    return _implicit(integral, int(num_integral_samples), dist, x, k_integral)
