"""Estimators for Bernoulli and categorical variables: unbiasedness against full
enumeration, the fast (linear / per-example) Fourier paths against the plain rule,
Gumbel-softmax against its analytic relaxed gradient, RELAX's variance reduction, and
bad input."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import optax
import pytest

import stochbp
from helpers import assert_unbiased

# ---------------------------------------------------------------- problems
W = jnp.array([0.7, -1.3, 0.4])


def bern_f(z):  # accepts bits and relaxed values in (0, 1)
    z = z.astype(jnp.float64)
    return jnp.sin(z @ W) + z[0] * z[1] - 0.5 * z[2]


def enumerate_bernoulli(f, p):
    """E[f(z)] for independent bits with probabilities p (any shape), by enumeration."""
    shape = p.shape
    states = jnp.array(list(itertools.product([0, 1], repeat=p.size))).reshape(
        (-1,) + shape)
    probs = jnp.prod(jnp.where(states == 1, p, 1 - p).reshape(states.shape[0], -1), 1)
    return jnp.sum(probs * jax.vmap(f)(states))


P3 = jnp.array([0.2, 0.55, 0.9])


def bernoulli_case(param, p=P3, f=bern_f):
    if param == "probs":
        return p, (lambda t: nd.Bernoulli(probs=t)), (lambda t: enumerate_bernoulli(f, t))
    theta = jnp.log(p) - jnp.log1p(-p)
    return (theta, (lambda t: nd.Bernoulli(logits=t)),
            (lambda t: enumerate_bernoulli(f, jax.nn.sigmoid(t))))


V = jnp.array([[0.5, -1.0, 2.0], [1.5, 0.2, -0.7]])


def cat_h(y):  # written on one-hot (or relaxed) rows, shape (2, 3)
    vals = jnp.sum(y * V, axis=-1)
    return jnp.sin(vals[0] * vals[1]) + vals[0]


CAT_F = stochbp.one_hot(cat_h, 3)
PROBS = jnp.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])


def enumerate_categorical(f, probs):
    d, K = probs.shape
    states = jnp.array(list(itertools.product(range(K), repeat=d)))
    weights = jnp.prod(probs[jnp.arange(d), states], axis=1)
    return jnp.sum(weights * jax.vmap(f)(states))


def categorical_case(param):
    if param == "probs":
        return (PROBS, (lambda t: nd.Categorical(probs=t)),
                (lambda t: enumerate_categorical(CAT_F, t)))
    return (jnp.log(PROBS), (lambda t: nd.Categorical(logits=t)),
            (lambda t: enumerate_categorical(CAT_F, jax.nn.softmax(t, -1))))


def stateful_draws(f, make, theta, state, est, key, num_draws, num_samples=4):
    def one(k):
        return jax.grad(lambda t: stochbp.expectation_with_state(
            f, make(t), k, state, estimator=est, num_samples=num_samples)[0])(theta)
    return jax.jit(lambda ks: jax.lax.map(one, ks, batch_size=250))(
        jax.random.split(key, num_draws))


def assert_draws_unbiased(draws, reference, num_sigmas=4.0):
    mean = draws.mean(0)
    se = draws.std(0, ddof=1) / np.sqrt(draws.shape[0])
    z = np.abs(mean - reference) / se
    assert np.all(z < num_sigmas), (mean, reference, se)


def perturbed(state, key, scale=0.5):
    """A RELAX state with a non-zero network, eta and temperature off their defaults."""
    leaves, tree = jax.tree_util.tree_flatten(state.params)
    keys = jax.random.split(key, len(leaves))
    leaves = [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return stochbp.RelaxState(jnp.asarray(0.8), jnp.log(jnp.asarray(0.7)),
                              jax.tree_util.tree_unflatten(tree, leaves))


# ---------------------------------------------------------------- unbiasedness: Bernoulli
@pytest.mark.parametrize("est", [stochbp.arm(), stochbp.disarm(), stochbp.rebar()],
                         ids=lambda e: e.name)
@pytest.mark.parametrize("param", ["probs", "logits"])
def test_bernoulli_unbiased(est, param, key):
    theta, make, exact = bernoulli_case(param)
    assert_unbiased(bern_f, make, theta, exact, est, key, num_samples=2)


def test_rebar_other_settings_unbiased(key):
    theta, make, exact = bernoulli_case("logits")
    assert_unbiased(bern_f, make, theta, exact, stochbp.rebar(temperature=1.7, eta=0.6),
                    key, num_samples=2)


@pytest.mark.parametrize("param", ["probs", "logits"])
def test_relax_bernoulli_unbiased(param, key):
    theta, make, exact = bernoulli_case(param)
    est = stochbp.relax(hidden=(16,))
    state = perturbed(est.init(bern_f, make(theta), jax.random.PRNGKey(1)),
                      jax.random.PRNGKey(2))
    draws = stateful_draws(bern_f, make, theta, state, est, key, 2000)
    assert_draws_unbiased(draws, jax.grad(exact)(theta))


def test_relax_user_control_sees_noise_and_params(key):
    """control(params, inputs) receives ControlInputs; the noise behind z is the
    logistic noise z - l, and a control that uses it changes the estimate."""
    seen = []

    def control(params, x):
        seen.append(x)
        return params * jnp.sum(x.noise * x.relaxed + 0.1 * x.logits * x.relaxed)
    theta, make, _ = bernoulli_case("logits")
    est = stochbp.relax(control=control, control_params=jnp.asarray(0.7),
                        control_inputs="noise_and_params")
    state = est.init(bern_f, make(theta), KEY)
    grad = jax.jit(lambda st: jax.grad(lambda t: stochbp.expectation_with_state(
        bern_f, make(t), key, st, estimator=est)[0])(theta))
    g1, g0 = grad(state), grad(state._replace(params=jnp.asarray(0.0)))
    assert isinstance(seen[0], stochbp.ControlInputs)
    assert seen[0].noise.shape == seen[0].relaxed.shape == seen[0].logits.shape == (3,)
    assert float(jnp.max(jnp.abs(g1 - g0))) > 1e-3
    with pytest.raises(ValueError, match="control_inputs='noise'"):
        stochbp.relax(control_inputs="noise")


def test_tuned_rebar_unbiased(key):
    theta, make, exact = bernoulli_case("logits")
    est = stochbp.rebar(tune=True)
    state = est.init(bern_f, make(theta), KEY)._replace(eta=jnp.asarray(1.9), log_temperature=jnp.asarray(-1.5))
    draws = stateful_draws(bern_f, make, theta, state, est, key, 2000)
    assert_draws_unbiased(draws, jax.grad(exact)(theta))


# ---------------------------------------------------------------- unbiasedness: Categorical
@pytest.mark.parametrize("param", ["probs", "logits"])
def test_categorical_rebar_unbiased(param, key):
    theta, make, exact = categorical_case(param)
    assert_unbiased(CAT_F, make, theta, exact, stochbp.rebar(), key, num_samples=2)


@pytest.mark.parametrize("param, inputs", [("probs", "noise_and_params"),
                                           ("logits", "relaxed")])
def test_relax_categorical_unbiased(param, inputs, key):
    """With non-zero network weights; the probs case feeds the network the relaxed
    sample, the noise and the logits (test_relax_lowers_variance checks both inputs
    on a Bernoulli after training)."""
    theta, make, exact = categorical_case(param)
    est = stochbp.relax(hidden=(16,), control_inputs=inputs)
    state = perturbed(est.init(CAT_F, make(theta), jax.random.PRNGKey(1)),
                      jax.random.PRNGKey(2))
    size = theta.size if inputs == "relaxed" else 3 * theta.size
    assert state.params[0]["w"].shape[0] == size
    draws = stateful_draws(CAT_F, make, theta, state, est, key, 2000)
    assert_draws_unbiased(draws, jax.grad(exact)(theta))


# ---------------------------------------------------------------- per-example declaration
XB = jnp.array([[1.0, -0.5], [0.3, 2.0]])  # data of 2 examples
A2 = jnp.array([[0.6, -1.1], [0.4, 0.9], [-0.7, 0.2]])  # (m=3, d=2)
B2 = jnp.array([0.1, -0.2, 0.3])


def g_row(u, x):  # not elementwise: couples the hidden units and the example's data
    return jnp.sum(jnp.tanh(u) * jnp.concatenate([x, x[:1]])) + 0.3 * jnp.prod(u)


def plain_batch_f(Z):  # the same objective, undeclared
    Z = Z.astype(jnp.float64)
    return sum(g_row(A2 @ Z[i] + B2, XB[i]) for i in range(2))


PER_EXAMPLE_F = stochbp.per_example(stochbp.linear(g_row, A2, B2), XB)
P22 = jnp.array([[0.3, 0.8], [0.6, 0.15]])


@pytest.mark.parametrize("est", [stochbp.fourier(), stochbp.disarm(), stochbp.rebar()],
                         ids=lambda e: e.name)
def test_per_example_unbiased(est, key):
    exact = lambda t: enumerate_bernoulli(plain_batch_f, jax.nn.sigmoid(t))  # noqa: E731
    theta = jnp.log(P22) - jnp.log1p(-P22)
    assert_unbiased(PER_EXAMPLE_F, lambda t: nd.Bernoulli(logits=t), theta, exact, est,
                    key, num_samples=2, num_draws=1500)


def test_per_example_value_and_data_gradient(key):
    """The declaration evaluates the same f; gradients w.r.t. closed-over arrays too."""
    z = jnp.array([[1, 0], [1, 1]])
    np.testing.assert_allclose(PER_EXAMPLE_F(z), plain_batch_f(z), rtol=1e-13)
    np.testing.assert_allclose(PER_EXAMPLE_F.values(z),
                               [g_row(A2 @ z[i] + B2, XB[i]) for i in range(2)], rtol=1e-13)

    def loss(A, f_of):
        return stochbp.expectation(f_of(A), nd.Bernoulli(probs=P22), key,
                                   estimator=stochbp.fourier(), num_samples=3)
    declared = lambda A: stochbp.per_example(stochbp.linear(g_row, A, B2), XB)  # noqa
    plain = lambda A: lambda Z: sum(g_row(A @ Z[i] + B2, XB[i]) for i in range(2))  # noqa
    grad = lambda f_of: jax.jit(jax.grad(lambda A: loss(A, f_of)))(A2)  # noqa: E731
    np.testing.assert_allclose(grad(declared), grad(plain), rtol=1e-12)


# ---------------------------------------------------------------- fast path == slow path
def grads_of(f, make, theta, key, est=None, num_samples=3):
    est = est or stochbp.fourier()
    return jax.value_and_grad(lambda t: stochbp.expectation(
        f, make(t), key, estimator=est, num_samples=num_samples))(theta)


def assert_same(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("elementwise", [False, True])
def test_bernoulli_linear_fast_path(elementwise, key):
    A = jax.random.normal(jax.random.PRNGKey(3), (5, 4))
    b = jnp.linspace(-1, 1, 5)
    g = (lambda u: jnp.log1p(u ** 2)) if elementwise else \
        (lambda u: jnp.sum(jnp.tanh(u) * jnp.arange(5.0)) + jnp.prod(jnp.cos(u)))
    fast = stochbp.linear(g, A, b, elementwise=elementwise)
    slow = lambda z: jnp.sum(g(A @ z + b)) if elementwise else g(A @ z + b)  # noqa
    p = jnp.array([0.2, 0.5, 0.7, 0.9])
    assert_same(grads_of(fast, nd.Bernoulli, p, key), grads_of(slow, nd.Bernoulli, p, key))


def test_bernoulli_per_example_fast_path(key):
    theta = jnp.log(P22) - jnp.log1p(-P22)
    make = lambda t: nd.Bernoulli(logits=t)  # noqa: E731
    assert_same(grads_of(PER_EXAMPLE_F, make, theta, key),
                grads_of(plain_batch_f, make, theta, key))
    # the per-row evaluations themselves
    from stochbp._src.families.bernoulli import value_and_differences
    z = jnp.array([[1, 0], [0, 1]])
    assert_same(value_and_differences(PER_EXAMPLE_F, z),
                value_and_differences(plain_batch_f, z))


A3 = jax.random.normal(jax.random.PRNGKey(4), (4, 2, 3))  # (m, d, K): one-hot input
B3 = jnp.array([0.2, -0.1, 0.0, 0.5])
W3 = jnp.array([[1.0, -0.5, 0.3, 0.8], [0.2, 0.9, -1.2, 0.4]])


def g_cat(u, x=jnp.ones(2)):
    return jnp.sum(x * (W3 @ jnp.tanh(u))) + jnp.sum(jnp.sin(u))


def test_categorical_linear_fast_path(key):
    fast = stochbp.linear(g_cat, A3, B3)
    slow = lambda z: g_cat(jnp.einsum("mjk,jk->m", A3, jax.nn.one_hot(z, 3)) + B3)  # noqa
    z = jnp.array([2, 0])
    np.testing.assert_allclose(fast(z), slow(z), rtol=1e-13)
    np.testing.assert_allclose(fast(jax.nn.one_hot(z, 3)), slow(z), rtol=1e-13)
    from stochbp._src.families.categorical import value_and_substitutions
    assert_same(value_and_substitutions(fast, z, 3), value_and_substitutions(slow, z, 3))
    for param in ["probs", "logits"]:
        theta, make, _ = categorical_case(param)
        assert_same(grads_of(fast, make, theta, key), grads_of(slow, make, theta, key))
    # class indices used as numbers with a matrix A: u = A z + b
    A = A3[:, :, 0]
    numeric = stochbp.linear(g_cat, A, B3)
    theta, make, _ = categorical_case("logits")
    assert_same(grads_of(numeric, make, theta, key),
                grads_of(lambda z: g_cat(A @ z + B3), make, theta, key))


def test_categorical_per_example_fast_path(key):
    X = jnp.array([[1.0, 2.0], [-0.5, 0.3], [0.7, 0.7]])
    fast = stochbp.per_example(stochbp.linear(g_cat, A3, B3), X)

    def slow(Z):
        Y = jax.nn.one_hot(Z, 3)
        return sum(g_cat(jnp.einsum("mjk,jk->m", A3, Y[i]) + B3, X[i]) for i in range(3))
    logits = jax.random.normal(jax.random.PRNGKey(5), (3, 2, 3))
    make = lambda t: nd.Categorical(logits=t)  # noqa: E731
    assert_same(grads_of(fast, make, logits, key), grads_of(slow, make, logits, key))
    probs = jax.nn.softmax(logits, -1)
    make = lambda t: nd.Categorical(probs=t)  # noqa: E731
    assert_same(grads_of(fast, make, probs, key), grads_of(slow, make, probs, key))


def test_fast_path_jit_vmap(key):
    f = stochbp.per_example(stochbp.linear(g_cat, A3, B3), jnp.ones((4, 2)))
    logits = jax.random.normal(jax.random.PRNGKey(6), (4, 2, 3))

    def grad(k):
        return jax.grad(lambda t: stochbp.expectation(
            f, nd.Categorical(logits=t), k, estimator=stochbp.fourier(), num_samples=2))(
                logits)
    keys = jax.random.split(key, 3)
    batched = jax.jit(jax.vmap(grad))(keys)
    assert_same(batched[1], grad(keys[1]))


@pytest.mark.parametrize("chunk_size", [1, 2, 5])
@pytest.mark.parametrize("family", ["bernoulli", "categorical"])
@pytest.mark.parametrize("structured", [True, False], ids=["linear", "generic"])
def test_per_example_chunk_size(chunk_size, family, structured, key):
    """chunk_size only changes how the substitutions are scheduled (a sequential loop of
    chunks, 5 examples not divisible by 2): values and gradients, w.r.t. the
    distribution's parameters and w.r.t. arrays f closes over, equal the unchunked rule
    (also with S > 1, under jit and vmap over keys)."""
    n = 5
    X = jax.random.normal(jax.random.PRNGKey(7), (n, 2))
    if family == "bernoulli":
        A = jax.random.normal(jax.random.PRNGKey(8), (4, 3))
        theta = jax.random.normal(jax.random.PRNGKey(9), (n, 3))
        make = lambda t: nd.Bernoulli(logits=t)  # noqa: E731
        generic = lambda A: lambda z, x: g_cat(A @ z + B3, x)  # noqa: E731
    else:
        A = A3
        theta = jax.random.normal(jax.random.PRNGKey(9), (n, 2, 3))
        make = lambda t: nd.Categorical(logits=t)  # noqa: E731
        generic = lambda A: lambda z, x: g_cat(  # noqa: E731
            jnp.einsum("mjk,jk->m", A, jax.nn.one_hot(z, 3)) + B3, x)

    def term(A):
        return stochbp.linear(g_cat, A, B3) if structured else generic(A)

    def grads(k, chunk):
        def loss(t, A):
            f = stochbp.per_example(term(A), X, chunk_size=chunk)
            return stochbp.expectation(f, make(t), k, estimator=stochbp.fourier(),
                                       num_samples=3)
        return jax.value_and_grad(loss, argnums=(0, 1))(theta, A)

    keys = jax.random.split(key, 2)
    chunked = jax.jit(jax.vmap(lambda k: grads(k, chunk_size)))(keys)
    plain = jax.jit(jax.vmap(lambda k: grads(k, None)))(keys)
    assert_same(chunked, plain)
    assert float(jnp.max(jnp.abs(chunked[1][0]))) > 0  # not trivially equal


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "4"])
def test_per_example_bad_chunk_size(bad):
    with pytest.raises(ValueError, match=f"chunk_size={bad!r}"):
        stochbp.per_example(lambda z: jnp.sum(z), chunk_size=bad)


# ---------------------------------------------------------------- Gumbel-softmax
# relaxed expectation of f(y), y = sigmoid((l + L) / tau), L logistic, by quadrature
_L = jnp.linspace(-60.0, 60.0, 200001)
_W = jax.nn.sigmoid(_L) * jax.nn.sigmoid(-_L)
_W = _W / jnp.sum(_W)


def relaxed_expectation(p, tau, f):
    l = jnp.log(p) - jnp.log1p(-p)
    return jnp.sum(_W * f(jax.nn.sigmoid((l + _L) / tau)))


def test_gumbel_softmax_per_draw_gradient(key):
    """f(y) = y: the gradient of one draw is dy/dl = y (1 - y) / tau, y being the value."""
    tau = 0.4
    est = stochbp.gumbel_softmax(tau)
    keys = jax.random.split(key, 5)

    def draws(make, theta, f=lambda z: z[0]):
        one = jax.value_and_grad(lambda t, k: stochbp.expectation(f, make(t), k,
                                                                  estimator=est))
        return jax.jit(jax.vmap(one, in_axes=(None, 0)))(theta, keys)

    v, g = draws(lambda l: nd.Bernoulli(logits=l), jnp.array([0.3]))
    np.testing.assert_allclose(g[:, 0], v * (1 - v) / tau, rtol=1e-12)
    p = 0.3  # through logits = log p - log(1 - p)
    v, g = draws(lambda q: nd.Bernoulli(probs=q), jnp.array([p]))
    np.testing.assert_allclose(g[:, 0], v * (1 - v) / tau / (p * (1 - p)), rtol=1e-10)
    # categorical with K = 2: y_1 = sigmoid((l_1 - l_0 + G_1 - G_0) / tau)
    c = jnp.array([0.5, 2.0])
    f = stochbp.one_hot(lambda y: jnp.sum(y[0] * c), 2)
    v, g = draws(lambda l: nd.Categorical(logits=l), jnp.array([[0.1, -0.4]]), f)
    y1 = (v - c[0]) / (c[1] - c[0])
    expect = (c[1] - c[0]) * y1 * (1 - y1) / tau
    np.testing.assert_allclose(g[:, 0], np.stack([-expect, expect], 1), rtol=1e-9)


def test_gumbel_softmax_bias(key):
    """f(z) = z: the true gradient w.r.t. p is 1; the relaxed one is smaller and
    approaches 1 as tau -> 0. The estimator's mean matches the relaxed gradient."""
    p = jnp.array([0.3])
    f = lambda z: jnp.sum(z)  # noqa: E731
    relaxed = {tau: float(jax.grad(relaxed_expectation)(0.3, tau, lambda y: y))
               for tau in (1.0, 0.5, 0.1)}
    np.testing.assert_allclose([relaxed[1.0], relaxed[0.5], relaxed[0.1]],
                               [0.739, 0.906, 0.996], atol=1e-3)  # the docstring's numbers
    for tau in (1.0, 0.5):
        stats = stochbp.diagnostics.gradient_stats(
            f, nd.Bernoulli, p, key, estimator=stochbp.gumbel_softmax(tau),
            num_samples=4, num_draws=2000, batch_size=None)
        mean, se = float(stats.mean[0]), float(stats.stderr[0])
        assert abs(mean - relaxed[tau]) < 4 * se, (tau, mean, relaxed[tau], se)
        assert 1.0 - mean > 4 * se  # biased low, as stated
    # value: the mean of f at the relaxed samples, pulled towards 1/2
    v = stochbp.expectation(f, nd.Bernoulli(probs=p), key,
                            estimator=stochbp.gumbel_softmax(1.0), num_samples=20000)
    assert abs(float(v) - float(relaxed_expectation(0.3, 1.0, lambda y: y))) < 0.01
    assert float(v) > 0.3 + 0.03


