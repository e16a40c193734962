"""Taylor-mode derivatives (with the jet workaround) against nested jax.jvp."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest

import stochbp
from stochbp._src import series, taylor


def nested_jvp(f, z, j, n):
    e = jnp.zeros_like(z).at[j].set(1.0)
    g = f
    for _ in range(n):
        g = (lambda h: (lambda x: jax.jvp(h, (x,), (e,))[1]))(g)
    return g(z)


@functools.partial(jax.jit, static_argnums=(0, 2))
def reference(f, z, order):
    """All d^n f / dz_j^n by nested jvp, in one compiled program (op-by-op dispatch of
    the nested jvps took most of this file's time)."""
    return jnp.array([[nested_jvp(f, z, j, n) for j in range(z.shape[0])]
                      for n in range(1, order + 1)])


def scan_cond(z):
    c = jax.lax.cond(z[0] > 0, jnp.sin, jnp.cos, z[1])
    s, ys = jax.lax.scan(lambda c, x: (c * jnp.tanh(x) + x ** 2, c * x), 1.0, z)
    return c + s + jnp.sum(ys)


COV = jnp.array([[2.0, 0.3, 0.1], [0.3, 1.0, 0.2], [0.1, 0.2, 1.5]])


def triangular_solves(z):
    """Both sides, both triangles, transposed, unit diagonal, with z in the matrix and
    in the right-hand side (the Taylor rule's recurrence in A and B)."""
    tri = jnp.array([[2.0, 0.0, 0.0], [0.5, 1.5, 0.0], [-0.3, 0.2, 1.0]])
    a = tri + jnp.diag(z ** 2) + jnp.outer(z, jnp.ones(3)) * jnp.tri(3, k=-1)
    b = jnp.stack([jnp.sin(z), z ** 3, jnp.ones(3)], axis=1)
    solve = jax.lax.linalg.triangular_solve
    return (jnp.sum(solve(a, b, left_side=True, lower=True, transpose_a=True) ** 2)
            + jnp.sum(solve(a.T, b.T, left_side=False, lower=False, unit_diagonal=True)))


FUNCTIONS = {
    "mvn_log_prob": lambda z: nd.MultivariateNormal(z, covariance_matrix=COV).log_prob(
        jnp.array([1.0, 0.0, 1.0])),
    "triangular_solves": triangular_solves,
    # lax.max with operands of shapes (3,) and (1,) inside numpyro's Beta.log_prob
    "beta_log_prob": lambda z: jnp.sum(nd.Beta(jnp.exp(z), 2.0).log_prob(
        jnp.array([0.2, 0.5, 0.7]))),
    "log_sigmoid": lambda z: jnp.sum(jax.nn.log_sigmoid(z * jnp.arange(1.0, 4.0))),
    "softplus": lambda z: jax.nn.softplus(z[0] * z[1] - z[2]),
    "relu": lambda z: jnp.sum(jax.nn.relu(z) * z ** 2),
    "logaddexp": lambda z: jnp.logaddexp(z[0], 2 * z[1] + z[2]),
    "logsumexp": lambda z: jax.nn.logsumexp(z * z[0]),
    "log_softmax": lambda z: jax.nn.log_softmax(z)[1],
    "gelu_silu": lambda z: jnp.sum(jax.nn.silu(z) + jax.nn.gelu(z)),
    "lgamma_digamma": lambda z: jnp.sum(jax.scipy.special.gammaln(z + 2.0)
                                        + jax.scipy.special.digamma(z + 3.0)),
    "scan_cond": scan_cond,
    "nested_jit": jax.jit(lambda z: jnp.sum(jax.jit(jax.nn.sigmoid)(z) ** 3)),
}


# order 3 where the nested-jvp reference of order 5 is slow to compile and the point is
# a rule's plumbing (max / min broadcasting), not its high orders
ORDERS = {"beta_log_prob": 3}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_directional_derivatives_match_nested_jvp(name):
    f = FUNCTIONS[name]
    z = jnp.array([0.3, -0.7, 1.1])
    order = ORDERS.get(name, 5)
    got = taylor.directional_derivatives(f, z, order)
    np.testing.assert_allclose(got, reference(f, z, order), rtol=1e-9, atol=1e-10)


def test_plain_jet_really_fails_on_custom_jvp():
    """Guards the reason the workaround exists; if JAX fixes it, this starts failing
    and the workaround can be reconsidered."""
    from jax.experimental import jet
    f = lambda x: jnp.sum(jax.nn.log_sigmoid(x))  # noqa: E731
    with pytest.raises(Exception):
        jet.jet(f, (jnp.ones(2),), ([jnp.ones(2), jnp.zeros(2)],))


def test_while_loop_is_refused_with_a_clear_message():
    f = lambda z: jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * 2),  # noqa
                                     (0, z[0]))[1]
    with pytest.raises(NotImplementedError, match="while_loop"):
        taylor.directional_derivatives(f, jnp.array([1.0, 2.0]), 2)


