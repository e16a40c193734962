"""Measure-valued (weak-derivative) gradients (Pflug 1989; Heidergott & Vazquez-Abad).

If a coordinate's density has the weak derivative d p(x; theta_j) / d theta_j =
c_j (p+_j(x) - p-_j(x)), with p+- probability densities and c_j >= 0, then

    d/d theta_j E[f(z)] = c_j (E[f(z_-j, x+_j)] - E[f(z_-j, x-_j)]),

the other coordinates z_-j drawn from their own law. Each sample costs two evaluations
of f per coordinate and parameter, done as one vmapped batch; f need not be
differentiable, and z may be discrete. The family supplies the decompositions
(``Family.weak_derivatives``): Normal (mean and scale), Gamma / Exponential / Chi2
(rate), Poisson (rate), Weibull (scale). Coupling the two parts (shared noise) lowers
the variance without bias.

A parameter with no known decomposition (the gamma and Weibull shapes; the family
lists it in ``Family.weak_derivative_scores``) gets the score-function estimate at the
same draws, E[(f(z) - b) d log p(z_j) / d theta_j], with b the mean of f over the other
draws (leave-one-out, so b is independent of z and the estimate stays unbiased) when
num_samples >= 2. Unbiased for every parameter.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from stochbp._src import checks, series, taylor
from stochbp._src.estimators.base import (Estimator, draw, register_estimator,
                                          require_family, unsupported)
from stochbp._src.registry import family_of, registered_families, unwrap


def _substituted(f, z, values):
    """f(z with coordinate j set to values[j]) for every coordinate j of one sample.

    The m substituted points are built per chunk of coordinates
    (``taylor.map_coordinates``), so memory grows as m times the chunk, not as m^2."""
    shape = z.shape
    flat, new = z.reshape(-1), values.reshape(-1)
    m = flat.shape[0]
    index = jnp.arange(m)

    def one(j):
        return f(jnp.where(index == j, new[j], flat).reshape(shape))

    return taylor.map_coordinates(one, m, m).reshape(shape)


@register_estimator
class MeasureValued(Estimator):
    coupled: bool = True

    @property
    def name(self) -> str:
        return f"measure_valued(coupled={self.coupled})"

    def check(self, dist):
        fam = require_family("measure_valued()", dist)
        if not fam.has_weak_derivatives() or unwrap(dist).event_shape != ():
            names = ", ".join(f.name for f in registered_families()
                              if f.has_weak_derivatives())
            raise unsupported("measure_valued()", dist,
                              "stochbp has no weak-derivative decomposition for it",
                              f"Supported: {names}. Use stochbp.fourier(), "
                              "stochbp.pathwise() or stochbp.score_function().")

    def surrogate(self, f, dist, key, num_samples, state):
        base = unwrap(dist)
        fam = family_of(base)
        k_base, k_parts = jax.random.split(key)
        z = draw(base, k_base, num_samples)
        fz = jax.vmap(f)(z)
        out = jnp.mean(fz)
        for theta, c, plus, minus in fam.weak_derivatives(base, k_parts, num_samples,
                                                          self.coupled):
            plus, minus = (lax.stop_gradient(x.astype(z.dtype)) for x in (plus, minus))
            diff = jax.vmap(lambda zs, p, m: _substituted(f, zs, p) - _substituted(f, zs, m))(
                z, plus, minus)
            out = out + series.zero_valued(theta, c * jnp.mean(diff, axis=0))
        scores = fam.weak_derivative_scores(base, z)
        if scores:  # parameters without a decomposition: score function, LOO baseline
            b = (jnp.sum(fz) - fz) / (num_samples - 1) if num_samples > 1 else 0.0 * fz
            weight = (fz - b).reshape((num_samples,) + (1,) * (z.ndim - 1))
            for theta, score in scores:
                out = out + series.zero_valued(theta, jnp.mean(weight * score, axis=0))
        return out, state

def measure_valued(coupled: bool = True) -> MeasureValued:
    """Measure-valued (weak-derivative) gradient; see the module docstring.

    Args:
      coupled: draw the positive and negative parts of each weak derivative from shared
        noise (lower variance, still unbiased); False draws them independently.
    """
    return MeasureValued(coupled=checks.boolean("measure_valued()", "coupled", coupled))