def test_gumbel_softmax_straight_through_and_categorical(key):
    est = stochbp.gumbel_softmax(0.5, straight_through=True)
    v, g = grads_of(jnp.sum, lambda q: nd.Bernoulli(probs=q), jnp.full(6, 0.4), key, est)
    np.testing.assert_allclose(v * 3, np.round(v * 3), atol=1e-12)  # hard samples forward
    assert np.all(np.isfinite(g)) and np.all(g > 0)
    theta, make, _ = categorical_case("logits")
    v, g = grads_of(CAT_F, make, theta, key, stochbp.gumbel_softmax(0.5))
    assert np.isfinite(v) and np.all(np.isfinite(g))
    # a per_example f with a categorical linear term accepts relaxed rows too
    f = stochbp.per_example(stochbp.linear(g_cat, A3, B3), jnp.ones((2, 2)))
    v, g = grads_of(f, make, jnp.stack([theta, theta]), key, est)
    assert np.isfinite(v) and np.all(np.isfinite(g))


# ---------------------------------------------------------------- RELAX variance reduction
@pytest.mark.parametrize("inputs", ["relaxed", "noise_and_params"])
def test_relax_lowers_variance(inputs, key):
    t = jnp.array([0.45, 0.3, 0.6, 0.5])
    f = lambda z: jnp.sum((z - t) ** 2) + jnp.prod(z)  # noqa: E731
    make = lambda l: nd.Bernoulli(logits=l)  # noqa: E731
    theta = jnp.array([0.2, -0.4, 1.0, 0.0])
    est = stochbp.relax(hidden=(32,), control_inputs=inputs)
    state0 = est.init(f, make(theta), jax.random.PRNGKey(1))
    opt = optax.adam(1e-2)

    def step(carry, k):
        state, opt_state = carry
        _, grad = stochbp.variance_gradient(f, make, theta, k, state, estimator=est)
        updates, opt_state = opt.update(grad, opt_state, state)
        return (optax.apply_updates(state, updates), opt_state), None

    (state1, _), _ = jax.jit(lambda s, ks: jax.lax.scan(step, (s, opt.init(s)), ks))(
        state0, jax.random.split(jax.random.PRNGKey(3), 200))
    before = stateful_draws(f, make, theta, state0, est, key, 2000, num_samples=1)
    after = stateful_draws(f, make, theta, state1, est, key, 2000, num_samples=1)
    assert after.var(0).sum() < 0.5 * before.var(0).sum()
    exact = jax.grad(lambda l: enumerate_bernoulli(f, jax.nn.sigmoid(l)))(theta)
    assert_draws_unbiased(after, exact)  # still unbiased after training


