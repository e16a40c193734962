"""The structural separability proof and the one-pass route it enables.

A separable f(z) = sum_j g_j(z_j) + C has pure derivatives d^n f / dz_j^n = n! [t^n]
v_j(z + t 1) with v_j = g_j; the detector must say yes only when every mixed partial
derivative of f is identically zero. The fast route is checked against the general one
(one Taylor pass per coordinate) in float64 for orders 1..4.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stochbp._src import separable, series, taylor

M = 5
A = jnp.arange(M * M, dtype=jnp.float64).reshape(M, M) / 10.0
W = jnp.linspace(0.5, 2.0, M)


def _softplus_sum(z):
    return jnp.sum(jax.nn.softplus(z)) + jnp.sum(jax.nn.log_sigmoid(2.0 * z))


SEPARABLE = {
    "sum_square": lambda z: jnp.sum((z - 0.49) ** 2),
    "mean_exp": lambda z: jnp.mean(jnp.exp(0.3 * z)),
    "affine_combo": lambda z: 2.0 * jnp.sum(jnp.sin(z)) - jnp.mean(z ** 3) / 4.0 + 7.0,
    "sq_minus_log": lambda z: jnp.sum(z ** 2) - 3 * jnp.sum(jnp.log(z)),
    "where_const_pred": lambda z: jnp.sum(jnp.where(jnp.arange(M) % 2 == 0,
                                                    z ** 2, jnp.exp(z))),
    "weights_elementwise": lambda z: jnp.sum(W * jnp.log1p(z) + jax.scipy.special.gammaln(z)),
    "elementwise_products": lambda z: jnp.sum(z * jnp.exp(-z) / (1.0 + z ** 2)),
    "softplus_custom_jvp": _softplus_sum,
    "relu_z_predicate": lambda z: jnp.sum(jnp.where(z > 1.0, z ** 3, 0.5 * z)),
    "nested_jit_reshape": lambda z: jax.jit(lambda u: jnp.sum(u.reshape(1, M) ** 4))(z),
    "constant": lambda z: jnp.sum(A),
    "inner_products": lambda z: z @ z - 2.0 * jnp.dot(W, jnp.exp(-z)) + jnp.vdot(z ** 2, z),
}

NOT_SEPARABLE = {
    "square_of_sum": lambda z: jnp.sum(z) ** 2,
    "exp_of_sum": lambda z: jnp.exp(jnp.sum(z)),
    "quadratic_form": lambda z: z @ A @ z,
    "neighbour_products": lambda z: jnp.sum(z[1:] * z[:-1]),
    "sort": lambda z: jnp.sum(jnp.sort(z) * W),
    "cumsum": lambda z: jnp.sum(jnp.cumsum(z) ** 2),
    "logsumexp": lambda z: jax.nn.logsumexp(z),
    "product_of_sums": lambda z: jnp.sum(z) * jnp.sum(z),
    "where_sum_predicate": lambda z: jnp.where(jnp.sum(z) > 1.0, jnp.sum(z ** 2),
                                               jnp.sum(z) ** 2),
    "where_mixed_branch": lambda z: jnp.sum(jnp.where(z > 1.0, z * jnp.sum(z), z)),
    "reverse": lambda z: jnp.sum(z * z[::-1]),
    "softmax": lambda z: jnp.sum(jax.nn.softmax(z) * W),
    "normalised": lambda z: jnp.sum(z / jnp.sum(z)),
    "matrix_elementwise": lambda z: jnp.sum(jnp.tanh(A @ z)),
    "outer": lambda z: jnp.sum(jnp.outer(z, z)),
    "log_of_mean": lambda z: jnp.log(jnp.mean(z ** 2)),
    "indexing": lambda z: (z[0] - 1.0) ** 2 + (z[1] - 2.0) ** 2,
    "norm_squared": lambda z: jnp.linalg.norm(z) ** 2,
    "shifted_inner_product": lambda z: jnp.dot(z, jnp.roll(z, 1)),
}

POINTS = jnp.asarray(np.random.default_rng(0).uniform(0.5, 2.0, size=(3, M)))


@pytest.mark.parametrize("name", sorted(SEPARABLE))
def test_detector_accepts_separable(name):
    assert separable.is_separable(SEPARABLE[name], POINTS[0])


@pytest.mark.parametrize("name", sorted(NOT_SEPARABLE))
def test_detector_refuses_non_separable(name):
    assert not separable.is_separable(NOT_SEPARABLE[name], POINTS[0])


def _generic_derivatives(f, samples, order):
    """n! [t^n] f(x_s + t e_j) per sample, shape (S, order, m): one pass per coordinate."""
    lowered = taylor.jet_compatible(f, samples[0])
    m = samples.shape[1]
    fact = jnp.asarray([math.factorial(n) for n in range(1, order + 1)], samples.dtype)

    def along(j):
        e = taylor.unit_vector(j, m, samples.dtype)
        return jax.vmap(lambda x: taylor.taylor_coefficients(lowered, x, e, order))(samples)

    return jnp.moveaxis(jax.vmap(along)(jnp.arange(m)), 0, -1) * fact[:, None]


def _generic_mean_derivatives(f, samples, order):
    return jnp.mean(_generic_derivatives(f, samples, order), axis=0)


@pytest.mark.parametrize("name", sorted(SEPARABLE))
def test_fast_route_equals_general_route(name):
    f = SEPARABLE[name]
    assert separable.is_separable(f, POINTS[0])

    @jax.jit
    def both(samples):
        per_sample = _generic_derivatives(f, samples, 4)
        return (series.mean_derivatives(f, samples, 4), jnp.mean(per_sample, axis=0),
                taylor.directional_derivatives(f, samples[1], 4), per_sample[1])

    fast, general, single, single_general = both(POINTS)
    np.testing.assert_allclose(fast, general, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(single, single_general, rtol=1e-10, atol=1e-10)


def test_refused_functions_keep_the_general_route():
    """Non-separable f: mean_derivatives must equal the per-coordinate passes (a false
    "yes" of the detector would make the one-pass route return wrong numbers here)."""
    names = ("matrix_elementwise", "where_mixed_branch", "exp_of_sum")

    @jax.jit
    def both(samples):
        return [(series.mean_derivatives(NOT_SEPARABLE[n], samples, 3),
                 _generic_mean_derivatives(NOT_SEPARABLE[n], samples, 3)) for n in names]

    for name, (got, want) in zip(names, both(POINTS)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=name)


def test_scalar_and_matrix_shaped_samples():
    """mean_derivatives on samples of shape (S,) (one coordinate) and (S, 2, 3)."""
    scalar = lambda z: (z - 0.49) ** 2 + jnp.exp(z)  # noqa: E731
    matrix = lambda z: jnp.sum(jnp.log(z) * z.reshape(6).reshape(2, 3) ** 2)  # noqa: E731
    zs = POINTS.reshape(-1)[:12]
    assert separable.is_separable(lambda x: scalar(x.reshape(())), zs[:1])
    assert separable.is_separable(lambda x: matrix(x.reshape(2, 3)), zs[:6])

    @jax.jit
    def run(zs):
        mats = zs.reshape(2, 2, 3)
        return (series.mean_derivatives(scalar, zs, 3),
                _generic_mean_derivatives(lambda x: scalar(x.reshape(())), zs[:, None], 3),
                series.mean_derivatives(matrix, mats, 3),
                _generic_mean_derivatives(lambda x: matrix(x.reshape(2, 3)),
                                          mats.reshape(2, 6), 3))

    s_fast, s_gen, m_fast, m_gen = run(zs)
    np.testing.assert_allclose(s_fast, s_gen.reshape(3), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(m_fast, m_gen.reshape(3, 2, 3), rtol=1e-10, atol=1e-10)
