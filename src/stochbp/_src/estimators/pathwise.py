"""Pathwise (reparameterisation) gradients.

z = T(eps; theta) with eps parameter-free, so grad E[f(z)] = E[grad_z f(z) dT/dtheta].
Normal, MultivariateNormal and Laplace use explicit location-scale maps; Gamma,
Exponential, Chi2, Beta and Dirichlet use the implicit gradient of the gamma sampler,
dz/dalpha = -(dF/dalpha) / p(z) (Figurnov et al. 2018), as provided by JAX and numpyro.
Any other numpyro distribution that declares a reparameterised sampler also works.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from stochbp._src.estimators.base import (Estimator, alternatives, register_estimator,
                                          unsupported)
from stochbp._src.registry import family_of, unwrap


@register_estimator
class Pathwise(Estimator):
    @property
    def name(self) -> str:
        return "pathwise"

    def check(self, dist):
        fam = family_of(dist)
        ok = fam.reparameterized if fam is not None else (
            getattr(unwrap(dist), "has_rsample", False)
            and not getattr(dist.support, "is_discrete", False))
        if not ok:
            raise unsupported("pathwise()", dist,
                              "it has no reparameterised (pathwise) sample; discrete "
                              "variables have none",
                              alternatives(dist) if fam is not None else
                              "Use stochbp.fourier() or stochbp.score_function().")

    def surrogate(self, f, dist, key, num_samples, state):
        base = unwrap(dist)
        fam = family_of(base)
        z = (fam.pathwise_sample(base, key, num_samples) if fam is not None
             else base.rsample(key, (num_samples,)))
        return jnp.mean(jax.vmap(f)(z)), state


def pathwise() -> Pathwise:
    """Reparameterised / implicit pathwise gradient (see module docstring)."""
    return Pathwise()
