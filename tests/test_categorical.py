"""The categorical estimators of issue 13: arsm, unordered_set, rao_blackwell_topk.

Unbiasedness against full enumeration (two variables with K = 4 classes, a non-linear
f of class indices, probs and logits), the exact cases (k = K for the unordered set,
k = K - 1 for the top-k sum with one variable, the set probabilities against a sum
over orderings), and bad input."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest

import stochbp
from stochbp._src.estimators.unordered_set import set_probabilities

V = jnp.array([[0.5, -1.0, 2.0, 0.3], [1.5, 0.2, -0.7, -1.1]])
PROBS = jnp.array([[0.2, 0.4, 0.3, 0.1], [0.5, 0.1, 0.15, 0.25]])
KEY = jax.random.PRNGKey(0)


def f(z):  # class indices (2,) -> scalar, not additive over the variables
    vals = V[jnp.arange(V.shape[0]), z]
    return jnp.sin(vals[0] * vals[1]) + vals[0]


def enumerate_expectation(probs, fn=f):
    d, K = probs.shape
    states = jnp.array(list(itertools.product(range(K), repeat=d)))
    weights = jnp.prod(probs[jnp.arange(d), states], axis=1)
    return jnp.sum(weights * jax.vmap(fn)(states))


EXACT_PROBS = jax.grad(enumerate_expectation)(PROBS)
EXACT_LOGITS = jax.grad(lambda l: enumerate_expectation(jax.nn.softmax(l, -1)))(
    jnp.log(PROBS))

_DRAWS = {}


def draws(est, num_draws=2000, num_samples=2):
    """(values w.r.t. probs, gradient estimates w.r.t. probs, w.r.t. logits) of
    num_draws independent calls: one jitted function per estimator."""
    name = (est.name, num_draws, num_samples)
    if name not in _DRAWS:
        def one(k):
            vg = lambda make, t: jax.value_and_grad(  # noqa: E731
                lambda th: stochbp.expectation(f, make(th), k, estimator=est,
                                               num_samples=num_samples))(t)
            value, g_probs = vg(lambda t: nd.Categorical(probs=t), PROBS)
            return value, g_probs, vg(lambda t: nd.Categorical(logits=t), jnp.log(PROBS))[1]
        _DRAWS[name] = jax.jit(jax.vmap(one))(jax.random.split(KEY, num_draws))
    return _DRAWS[name]


def assert_close_in_se(g, exact, num_sigmas=4.0):
    mean = np.asarray(g.mean(0))
    se = np.asarray(g.std(0, ddof=1)) / np.sqrt(g.shape[0])
    z = np.abs(mean - exact) / se
    assert np.all(z < num_sigmas), (np.round(z, 2), mean, exact)


UNBIASED = [stochbp.arsm(), stochbp.unordered_set(k=3),
            stochbp.rao_blackwell_topk(k=1),
            stochbp.rao_blackwell_topk(
                k=2, estimator=stochbp.score_function(baseline="leave_one_out"))]


@pytest.mark.parametrize("est", UNBIASED, ids=lambda e: e.name)
def test_unbiased_against_enumeration(est):
    """Gradients w.r.t. probs and logits; the value is a mean of f at samples."""
    values, g_probs, g_logits = draws(est)
    assert_close_in_se(g_probs, EXACT_PROBS)
    assert_close_in_se(g_logits, EXACT_LOGITS)
    assert_close_in_se(values, enumerate_expectation(PROBS))


# ---------------------------------------------------------------- exact cases
P1 = jnp.array([[0.15, 0.35, 0.05, 0.45]])


def f1(z):
    return jnp.cos(3.0 * V[0, z[0]]) + V[0, z[0]] ** 2


EXACT_ONE = jax.grad(lambda l: enumerate_expectation(jax.nn.softmax(l, -1), f1))(
    jnp.log(P1))


@pytest.mark.parametrize("est", [stochbp.unordered_set(k=4), stochbp.rao_blackwell_topk(k=3)],
                         ids=lambda e: e.name)
def test_exact_when_nothing_is_left_to_sample(est):
    """One variable: the unordered set with k = K sums over every class, and the top-K-1
    sum leaves one class whose conditional law is a point mass: both give the exact
    gradient w.r.t. the logits from any single draw. (W.r.t. probs the component along
    (1, ..., 1) is the sampled f, as for every estimator.)"""
    grads = jax.jit(jax.vmap(lambda k: jax.grad(lambda t: stochbp.expectation(
        f1, nd.Categorical(logits=t), k, estimator=est))(jnp.log(P1))))(
            jax.random.split(KEY, 3))
    np.testing.assert_allclose(grads, jnp.broadcast_to(EXACT_ONE, grads.shape), rtol=1e-10,
                               atol=1e-12)


def test_set_probabilities_against_orderings():
    """P^{S \\ U}(U) from the subset recursion equals the sum over the orders of drawing
    U's members first, from the classes outside S \\ U."""
    p = jnp.array([0.1, 0.25, 0.05, 0.3, 0.2, 0.1])
    S = [1, 3, 4]
    q, outside = p[jnp.array(S)], float(p.sum() - p[jnp.array(S)].sum())
    sets = [0b111, 0b101, 0b010, 0b000]
    got = jax.jit(lambda q, o: set_probabilities(q, o, np.array(sets), 3))(q, outside)
    for U, value in zip(sets, got):
        members = [S[i] for i in range(3) if U >> i & 1]
        removed = set(S) - set(members)
        total = 0.0
        for order in itertools.permutations(members):
            prob, left = 1.0, 1.0 - float(sum(p[r] for r in removed))
            for c in order:
                prob *= float(p[c]) / left
                left -= float(p[c])
            total += prob
        np.testing.assert_allclose(value, total if members else 1.0, rtol=1e-12)


