"""The evidence lower bound for a location-scale q, in reparameterised form.

For q(z; mu, C) the law of z = mu + C eps with eps ~ phi parameter-free, a change of
variables turns the ELBO E_q[log g(z) - log q(z)] into (Aziz 2017, Eq. 6h)

    ELBO(mu, C) = E_phi[log g(mu + C eps)] + log |det C| + H[phi],

where only the first term needs Monte Carlo; log |det C| is analytic and the entropy
H[phi] of the standard density does not depend on the parameters at all. Its gradient
(Eq. 7c) is the sample mean of grad_z log g(z) dz/d(mu, C) plus grad log |det C|,
which is what autodiff of the estimate below computes.

Supported q (numpyro), with C and phi:

    Normal(loc, scale)                C = diag(scale), phi = N(0, I)
    MultivariateNormal(loc, L)        C = L (the Cholesky factor), phi = N(0, I)
    Laplace(loc, scale)               C = diag(scale), phi = Laplace(0, 1)^n

(``Independent`` wrappers accepted; every batch element is a coordinate.)
H[phi] = n/2 log(2 pi e) for the Gaussian, n (1 + log 2) for the Laplace, with n the
number of coordinates.

``entropy="monte_carlo"`` replaces log |det C| + H[phi] by the estimate
-(1/S) sum_s log q(z_s) at the same draws (the plain reparameterised ELBO estimator).
Both have the same expectation and unbiased gradients; the analytic form drops the
score-like term d log q / d theta, whose mean is zero, and usually has lower gradient
variance (measured in docs/mixtures.md and tests/test_elbo.py).
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpyro.distributions as nd

from stochbp._src import checks
from stochbp._src.registry import family_of, unwrap

ENTROPIES = ("analytic", "monte_carlo")
_OWNER = "location_scale_elbo()"


def _standard_draws(q, key, num_samples):
    """(z, log |det C|, H[phi]) for S reparameterised draws z = mu + C eps."""
    if isinstance(q, nd.MultivariateNormal):
        shape = (num_samples,) + q.batch_shape + q.event_shape
        eps = jax.random.normal(key, shape, dtype=jnp.result_type(q.loc, float))
        tril = jnp.tril(q.scale_tril)  # only the lower triangle is C (as in log_prob)
        z = q.loc + jnp.einsum("...ij,...j->...i", tril, eps)
        diag = jnp.diagonal(tril, axis1=-2, axis2=-1)
        log_det = jnp.sum(jnp.broadcast_to(jnp.log(diag), q.batch_shape + q.event_shape))
        entropy = 0.5 * math.log(2 * math.pi * math.e) * eps[0].size
        return z, log_det, entropy
    shape = (num_samples,) + q.batch_shape
    dtype = jnp.result_type(q.loc, q.scale, float)
    if isinstance(q, nd.Laplace):
        eps = jax.random.laplace(key, shape, dtype=dtype)
        per_coordinate = 1.0 + math.log(2.0)
    else:
        eps = jax.random.normal(key, shape, dtype=dtype)
        per_coordinate = 0.5 * math.log(2 * math.pi * math.e)
    z = q.loc + q.scale * eps
    log_det = jnp.sum(jnp.broadcast_to(jnp.log(q.scale), q.batch_shape))
    return z, log_det, per_coordinate * eps[0].size


def location_scale_elbo(log_joint: Callable, q: nd.Distribution, key, *,
                        num_samples: int = 1, entropy: str = "analytic") -> jax.Array:
    """Monte Carlo ELBO E_q[log_joint(z) - log q(z)] for a location-scale q (Eq. 6h).

    Args:
      log_joint: maps one z (shape ``q.batch_shape + q.event_shape``) to the scalar
        log g(z), e.g. an unnormalised log posterior.
      q: ``Normal`` (diagonal scale), ``MultivariateNormal`` (Cholesky scale) or
        ``Laplace``, optionally inside ``Independent``.
      key: PRNG key.
      num_samples: S, draws averaged in E_phi[log g(mu + C eps)].
      entropy: ``"analytic"`` (log |det C| + H[phi] in closed form) or
        ``"monte_carlo"`` (-(1/S) sum_s log q(z_s) at the same draws).

    Returns a scalar whose ``jax.grad`` with respect to q's parameters is the
    reparameterised ELBO gradient (Eq. 7c). Works under jit, vmap and grad.
    """
    if not callable(log_joint):
        raise TypeError(f"{_OWNER}: log_joint must be callable; got log_joint={log_joint!r}")
    if not isinstance(q, nd.Distribution):
        raise TypeError(f"{_OWNER}: q must be a numpyro distribution; got q={q!r}")
    base = unwrap(q)
    if not isinstance(base, (nd.Normal, nd.MultivariateNormal, nd.Laplace)):
        raise ValueError(f"{_OWNER}: q must be a location-scale Normal, "
                         "MultivariateNormal or Laplace; got q of type "
                         f"{type(base).__name__}")
    checks.positive_int(_OWNER, "num_samples", num_samples)
    if entropy not in ENTROPIES:
        raise ValueError(f"{_OWNER}: entropy must be 'analytic' or 'monte_carlo'; got "
                         f"entropy={entropy!r}")
    family_of(base).check(base)
    shape = tuple(base.batch_shape) + tuple(base.event_shape)
    try:
        out = jax.eval_shape(log_joint, jax.ShapeDtypeStruct(shape, jnp.result_type(float)))
    except Exception as err:  # noqa: BLE001 - report the shape it was given
        raise TypeError(f"{_OWNER}: log_joint failed on one sample of q, of shape {shape} "
                        f"(q's batch_shape + event_shape): {err}") from err
    if getattr(out, "shape", None) != ():
        raise TypeError(f"{_OWNER}: log_joint must map one sample (shape {shape}) to a "
                        f"scalar; it returned shape {getattr(out, 'shape', type(out))}")
    z, log_det, standard_entropy = _standard_draws(base, key, int(num_samples))
    expected_log_joint = jnp.mean(jax.vmap(log_joint)(z))
    if entropy == "analytic":
        return expected_log_joint + log_det + standard_entropy
    log_q = base.log_prob(z).reshape(num_samples, -1).sum(axis=1)
    return expected_log_joint - jnp.mean(log_q)