def test_variance_gradient_matches_double_grad(key):
    """variance_gradient is d/d(state) of the squared gradient of one draw."""
    theta, make, _ = categorical_case("probs")
    est = stochbp.relax(hidden=(8,))
    state = perturbed(est.init(CAT_F, make(theta), jax.random.PRNGKey(1)),
                      jax.random.PRNGKey(2))
    vg = jax.jit(lambda st: stochbp.variance_gradient(CAT_F, make, theta, key, st,
                                                      estimator=est, num_samples=2))
    value, grad = vg(state)

    @jax.jit
    def second_moment(st):
        g = jax.grad(lambda t: stochbp.expectation_with_state(
            CAT_F, make(t), key, st, estimator=est, num_samples=2)[0])(theta)
        return jnp.sum(g ** 2)
    np.testing.assert_allclose(value, second_moment(state), rtol=1e-10)
    assert jax.tree_util.tree_structure(grad) == jax.tree_util.tree_structure(state)
    # the state gradient by finite differences along eta
    h = 1e-5
    up = vg(state._replace(eta=state.eta + h))[0]
    down = vg(state._replace(eta=state.eta - h))[0]
    np.testing.assert_allclose(grad.eta, (up - down) / (2 * h), rtol=1e-5)


# ---------------------------------------------------------------- bad input
KEY = jax.random.PRNGKey(0)