# ---------------------------------------------------------------- bad input
def call(est, dist=None, fn=f):
    dist = nd.Categorical(probs=PROBS) if dist is None else dist
    return stochbp.expectation(fn, dist, KEY, estimator=est)


@pytest.mark.parametrize("bad", [1, 0, -1, 2.5, True, "2"])
def test_unordered_set_bad_k(bad):
    with pytest.raises(ValueError, match=f"k must be .*got k={bad!r}"):
        stochbp.unordered_set(k=bad)


@pytest.mark.parametrize("bad", [0, -3, 1.5, False, "1"])
def test_rao_blackwell_bad_k(bad):
    with pytest.raises(ValueError, match=f"k must be .*got k={bad!r}"):
        stochbp.rao_blackwell_topk(k=bad)


def test_k_above_the_number_of_classes():
    with pytest.raises(ValueError, match="K=4.*got k=5"):
        call(stochbp.unordered_set(k=5))
    with pytest.raises(ValueError, match="below the number of classes K=4.*got k=4"):
        call(stochbp.rao_blackwell_topk(k=4))


def test_base_estimator_must_sample_the_rest():
    with pytest.raises(TypeError, match="estimator=3"):
        stochbp.rao_blackwell_topk(k=1, estimator=3)
    with pytest.raises(ValueError, match="base estimator arsm cannot sample"):
        call(stochbp.rao_blackwell_topk(k=1, estimator=stochbp.arsm()))


@pytest.mark.parametrize("est", [stochbp.arsm(), stochbp.unordered_set(2),
                                 stochbp.rao_blackwell_topk(1)], ids=lambda e: e.name)
def test_categorical_only(est):
    with pytest.raises(ValueError, match="Bernoulli.*categorical variables only"):
        call(est, nd.Bernoulli(probs=jnp.array([0.3, 0.6])), jnp.sum)
    with pytest.raises(ValueError, match="Normal"):
        call(est, nd.Normal(jnp.zeros(2), 1.0), jnp.sum)


@pytest.mark.parametrize("est", [stochbp.arsm(), stochbp.unordered_set(2)],
                         ids=lambda e: e.name)
def test_zero_probability_refused_by_logit_estimators(est):
    with pytest.raises(ValueError, match="probs") as err:
        call(est, nd.Categorical(probs=jnp.array([[0.5, 0.5, 0.0, 0.0]] * 2)))
    assert "positive" in str(err.value)
