"""The generic 1-D implicit rule (Graves Eq. 6) and its sampling estimator (Eqs. 9-10)."""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest

import stochbp

LOCATION_SCALE = [nd.Normal, nd.Laplace, nd.Logistic, nd.Gumbel, nd.Cauchy]


@pytest.mark.parametrize("family", LOCATION_SCALE, ids=lambda c: c.__name__)
def test_location_scale_families_match_reparameterisation(family, key):
    """For x = loc + scale * eps the implicit derivative must be dx/dloc = 1 and
    dx/dscale = (x - loc) / scale, sample for sample."""
    loc, scale = jnp.array([0.3, -1.0]), jnp.array([1.5, 0.4])
    draw = lambda loc, scale: stochbp.implicit_rsample(family(loc, scale), key, (3,))  # noqa
    x = draw(loc, scale)
    dloc, dscale = jax.jacrev(draw, argnums=(0, 1))(loc, scale)
    eye = jnp.broadcast_to(jnp.eye(2), (3, 2, 2))
    np.testing.assert_allclose(dloc, eye, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dscale, eye * ((x - loc) / scale)[..., None], rtol=1e-8,
                               atol=1e-12)


def gradient_moments(loss, theta, key, num_draws):
    """Mean and standard error of grad loss(theta, key_r) over num_draws keys."""
    keys = jax.random.split(key, num_draws)
    g = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(theta, keys)
    mean = jax.tree_util.tree_map(lambda a: a.mean(0), g)
    se = jax.tree_util.tree_map(lambda a: a.std(0, ddof=1) / np.sqrt(num_draws), g)
    return mean, se


def assert_within(mean, se, exact, sigmas=4.0):
    for name in exact:
        err = np.abs(np.asarray(mean[name]) - np.asarray(exact[name]))
        assert np.all(err <= sigmas * np.asarray(se[name]) + 1e-9), (name, mean[name],
                                                                       exact[name], se[name])


@pytest.mark.parametrize("integral", ["analytic", "sampling"])
def test_gamma_unbiased(integral, key):
    """Gamma(k, rate): E[x^2] = k (k + 1) / rate^2. numpyro's Gamma has no usable icdf
    here, so integral="sampling" exercises the indicator (rejection) form."""
    theta = {"k": jnp.array([2.0, 0.7]), "rate": jnp.array([1.5, 3.0])}

    def loss(t, k):
        x = stochbp.implicit_rsample(nd.Gamma(t["k"], t["rate"]), k, (4,),
                                     integral=integral, num_integral_samples=32)
        return jnp.mean(jnp.sum(x ** 2, -1))
    exact = jax.grad(lambda t: jnp.sum(t["k"] * (t["k"] + 1) / t["rate"] ** 2))(theta)
    mean, se = gradient_moments(loss, theta, key, 1500)
    assert_within(mean, se, exact)


def test_normal_sampling_estimator_unbiased(key):
    """Eqs. 9-10 with exact truncated draws (Normal has an icdf): E[x^2] = mu^2 + s^2."""
    theta = {"loc": jnp.array([0.5, -1.0]), "scale": jnp.array([1.2, 0.3])}

    def loss(t, k):
        x = stochbp.implicit_rsample(nd.Normal(t["loc"], t["scale"]), k, (4,),
                                     integral="sampling", num_integral_samples=8)
        return jnp.mean(jnp.sum(x ** 2, -1))
    exact = {"loc": 2 * theta["loc"], "scale": 2 * theta["scale"]}
    mean, se = gradient_moments(loss, theta, key, 1500)
    assert_within(mean, se, exact)


@pytest.mark.parametrize("dist", [nd.Normal(0.4, 1.3), nd.Gamma(2.5, 1.5)],
                         ids=["Normal (truncated draws)", "Gamma (indicator form)"])
def test_sampling_estimator_matches_analytic_integral(dist, key):
    """For fixed x, the sampling estimate of dx/dtheta averages to the analytic one."""
    x = stochbp.implicit_rsample(dist, key, (3,))
    leaves, tree = jax.tree_util.tree_flatten(dist)

    def tangent(integral, k):
        def draw(leaves):
            d = jax.tree_util.tree_unflatten(tree, leaves)
            return stochbp.implicit_rsample(d, key, (3,), integral=integral,
                                            num_integral_samples=64, integral_key=k)
        return jax.jacfwd(draw)(leaves)

    analytic = jax.jit(lambda k: tangent("analytic", k))(key)
    keys = jax.random.split(jax.random.PRNGKey(7), 400)
    noisy = jax.jit(jax.vmap(lambda k: tangent("sampling", k)))(keys)
    for a, s in zip(analytic, noisy):
        mean, se = s.mean(0), s.std(0, ddof=1) / np.sqrt(s.shape[0])
        assert np.all(np.abs(mean - a) <= 4 * se + 1e-9), (mean, a, se)
    # the draws themselves are the plain numpyro draws
    np.testing.assert_array_equal(x, dist.sample(jax.random.split(key)[0], (3,)))


def test_matches_numpyro_implicit_gamma_gradient(key):
    """Same x as numpyro's Gamma rsample: the derivative wrt the concentration must
    equal JAX's own implicit gamma gradient (Figurnov et al.)."""
    k_sample = jax.random.split(key)[0]
    ours = jax.jacrev(lambda a: stochbp.implicit_rsample(nd.Gamma(a, 1.0), key, (5,)))(2.3)
    ref = jax.jacrev(lambda a: nd.Gamma(a, 1.0).rsample(k_sample, (5,)))(2.3)
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_jit_vmap_float32(key):
    def loss(loc, scale, k):
        return jnp.mean(stochbp.implicit_rsample(nd.Logistic(loc, scale), k, (8,)) ** 2)
    g = jax.jit(jax.grad(loss, (0, 1)))(0.3, 1.2, key)
    keys = jax.random.split(key, 3)
    gv = jax.jit(jax.vmap(jax.grad(loss, (0, 1)), in_axes=(None, None, 0)))(0.3, 1.2, keys)
    np.testing.assert_allclose(gv[0][1], jax.grad(loss)(0.3, 1.2, keys[1]), rtol=1e-10)
    g32 = jax.jit(jax.grad(loss, (0, 1)))(jnp.float32(0.3), jnp.float32(1.2), key)
    assert g32[0].dtype == jnp.float32 and np.isfinite(g32[1])
    assert np.isfinite(g[0])


def test_bad_input(key):
    with pytest.raises(ValueError, match="dist must be univariate"):
        stochbp.implicit_rsample(nd.MultivariateNormal(jnp.zeros(2), jnp.eye(2)), key)
    with pytest.raises(ValueError, match="continuous"):
        stochbp.implicit_rsample(nd.Poisson(3.0), key)
    with pytest.raises(TypeError, match="dist"):
        stochbp.implicit_rsample("normal", key)
    with pytest.raises(ValueError, match="integral"):
        stochbp.implicit_rsample(nd.Normal(0.0, 1.0), key, integral="exact")
    with pytest.raises(ValueError, match="num_integral_samples"):
        stochbp.implicit_rsample(nd.Normal(0.0, 1.0), key, num_integral_samples=0)
    with pytest.raises(ValueError, match="sample_shape"):
        stochbp.implicit_rsample(nd.Normal(0.0, 1.0), key, sample_shape=3)
