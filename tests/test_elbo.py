"""The location-scale ELBO E_phi[log g(mu + C eps)] + log|det C| + H[phi] (Aziz, Eq. 6h)
against closed forms for a Gaussian target g."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest
from jax.scipy.stats import multivariate_normal, norm

import stochbp

M = jnp.array([1.0, -0.5, 0.3])
S = jnp.array([0.7, 1.2, 0.5])
LG = jnp.array([[0.7, 0.0, 0.0], [0.3, 1.2, 0.0], [-0.2, 0.1, 0.5]])
LOC = jnp.array([0.2, 0.1, -0.3])
D = 3


def log_g_diag(z):
    return jnp.sum(norm.logpdf(z, M, S))


def log_g_full(z):
    return multivariate_normal.logpdf(z, M, LG @ LG.T)


def exact_normal(t):
    mu, sd = t["loc"], t["scale"]
    expected = jnp.sum(-0.5 * jnp.log(2 * jnp.pi * S ** 2) - ((mu - M) ** 2 + sd ** 2)
                       / (2 * S ** 2))
    return expected + jnp.sum(0.5 * jnp.log(2 * jnp.pi * math.e * sd ** 2))


def exact_laplace(t):
    mu, b = t["loc"], t["scale"]  # E (z - m)^2 = (mu - m)^2 + 2 b^2, H = 1 + log 2b
    expected = jnp.sum(-0.5 * jnp.log(2 * jnp.pi * S ** 2) - ((mu - M) ** 2 + 2 * b ** 2)
                       / (2 * S ** 2))
    return expected + jnp.sum(1.0 + jnp.log(2 * b))


def exact_mvn(t):
    L = jnp.tril(t["tril"])
    cov_g = LG @ LG.T
    prec = jnp.linalg.inv(cov_g)
    diff = t["loc"] - M
    expected = -0.5 * (D * jnp.log(2 * jnp.pi) + jnp.linalg.slogdet(cov_g)[1]
                       + jnp.trace(prec @ L @ L.T) + diff @ prec @ diff)
    return expected + 0.5 * D * math.log(2 * math.pi * math.e) + jnp.sum(
        jnp.log(jnp.diag(L)))


CASES = {
    "Normal": (lambda t: nd.Normal(t["loc"], t["scale"]), log_g_diag, exact_normal,
               {"loc": LOC, "scale": jnp.array([1.0, 0.8, 0.6])}),
    "Laplace": (lambda t: nd.Laplace(t["loc"], t["scale"]), log_g_diag, exact_laplace,
                {"loc": LOC, "scale": jnp.array([0.6, 0.5, 0.4])}),
    "MultivariateNormal": (
        lambda t: nd.MultivariateNormal(t["loc"], scale_tril=jnp.tril(t["tril"])),
        log_g_full, exact_mvn,
        {"loc": LOC, "tril": jnp.array([[1.0, 0.0, 0.0], [0.2, 0.8, 0.0],
                                        [0.1, -0.3, 0.6]])}),
}


def draws(make, log_g, t, key, num_draws, entropy, num_samples=2):
    """ELBO values and gradients for num_draws independent keys."""
    def one(t, k):
        return stochbp.location_scale_elbo(log_g, make(t), k, num_samples=num_samples,
                                           entropy=entropy)
    keys = jax.random.split(key, num_draws)
    return jax.jit(jax.vmap(jax.value_and_grad(one), in_axes=(None, 0)))(t, keys)


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_unbiased(name, key):
    make, log_g, exact, t = CASES[name]
    _, grads = draws(make, log_g, t, key, 1500, "analytic")
    ref = jax.grad(exact)(t)
    for leaf in t:
        mean = grads[leaf].mean(0)
        se = grads[leaf].std(0, ddof=1) / np.sqrt(grads[leaf].shape[0])
        assert np.all(np.abs(mean - ref[leaf]) <= 4 * se + 1e-9), (leaf, mean, ref[leaf])


@pytest.mark.parametrize("name", list(CASES))
def test_monte_carlo_entropy(name, key):
    """-log q(mu + C eps) = -log phi(eps) + log|det C| exactly (notes, Eq. 5), so the
    Monte Carlo entropy changes the value's noise but not the gradient: per key the two
    gradients agree, and both values are unbiased."""
    make, log_g, exact, t = CASES[name]
    v_a, g_a = draws(make, log_g, t, key, 1000, "analytic", num_samples=1)
    v_m, g_m = draws(make, log_g, t, key, 1000, "monte_carlo", num_samples=1)
    for leaf in t:
        np.testing.assert_allclose(g_m[leaf], g_a[leaf], rtol=1e-9, atol=1e-10)
    for v in (v_a, v_m):
        assert abs(float(v.mean() - exact(t))) <= 4 * float(v.std(ddof=1)) / np.sqrt(v.size)


def test_jit_vmap_float32(key):
    make, log_g, exact, t = CASES["Normal"]
    loss = lambda t, k: stochbp.location_scale_elbo(log_g, make(t), k, num_samples=4)  # noqa
    g = jax.grad(loss)(t, key)
    g_jit = jax.jit(jax.grad(loss))(t, key)
    np.testing.assert_allclose(g_jit["scale"], g["scale"], rtol=1e-10)
    ts = jax.tree_util.tree_map(lambda a: jnp.stack([a, 2 * a]), t)
    gv = jax.vmap(jax.grad(loss), in_axes=(0, None))(ts, key)
    np.testing.assert_allclose(gv["loc"][0], g["loc"], rtol=1e-10)
    t32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), t)
    g32 = jax.jit(jax.grad(loss))(t32, key)
    assert g32["scale"].dtype == jnp.float32
    assert np.isfinite(float(jax.jit(loss)(t32, key)))
    # Independent wrapper: same coordinates, same estimate
    wrapped = stochbp.location_scale_elbo(log_g, nd.Independent(make(t), 1), key,
                                          num_samples=4)
    np.testing.assert_allclose(wrapped, loss(t, key), rtol=1e-12)


def test_bad_input(key):
    q = nd.Normal(LOC, 1.0)
    with pytest.raises(ValueError, match="entropy"):
        stochbp.location_scale_elbo(log_g_diag, q, key, entropy="exact")
    with pytest.raises(ValueError, match="num_samples"):
        stochbp.location_scale_elbo(log_g_diag, q, key, num_samples=0)
    with pytest.raises(ValueError, match="q must be a location-scale"):
        stochbp.location_scale_elbo(log_g_diag, nd.Gamma(jnp.ones(3), 1.0), key)
    with pytest.raises(TypeError, match="q must be a numpyro"):
        stochbp.location_scale_elbo(log_g_diag, "normal", key)
    with pytest.raises(TypeError, match="log_joint"):
        stochbp.location_scale_elbo(lambda z: z, q, key)  # not a scalar
    with pytest.raises(TypeError, match="log_joint"):
        stochbp.location_scale_elbo(lambda z: jnp.sum(z @ jnp.ones((4, 2))), q, key)
    with pytest.raises(TypeError, match="log_joint must be callable"):
        stochbp.location_scale_elbo(3.0, q, key)
    with pytest.raises(ValueError, match="scale"):
        stochbp.location_scale_elbo(log_g_diag, nd.Normal(LOC, -1.0, validate_args=False), key)
    with pytest.raises(ValueError, match="scale_tril"):
        stochbp.location_scale_elbo(log_g_full, nd.MultivariateNormal(
            LOC, scale_tril=-jnp.eye(3), validate_args=False), key)