def call(dist, est, f=jnp.sum, **kw):
    return stochbp.expectation(f, dist, KEY, estimator=est, **kw)


@pytest.mark.parametrize("make", [
    lambda t: stochbp.gumbel_softmax(t), lambda t: stochbp.rebar(temperature=t),
    lambda t: stochbp.relax(temperature=t)])
@pytest.mark.parametrize("t", [0.0, -1.0, float("nan"), float("inf"), True, "1"])
def test_bad_temperature(make, t):
    with pytest.raises(ValueError, match="temperature") as err:
        make(t)
    assert "got temperature=" in str(err.value)


def test_bad_options():
    with pytest.raises(ValueError, match="eta"):
        stochbp.rebar(eta=float("nan"))
    with pytest.raises(ValueError, match="hidden"):
        stochbp.relax(hidden=0)
    with pytest.raises(ValueError, match="hidden"):
        stochbp.relax(hidden=(8, -1))
    with pytest.raises(TypeError, match="straight_through"):
        stochbp.gumbel_softmax(0.5, straight_through="yes")
    with pytest.raises(TypeError, match="tune"):
        stochbp.rebar(tune=1)
    with pytest.raises(TypeError, match="control"):
        stochbp.relax(control=3)
    with pytest.raises(ValueError, match="num_classes"):
        stochbp.one_hot(cat_h, 1)
    with pytest.raises(TypeError, match="term"):
        stochbp.per_example(3)
    with pytest.raises(ValueError, match="data"):
        stochbp.per_example(jnp.sum, (jnp.ones((3, 2)), jnp.ones((4,))))
    with pytest.raises(ValueError, match="A"):
        stochbp.linear(jnp.tanh, jnp.ones((2, 3, 4, 5)))


