"""jit, vmap, float32, values and closure gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest

import stochbp

ESTIMATORS = {
    "normal": (lambda p: nd.Normal(p, 0.5 + p ** 2), [stochbp.fourier(), stochbp.pathwise(),
                                                     stochbp.score_function()]),
    "gamma": (lambda p: nd.Gamma(1.0 + p ** 2, 2.0), [stochbp.fourier(order=4),
                                                      stochbp.pathwise(),
                                                      stochbp.score_function()]),
    "laplace": (lambda p: nd.Laplace(p, 0.3), [stochbp.fourier(order=4)]),
    "beta": (lambda p: nd.Beta(2.0 + p ** 2, 3.0), [stochbp.fourier(order=2),
                                                    stochbp.pathwise()]),
    "bernoulli": (lambda p: nd.Bernoulli(logits=p), [stochbp.fourier(),
                                                     stochbp.score_function()]),
}


# JAX's caches released after every test of this module (conftest): each op-by-op run
# leaves a compiled program per operation behind, 0.3 GB for the gamma sampler's
RELEASE_EVERY = 1


def f(z):
    return jnp.sum(jnp.sin(z.astype(jnp.result_type(float))) + 0.1 * z ** 2)


@pytest.mark.parametrize("fam", sorted(ESTIMATORS))
def test_jit_vmap_float32(fam):
    make, ests = ESTIMATORS[fam]
    grads = [jax.grad(lambda p, k, est=est: stochbp.expectation(f, make(p), k, estimator=est,
                                                                num_samples=3))
             for est in ests]
    p32 = jnp.array([0.3, -0.2], jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    params = jnp.stack([p32, p32 + 0.1])

    # one jitted program holds, for every estimator of the family, the gradient, its
    # vmap over keys and its vmap over (params, keys): one compilation per family
    # instead of three per estimator (a quarter less CPU; the same programs inside)
    @jax.jit
    def transformed(p, ps, ks):
        return [(g(p, ks[0]), jax.vmap(g, in_axes=(None, 0))(p, ks), jax.vmap(g)(ps, ks[:2]))
                for g in grads]

    for est, grad, (jitted, batched, both) in (
            zip(ests, grads, transformed(p32, params, keys))):
        assert jitted.dtype == jnp.float32, (fam, est.name)
        # op-by-op (eager) against jit, for every estimator (the gamma sampler is jitted
        # inside, so an eager call dispatches it as one program)
        eager = grad(p32, keys[0])
        np.testing.assert_allclose(jitted, eager, rtol=2e-4, atol=1e-5)
        # vmap is the same batching transformation with or without jit; under jit the
        # batched programs are compiled once instead of dispatched op by op (3x faster)
        assert batched.shape == (4, 2) and np.all(np.isfinite(batched))
        np.testing.assert_allclose(batched[0], eager, rtol=2e-4, atol=1e-5)
        np.testing.assert_allclose(both[0], eager, rtol=2e-4, atol=1e-5)
        # the output dtype follows the input's: tracing (eval_shape) decides it
        g64 = jax.eval_shape(grad, p32.astype(jnp.float64), keys[0])
        assert g64.dtype == jnp.float64


@pytest.mark.parametrize("est", [stochbp.fourier(order=3), stochbp.pathwise(),
                                 stochbp.score_function()], ids=lambda e: e.name)
def test_value_is_monte_carlo_mean(est):
    key = jax.random.PRNGKey(3)
    d = nd.Gamma(jnp.array([2.0, 3.0]), 1.5)
    value = stochbp.expectation(f, d, key, estimator=est, num_samples=5)
    z = stochbp.family_of(d).sample(d, key, 5)  # every estimator draws through the family
    np.testing.assert_allclose(value, jnp.mean(jax.vmap(f)(z)), rtol=1e-12)


@pytest.mark.parametrize("est", [stochbp.fourier(), stochbp.pathwise(),
                                 stochbp.score_function()], ids=lambda e: e.name)
def test_closure_gradients_are_pathwise_at_samples(est):
    key = jax.random.PRNGKey(4)
    d = nd.Normal(jnp.array([0.2, -0.3]), 1.0)
    z = d.sample(key, (6,))

    def loss(w):
        return stochbp.expectation(lambda x: jnp.sum(jnp.tanh(w * x)), d, key,
                                   estimator=est, num_samples=6)
    w = jnp.array([0.7, 1.4])
    expected = jax.grad(lambda w: jnp.mean(jax.vmap(lambda x: jnp.sum(jnp.tanh(w * x)))(z)))(w)
    np.testing.assert_allclose(jax.grad(loss)(w), expected, rtol=1e-12)


def test_independent_wrapper_is_accepted(key):
    base = lambda p: nd.Normal(p, 1.0)  # noqa: E731
    f2 = lambda z: jnp.sum(z ** 3)  # noqa: E731
    p = jnp.array([0.1, 0.4])
    g1 = jax.grad(lambda p: stochbp.expectation(f2, base(p).to_event(1), key,
                                                estimator=stochbp.fourier(), num_samples=3))(p)
    g2 = jax.grad(lambda p: stochbp.expectation(f2, base(p), key,
                                                estimator=stochbp.fourier(), num_samples=3))(p)
    np.testing.assert_allclose(g1, g2, rtol=1e-12)
    gs = jax.grad(lambda p: stochbp.expectation(f2, base(p).to_event(1), key,
                                                estimator=stochbp.score_function(),
                                                num_samples=3))(p)
    assert np.all(np.isfinite(gs))


def test_typed_keys_work():
    g = jax.grad(lambda p: stochbp.expectation(jnp.sum, nd.Normal(p, 1.0), jax.random.key(0),
                                               estimator=stochbp.pathwise()))(0.5)
    assert g == 1.0