def test_under_jit_and_vmap():
    f = FUNCTIONS["log_sigmoid"]
    zs = jnp.array([[0.3, -0.7, 1.1], [1.0, 0.2, -2.0]])
    got = jax.jit(jax.vmap(lambda z: taylor.directional_derivatives(f, z, 3)))(zs)
    for i in range(2):
        np.testing.assert_allclose(got[i], reference(f, zs[i], 3), rtol=1e-9)


@pytest.mark.parametrize("elementwise", [True, False])
def test_linear_composite_matches_general_path(elementwise):
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    A = jax.random.normal(k[0], (7, 4))
    b = jax.random.normal(k[1], (7,))
    zs = jax.random.normal(k[2], (5, 4))
    if elementwise:
        f = stochbp.linear(jax.nn.log_sigmoid, A, b, elementwise=True)
        plain = lambda z: jnp.sum(jax.nn.log_sigmoid(A @ z + b))  # noqa: E731
    else:
        g = lambda u: jnp.sum(jnp.tanh(u)) * jnp.sum(u ** 2) / 10  # noqa: E731
        f = stochbp.linear(g, A, b)
        plain = lambda z: g(A @ z + b)  # noqa: E731
    np.testing.assert_allclose(f(zs[0]), plain(zs[0]), rtol=1e-12)
    fast = jax.jit(lambda zs: series.mean_derivatives(f, zs, 6))(zs)
    slow = jax.jit(lambda zs: series.mean_derivatives(plain, zs, 6))(zs)
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12)


def test_cgf_coefficients_by_jet_match_closed_forms():
    """Theorem 1's coefficients from Taylor mode on each family's CGF equal the
    closed forms the families use (Eqs. 15, 19, 20)."""
    import numpyro.distributions as nd
    from stochbp._src.families import family_of
    dists = [nd.Normal(jnp.array([0.3, -1.0]), jnp.array([0.5, 2.0])),
             nd.Laplace(jnp.array([0.3, -1.0]), jnp.array([0.5, 0.2])),
             nd.Gamma(jnp.array([2.0, 0.5]), jnp.array([1.5, 4.0])),
             nd.Exponential(jnp.array([2.0, 0.5])),
             nd.Chi2(jnp.array([3.0, 1.0]))]
    for d in dists:
        fam = family_of(d)
        order = 2 if fam.name == "Normal" else 8
        by_jet = series.coefficients_from_cgf(lambda t: jnp.broadcast_to(fam.cgf(d, t),
                                                                         d.batch_shape),
                                              jnp.zeros(()), order)
        np.testing.assert_allclose(by_jet, fam.coefficients(d, order), rtol=1e-10,
                                   err_msg=fam.name)


# ------------------------------------------- chunked coordinate passes (memory linear in m)
def _old_directional_derivatives(f, z, order):
    """The previous implementation: all m unit vectors (an m x m identity) at once."""
    import math
    lowered = taylor.jet_compatible(f, z)
    coeffs = jax.vmap(lambda e: taylor.taylor_coefficients(lowered, z, e, order),
                      out_axes=1)(jnp.eye(z.shape[0], dtype=z.dtype))
    return coeffs * jnp.asarray([math.factorial(n) for n in range(1, order + 1)])[:, None]


def _old_mean_derivatives(f, samples, order):
    shape = samples.shape[1:]
    flat = samples.reshape(samples.shape[0], -1)
    f_flat = lambda x: f(x.reshape(shape))  # noqa: E731
    per = jax.vmap(lambda x: _old_directional_derivatives(f_flat, x, order))(flat)
    return jnp.mean(per, axis=0).reshape((order,) + shape)


def coupled(z):
    """Not separable: every coordinate interacts with every other."""
    return jnp.sum(jnp.tanh(z) * jnp.cumsum(z)) + jnp.sin(jnp.sum(z ** 2)) \
        + jnp.sum(jax.nn.log_sigmoid(z))