ALL = [stochbp.gumbel_softmax(0.5), stochbp.arm(), stochbp.disarm(), stochbp.rebar()]
CATEGORICAL_ONLY = [stochbp.arsm(), stochbp.unordered_set(2), stochbp.rao_blackwell_topk(1)]


@pytest.mark.parametrize("est", ALL + CATEGORICAL_ONLY, ids=lambda e: e.name)
@pytest.mark.parametrize("dist", [nd.Normal(0.0, 1.0), nd.Gamma(2.0, 1.0),
                                  nd.Poisson(2.0)], ids=lambda d: type(d).__name__)
def test_non_discrete_distribution(est, dist):
    with pytest.raises(ValueError, match=type(dist).__name__):
        call(dist, est)


def test_relax_bad_usage():
    d = nd.Bernoulli(probs=jnp.array([0.3, 0.6]))
    est = stochbp.relax()
    with pytest.raises(ValueError, match="Normal"):
        stochbp.expectation_with_state(jnp.sum, nd.Normal(0.0, 1.0), KEY, None,
                                       estimator=est)
    with pytest.raises(TypeError, match="expectation_with_state"):
        call(d, est)
    with pytest.raises(TypeError, match="state"):
        stochbp.expectation_with_state(jnp.sum, d, KEY, None, estimator=est)
    with pytest.raises(TypeError, match="dist"):
        est.init(jnp.sum, None, KEY)
    wrong = est.init(jnp.sum, nd.Bernoulli(probs=jnp.full(5, 0.3)), KEY)
    with pytest.raises(ValueError, match="size"):
        stochbp.expectation_with_state(jnp.sum, d, KEY, wrong, estimator=est)
    with pytest.raises(TypeError, match="make_dist"):
        stochbp.variance_gradient(jnp.sum, None, jnp.array([0.3]), KEY, None,
                                  estimator=est)
    with pytest.raises(ValueError, match="control_params"):
        stochbp.relax(control=lambda p, y: jnp.sum(y))


