"""The surrogate shared by every series rule of Theorem 1.

For independent coordinates the log characteristic function is a sum of per-coordinate
terms, log phi(w) = sum_j K_j(i w_j), where K_j(t) = sum_n c_{n,j} t^n is coordinate
j's cumulant generating function (c_n = kappa_n / n!). Theorem 1 (Eqs. 3-4) then reads

    grad_theta E[f(z)] = sum_j sum_{n>=1} grad_theta c_{n,j} * E[d^n f / dz_j^n (z)],

and Eq. 24 truncates the sum at n = N. Every Fourier series rule (Normal, Laplace,
gamma and its relatives, beta and Dirichlet through gamma variables, user cumulants)
only supplies the coefficients c_{n,j}(theta); this module turns them into one scalar
surrogate whose value is the Monte Carlo mean of f and whose gradient is the rule:

    surrogate = mean_s f(z_s) + sum_{n,j} (c_{n,j} - sg(c_{n,j})) * sg(Dbar_{n,j}),

with sg the stop-gradient and Dbar the sample mean of the derivatives. The second term
is exactly zero in value.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax

from stochbp._src import checks, separable, taylor
from stochbp._src.linear import LinearComposite


def mean_derivatives(f: Callable, samples, order: int) -> jax.Array:
    """Mean over the leading sample axis of the pure derivatives d^n f / dx_j^n.

    ``samples`` has shape (S, *shape) and ``f`` maps shape -> scalar. Returns
    (order, *shape), entry (n, j) = (1/S) sum_s d^n f / dx_j^n (x_s). A
    :class:`LinearComposite` uses its closed form.

    When f's jaxpr is proven separable, f(x) = sum_j g_j(x_j) + C
    (:func:`separable.separable_part`, a structural proof, no numerics), all coordinates
    come from one Taylor-mode pass per sample of the vector v(x) = (g_j(x_j))_j along
    the all-ones direction:

        d^n f / dx_j^n (x) = n! [t^n] v_j(x + t 1)    (v_j depends on x_j alone).

    Otherwise coordinate j is one Taylor-mode pass of f along e_j at every sample,
    d^n f / dx_j^n (x) = n! [t^n] f(x + t e_j), averaged before the next coordinate;
    the coordinates go in chunks (``taylor.map_coordinates``), so memory grows as S m
    times the chunk, never as S m^2 (m = prod(shape)).
    """
    shape = samples.shape[1:]
    if isinstance(f, LinearComposite) and len(shape) == 1:
        return f.mean_derivatives(samples, order)
    flat = samples.reshape(samples.shape[0], -1)
    num_samples, m = flat.shape
    f_flat = lambda x: f(x.reshape(shape))  # noqa: E731
    factorials = jnp.asarray([math.factorial(n) for n in range(1, order + 1)], flat.dtype)
    part = separable.separable_part(f_flat, flat[0])
    if part is not None:
        ones = jnp.ones((m,), flat.dtype)
        coeffs = jax.vmap(lambda x: taylor.taylor_coefficients(part, x, ones, order))(flat)
        means = jnp.mean(coeffs, axis=0).astype(flat.dtype) * factorials[:, None]
        return means.reshape((order,) + shape)
    lowered = taylor.jet_compatible(f_flat, flat[0])

    def along(j):  # (order,): sample mean of n! T_n along e_j
        e = taylor.unit_vector(j, m, flat.dtype)
        coeffs = jax.vmap(lambda x: taylor.taylor_coefficients(lowered, x, e, order))(flat)
        return jnp.mean(coeffs * factorials, axis=0)

    per_coordinate = taylor.map_coordinates(along, m, num_samples * m * order)  # (m, order)
    return per_coordinate.T.reshape((order,) + shape)


def zero_valued(coeffs, stats) -> jax.Array:
    """sum (c - sg c) * sg(stats): value 0, gradient sum grad(c) * stats."""
    return jnp.sum((coeffs - lax.stop_gradient(coeffs)) * lax.stop_gradient(stats))


def zero_valued_term(coeffs, stats, *, stop: bool = True) -> jax.Array:
    """Like :func:`zero_valued`; with ``stop=False`` the gradient keeps stats'
    own dependencies (sum (c - sg c) * stats is still exactly zero in value)."""
    if stop:
        return zero_valued(coeffs, stats)
    return jnp.sum((coeffs - lax.stop_gradient(coeffs)) * stats)


def series_surrogate(f: Callable, latent, coeffs, *, to_z: Optional[Callable] = None
                     ) -> jax.Array:
    """Surrogate of Theorem 1 for coefficients ``coeffs`` (shape (N, *latent_shape)).

    ``latent`` holds S parameter-free samples (S, *latent_shape). When the family is a
    transform of independent latent variables (beta and Dirichlet from gamma variables,
    Eqs. 21-22), ``to_z`` maps one latent sample to the sample f expects, and the
    derivatives are those of f o to_z.
    """
    latent = lax.stop_gradient(latent)
    order = coeffs.shape[0]
    checks.order_fits("fourier()", order, latent.dtype if checks.is_float_dtype(latent)
                      else jnp.result_type(float))
    checks.coefficients_finite("fourier()", order, coeffs)
    h = f if to_z is None else (lambda x: f(to_z(x)))
    value = jnp.mean(jax.vmap(h)(latent))
    derivs = mean_derivatives(h, latent, order)
    # the zero-valued term in the value's dtype: float64 coefficients (x64 on) must not
    # turn a float32 Monte Carlo mean into a float64 value
    return value + zero_valued(coeffs, derivs).astype(value.dtype)


def scaled_series_surrogate(f: Callable, latent, first, log_rest, sign_rest) -> jax.Array:
    """Theorem 1's surrogate with the coefficients of order >= 2 in log space.

    c_1 = ``first`` (shape (1, *latent_shape)) is used as it is; for n >= 2,
    c_n = sign_n exp(l_n) with ``log_rest`` = l_n and ``sign_rest`` in {0, 1} (0: no term
    of that order), shape (N - 1, *latent_shape). Since grad c_n = c_n grad l_n, the
    gradient sum_n grad c_n Dbar_n is written

        sum_{n>=2} sg(P_n) grad l_n,   P_n = sign_n sign(Dbar_n) exp(l_n + log|Dbar_n|),

    so no coefficient is ever formed: P_n is finite whenever the product c_n Dbar_n is
    (a scale of 100 at order 20 gives c_20 ~ 1e38, beyond float32, times Dbar_20 = 0 for
    a quadratic f). The value of the extra terms is exactly zero.
    """
    latent = lax.stop_gradient(latent)
    order = 1 + log_rest.shape[0]
    checks.order_fits("fourier()", order, latent.dtype)
    value = jnp.mean(jax.vmap(f)(latent))
    derivs = lax.stop_gradient(mean_derivatives(f, latent, order))
    rest = derivs[1:]
    magnitude = jnp.exp(lax.stop_gradient(log_rest) + jnp.log(jnp.abs(rest)))
    products = jnp.where((sign_rest > 0) & (rest != 0), jnp.sign(rest) * magnitude, 0.0)
    extra = zero_valued(first, derivs[:1]) + zero_valued(log_rest, products)
    return value + extra.astype(value.dtype)  # the value's dtype (see series_surrogate)


def coefficients_from_cgf(cgf: Callable, t0, order: int) -> jax.Array:
    """c_n = K^(n)(0) / n!, n = 1..order, of a per-coordinate CGF by Taylor mode.

    ``cgf`` maps a scalar t to an array of per-coordinate values; it may close over
    parameters, and the coefficients are differentiable with respect to them.
    """
    t0 = jnp.asarray(t0)
    lowered = taylor.jet_compatible(cgf, t0)
    return taylor.taylor_coefficients(lowered, t0, jnp.ones_like(t0), order)