# chunk sizes 7 (one vmapped batch), 3 (two chunks and a remainder), 1 (one per step).
# Each comparison is compiled (a fresh lambda per test, so the patched budget is traced).
@pytest.mark.parametrize("budget", [None, 3 * 7 * 4, 7 * 4], ids=["whole", "chunk3", "chunk1"])
def test_chunked_derivatives_equal_previous_implementation(budget, monkeypatch):
    if budget is not None:
        monkeypatch.setattr(taylor, "DIRECTION_BLOCK_ELEMENTS", budget)
    z = jax.random.normal(jax.random.PRNGKey(1), (7,))
    new = jax.jit(lambda z: taylor.directional_derivatives(coupled, z, 4))(z)
    old = jax.jit(lambda z: _old_directional_derivatives(coupled, z, 4))(z)
    np.testing.assert_allclose(new, old, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("budget", [None, 4 * 6 * 3 * 2, 4 * 6 * 3],
                         ids=["whole", "chunk2", "chunk1"])
def test_chunked_mean_derivatives_equal_previous_implementation(budget, monkeypatch):
    if budget is not None:  # per coordinate: S m order = 4 * 6 * 3 elements
        monkeypatch.setattr(taylor, "DIRECTION_BLOCK_ELEMENTS", budget)
    zs = jax.random.normal(jax.random.PRNGKey(2), (4, 2, 3))
    f = lambda z: coupled(z.reshape(-1)) + z[0, 0] * z[0, 1] * z[1, 2] ** 2  # noqa: E731
    new = jax.jit(lambda zs: series.mean_derivatives(f, zs, 3))(zs)
    old = jax.jit(lambda zs: _old_mean_derivatives(f, zs, 3))(zs)
    np.testing.assert_allclose(new, old, rtol=1e-13, atol=1e-14)


def _old_mvn_blocks(f, z, shape, k):
    """The previous implementation: the full (n k)^2 Hessian per sample, then its
    diagonal blocks."""
    nb = z.shape[1] // k
    flat_f = lambda x: f(x.reshape(shape))  # noqa: E731
    hess = jnp.mean(jax.vmap(jax.hessian(flat_f))(z), axis=0)
    return hess.reshape(nb, k, nb, k)[jnp.arange(nb), :, jnp.arange(nb), :]


@pytest.mark.parametrize("budget", [None, 5 * 12 * 5, 5 * 12], ids=["whole", "chunk5", "chunk1"])
def test_mvn_hessian_blocks_equal_previous_implementation(budget, monkeypatch):
    from stochbp._src.families import multivariate_normal as mvn
    if budget is not None:  # per column: S m = 5 * 12 elements
        monkeypatch.setattr(taylor, "DIRECTION_BLOCK_ELEMENTS", budget)
    shape, k = (2, 2, 3), 3
    zs = jax.random.normal(jax.random.PRNGKey(3), (5, 12))
    f = lambda z: coupled(z.reshape(-1)) + jnp.sum(z[0] @ z[1].T) ** 2  # noqa: E731
    got = jax.jit(lambda zs: mvn.mean_hessian_blocks(f, zs, shape, k))(zs)
    assert got.shape == (4, k, k)
    old = jax.jit(lambda zs: _old_mvn_blocks(f, zs, shape, k))(zs)
    np.testing.assert_allclose(got, old, rtol=1e-13, atol=1e-14)


def test_mvn_fourier_gradient_equals_previous_implementation(key):
    """The whole rule (Eq. 15, batched, coupled f) against the previous code's formula."""
    from stochbp._src import series as s
    loc = jnp.array([[0.2, -0.4, 0.1], [1.0, 0.3, -0.5]])
    tril = jnp.array([[[1.0, 0, 0], [0.5, 0.7, 0], [0.1, -0.2, 0.6]],
                      [[0.6, 0, 0], [-0.2, 0.9, 0], [0.3, 0.2, 1.1]]])
    f = lambda z: coupled(z.reshape(-1))  # noqa: E731

    def old(loc, tril):
        d = nd.MultivariateNormal(loc, scale_tril=tril)
        z = jax.lax.stop_gradient(d.sample(key, (6,)))
        value = jnp.mean(jax.vmap(f)(z))
        grads = jnp.mean(jax.vmap(jax.grad(f))(z), axis=0)
        blocks = _old_mvn_blocks(f, z.reshape(6, -1), (2, 3), 3)
        return value + s.zero_valued(loc, grads) + 0.5 * s.zero_valued(
            d.covariance_matrix, blocks)

    def new(loc, tril):
        return stochbp.expectation(f, nd.MultivariateNormal(loc, scale_tril=tril), key,
                                   estimator=stochbp.fourier(), num_samples=6)

    got = jax.jit(jax.grad(new, (0, 1)))(loc, tril)
    for a, b in zip(got, jax.jit(jax.grad(old, (0, 1)))(loc, tril)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)