@pytest.mark.parametrize("est", [stochbp.arm(), stochbp.disarm()], ids=lambda e: e.name)
def test_arm_is_bernoulli_only(est):
    with pytest.raises(ValueError, match="Categorical"):
        call(nd.Categorical(probs=jnp.ones(3) / 3), est)


@pytest.mark.parametrize("est", CATEGORICAL_ONLY, ids=lambda e: e.name)
def test_categorical_estimators_refuse_bernoulli(est):
    with pytest.raises(ValueError, match="Bernoulli.*categorical variables only"):
        call(nd.Bernoulli(probs=jnp.array([0.5, 0.3])), est)


@pytest.mark.parametrize("est", ALL, ids=lambda e: e.name)
@pytest.mark.parametrize("probs", [0.0, 1.0])
def test_probs_at_the_boundary(est, probs):
    with pytest.raises(ValueError, match="probs") as err:
        call(nd.Bernoulli(probs=jnp.array([0.5, probs])), est)
    assert "open interval" in str(err.value)


@pytest.mark.parametrize("est", [stochbp.gumbel_softmax(0.5), stochbp.rebar()],
                         ids=lambda e: e.name)
def test_categorical_relaxation_needs_one_hot_f(est):
    d = nd.Categorical(probs=PROBS)
    with pytest.raises(TypeError, match="one_hot"):
        call(d, est, f=lambda z: jnp.sum(V[jnp.arange(2), z]))
    with pytest.raises(ValueError, match="num_classes"):
        call(d, est, f=stochbp.one_hot(lambda y: jnp.sum(y ** 2), 4))


def test_per_example_shape_mismatch():
    f = stochbp.per_example(lambda z, x: jnp.sum(z * x), jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="data"):
        call(nd.Bernoulli(probs=jnp.full((4, 2), 0.5)), stochbp.fourier(), f=f)
