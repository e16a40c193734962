"""Every (estimator, distribution) pair against the exact gradient of a closed-form
expectation, with a tolerance of four standard errors computed from the estimates."""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest

import stochbp
from helpers import assert_unbiased, beta_truncated_gradient

C = 0.3
EPS = 0.49


def sq(z):
    return jnp.sum((z - C) ** 2)


def cos_sum(z):
    return jnp.sum(jnp.cos(z))


def exp_decay(z):
    return jnp.sum(jnp.exp(-EPS * z))


CONTINUOUS = [stochbp.pathwise(), stochbp.score_function(),
              stochbp.score_function(baseline="leave_one_out"),
              stochbp.score_function(baseline=1.0)]

# ---------------------------------------------------------------- Normal
NORMAL = {"loc": jnp.array([0.5, -1.0, 0.1]), "scale": jnp.array([1.2, 0.7, 0.3])}
make_normal = lambda t: nd.Normal(t["loc"], t["scale"])  # noqa: E731


@pytest.mark.parametrize("est", [stochbp.fourier()] + CONTINUOUS, ids=lambda e: e.name)
def test_normal_square(est, key):
    exact = lambda t: jnp.sum((t["loc"] - C) ** 2 + t["scale"] ** 2)  # noqa: E731
    assert_unbiased(sq, make_normal, NORMAL, exact, est, key)


@pytest.mark.parametrize("est", [stochbp.fourier()] + CONTINUOUS[:2], ids=lambda e: e.name)
def test_normal_cos(est, key):
    exact = lambda t: jnp.sum(jnp.cos(t["loc"]) * jnp.exp(-t["scale"] ** 2 / 2))  # noqa
    assert_unbiased(cos_sum, make_normal, NORMAL, exact, est, key)


def test_normal_fourier_is_exact_for_quadratic(key):
    """Eq. 15 with f quadratic: f'' is constant, so the scale gradient of every single
    estimate equals the exact one (zero variance)."""
    exact = jax.grad(lambda t: jnp.sum((t["loc"] - C) ** 2 + t["scale"] ** 2))(NORMAL)
    stats = stochbp.diagnostics.gradient_stats(sq, make_normal, NORMAL, key,
                                               estimator=stochbp.fourier(), num_draws=50)
    np.testing.assert_allclose(stats.mean["scale"], exact["scale"], rtol=1e-12)
    np.testing.assert_allclose(stats.variance["scale"], 0.0, atol=1e-20)


# ---------------------------------------------------------------- MultivariateNormal
L = jnp.array([[1.0, 0.0, 0.0], [0.4, 0.8, 0.0], [-0.3, 0.2, 0.5]])
MVN = {"loc": jnp.array([0.2, -0.4, 1.0]), "tril": L}
make_mvn = lambda t: nd.MultivariateNormal(t["loc"], scale_tril=jnp.tril(t["tril"]))  # noqa
A_VEC = jnp.array([0.3, -0.2, 0.5])


def mvn_exp(z):
    return jnp.exp(A_VEC @ z)


@pytest.mark.parametrize("est", [stochbp.fourier()] + CONTINUOUS[:3], ids=lambda e: e.name)
def test_mvn_square(est, key):
    def exact(t):
        Lt = jnp.tril(t["tril"])
        return jnp.sum((t["loc"] - C) ** 2) + jnp.trace(Lt @ Lt.T)
    assert_unbiased(sq, make_mvn, MVN, exact, est, key)


@pytest.mark.parametrize("est", [stochbp.fourier()] + CONTINUOUS[:2], ids=lambda e: e.name)
def test_mvn_exponential(est, key):
    def exact(t):
        Lt = jnp.tril(t["tril"])
        return jnp.exp(A_VEC @ t["loc"] + 0.5 * A_VEC @ Lt @ Lt.T @ A_VEC)
    assert_unbiased(mvn_exp, make_mvn, MVN, exact, est, key)


def test_mvn_batched(key):
    theta = {"loc": jnp.array([[0.2, -0.4], [1.0, 0.3]]),
             "tril": jnp.array([[[1.0, 0.0], [0.5, 0.7]], [[0.6, 0.0], [-0.2, 0.9]]])}
    make = lambda t: nd.MultivariateNormal(t["loc"], scale_tril=jnp.tril(t["tril"]))  # noqa

    def exact(t):
        Lt = jnp.tril(t["tril"])
        return jnp.sum((t["loc"] - C) ** 2) + jnp.sum(Lt ** 2)
    assert_unbiased(sq, make, theta, exact, stochbp.fourier(), key)


# ---------------------------------------------------------------- Delta
def test_delta_fourier_equals_backprop(key):
    f = lambda z: jnp.sum(jnp.sin(z) * z ** 2)  # noqa: E731
    v = jnp.array([0.3, -1.2])
    g = jax.grad(lambda v: stochbp.expectation(f, nd.Delta(v), key,
                                               estimator=stochbp.fourier(),
                                               num_samples=3))(v)
    np.testing.assert_array_equal(g, jax.grad(f)(v))
    gp = jax.grad(lambda v: stochbp.expectation(f, nd.Delta(v), key,
                                                estimator=stochbp.pathwise()))(v)
    np.testing.assert_allclose(gp, jax.grad(f)(v), rtol=1e-14)


# ---------------------------------------------------------------- Laplace
LAPLACE = {"loc": jnp.array([0.5, -1.0]), "scale": jnp.array([0.6, 0.3])}
make_laplace = lambda t: nd.Laplace(t["loc"], t["scale"])  # noqa: E731


@pytest.mark.parametrize("est", [stochbp.fourier(order=2)] + CONTINUOUS,
                         ids=lambda e: e.name)
def test_laplace_square(est, key):
    exact = lambda t: jnp.sum((t["loc"] - C) ** 2 + 2 * t["scale"] ** 2)  # noqa: E731
    assert_unbiased(sq, make_laplace, LAPLACE, exact, est, key)


@pytest.mark.parametrize("est", [stochbp.fourier(order=24), stochbp.pathwise(),
                                 stochbp.score_function()], ids=lambda e: e.name)
def test_laplace_cos(est, key):
    # E[cos z] = cos(mu) / (1 + b^2); Eq. 19 converges for b < 1, truncation b^26 ~ 0.
    exact = lambda t: jnp.sum(jnp.cos(t["loc"]) / (1 + t["scale"] ** 2))  # noqa: E731
    assert_unbiased(cos_sum, make_laplace, LAPLACE, exact, est, key)


def test_laplace_fourier_exponential(key):
    eps = jnp.array([0.5, -1.5])  # |eps| < 1/b
    f = lambda z: jnp.sum(jnp.exp(eps * z))  # noqa: E731
    exact = lambda t: jnp.sum(jnp.exp(eps * t["loc"]) / (1 - (t["scale"] * eps) ** 2))  # noqa
    assert_unbiased(f, make_laplace, LAPLACE, exact, stochbp.fourier_exponential(eps), key)


# ---------------------------------------------------------------- Gamma family
GAMMA = {"k": jnp.array([2.0, 0.7, 5.0]), "rate": jnp.array([1.5, 3.0, 0.8])}
make_gamma = lambda t: nd.Gamma(t["k"], t["rate"])  # noqa: E731


def gamma_square(k, rate):
    return jnp.sum((k / rate - C) ** 2 + k / rate ** 2)


def gamma_exp(k, rate):
    return jnp.sum((1 + EPS / rate) ** (-k))


@pytest.mark.parametrize("est", [stochbp.fourier(order=2), stochbp.fourier(order=6)]
                         + CONTINUOUS, ids=lambda e: e.name)
def test_gamma_square(est, key):
    assert_unbiased(sq, make_gamma, GAMMA, lambda t: gamma_square(t["k"], t["rate"]), est,
                    key)


@pytest.mark.parametrize("est", [stochbp.fourier(order=24), stochbp.fourier_exponential(-EPS),
                                 stochbp.pathwise(), stochbp.score_function()],
                         ids=lambda e: e.name)
def test_gamma_exponential(est, key):
    # Eq. 20 on exp(-eps z) converges geometrically (ratio eps / rate <= 0.61 here), with
    # alternating terms: the truncation error is below the first omitted term,
    # k eps (eps / rate)^24 E[f] <= 2e-5 E[f], under 1e-3 standard errors (order 24 and
    # order 40 means differ by at most 6e-4 standard errors at this seed; 40 took 2x longer
    # to compile).
    assert_unbiased(exp_decay, make_gamma, GAMMA, lambda t: gamma_exp(t["k"], t["rate"]),
                    est, key)


@pytest.mark.parametrize("est", [stochbp.fourier(order=2)] + CONTINUOUS[:2],
                         ids=lambda e: e.name)
def test_exponential_square(est, key):
    theta = jnp.array([1.5, 0.4])
    assert_unbiased(sq, nd.Exponential, theta,
                    lambda r: gamma_square(jnp.ones_like(r), r), est, key)


@pytest.mark.parametrize("est", [stochbp.fourier(order=30), stochbp.fourier_exponential(-EPS),
                                 stochbp.pathwise()], ids=lambda e: e.name)
def test_chi2_exponential(est, key):
    theta = jnp.array([3.0, 1.0])  # df; Chi2(df) = Gamma(df/2, rate 1/2)
    exact = lambda df: gamma_exp(df / 2, 0.5 * jnp.ones_like(df))  # noqa: E731
    if isinstance(est, type(stochbp.fourier())):
        # Eq. 20 here converges slowly: E f^(n) = (-eps)^n E f and mu = 2, so the terms
        # of d/d df are (1/2) (-eps mu)^n / n E f with eps mu = 0.98. Truncated at
        # order N the rule is unbiased for sum_{n<=N}, which misses about 1.3% of the
        # gradient at N = 30 (~3 standard errors at 2000 draws): test against the
        # truncated sum itself (the full sum is -log(1 + eps mu) E f, the exact rule).
        n = jnp.arange(1, est.order + 1)
        head = jnp.sum((-EPS * 2.0) ** n / n)
        exact = 0.5 * head * (1 + 2.0 * EPS) ** (-theta / 2)
    assert_unbiased(exp_decay, nd.Chi2, theta, exact, est, key)


# ---------------------------------------------------------------- Beta, Dirichlet
BETA = {"a": jnp.array([6.0, 9.0]), "b": jnp.array([7.0, 5.0])}
make_beta = lambda t: nd.Beta(t["a"], t["b"])  # noqa: E731


def beta_square(a, b):
    m = a / (a + b)
    v = a * b / ((a + b) ** 2 * (a + b + 1))
    return jnp.sum((m - C) ** 2 + v)


@pytest.mark.parametrize("est", CONTINUOUS[:3], ids=lambda e: e.name)
def test_beta_baselines(est, key):
    assert_unbiased(sq, make_beta, BETA, lambda t: beta_square(t["a"], t["b"]), est, key)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_beta_fourier_matches_truncated_series(order, key):
    """The truncated Eq. 21 against its exact truncated value (f(z) = z)."""
    ga, gb = beta_truncated_gradient(BETA["a"], BETA["b"], order)
    ref = {"a": ga, "b": gb}
    assert_unbiased(jnp.sum, make_beta, BETA, None or ref, stochbp.fourier(order=order), key,
                    num_samples=8)


def test_beta_series_is_biased_against_exact():
    """Documented behaviour: the truncated series is not the exact gradient."""
    a, b = BETA["a"], BETA["b"]
    exact_a = b / (a + b) ** 2
    for order in (1, 2, 3, 4):
        ga, _ = beta_truncated_gradient(a, b, order)
        assert np.all(np.abs(ga - exact_a) > 1e-3 * np.abs(exact_a)), order


DIR = jnp.array([[4.0, 5.0, 6.0], [7.0, 3.0, 5.0]])


def dirichlet_f(z):
    return jnp.sum(z[..., 0] ** 2 + z[..., 1])


def dirichlet_exact(alpha):
    a0 = jnp.sum(alpha, -1)
    m0 = alpha[..., 0] / a0
    second = alpha[..., 0] * (alpha[..., 0] + 1) / (a0 * (a0 + 1))
    return jnp.sum(second + alpha[..., 1] / a0) + 0 * m0.sum()


@pytest.mark.parametrize("est", CONTINUOUS[:3], ids=lambda e: e.name)
def test_dirichlet_baselines(est, key):
    assert_unbiased(dirichlet_f, nd.Dirichlet, DIR, dirichlet_exact, est, key)


@pytest.mark.parametrize("order", [1, 2])
def test_dirichlet_fourier_matches_truncated_series(order, key):
    """f(z) = z_0: the same closed form as Beta(alpha_0, sum of the others)."""
    alpha = DIR
    rest = alpha.sum(-1) - alpha[:, 0]
    ga, gb = beta_truncated_gradient(alpha[:, 0], rest, order)
    ref = jnp.stack([ga, gb, gb], axis=-1)  # every other alpha_k acts like beta
    assert_unbiased(lambda z: jnp.sum(z[:, 0]), nd.Dirichlet, alpha, ref,
                    stochbp.fourier(order=order), key, num_samples=8)


# ---------------------------------------------------------------- Bernoulli
W = jnp.array([0.7, -1.3, 0.4])


def bern_f(z):
    z = z.astype(jnp.float64)
    return jnp.sin(z @ W) + z[0] * z[1] - 0.5 * z[2]


def bernoulli_exact(p):
    states = jnp.array([[(i >> k) & 1 for k in range(3)] for i in range(8)])
    probs = jnp.prod(jnp.where(states == 1, p, 1 - p), axis=1)
    return jnp.sum(probs * jax.vmap(bern_f)(states))


@pytest.mark.parametrize("est", [stochbp.fourier(), stochbp.score_function(),
                                 stochbp.score_function(baseline="leave_one_out")],
                         ids=lambda e: e.name)
@pytest.mark.parametrize("param", ["probs", "logits"])
def test_bernoulli_enumeration(est, param, key):
    p = jnp.array([0.2, 0.55, 0.9])
    if param == "probs":
        theta, make, exact = p, (lambda t: nd.Bernoulli(probs=t)), bernoulli_exact
    else:
        theta = jnp.log(p) - jnp.log1p(-p)
        make = lambda t: nd.Bernoulli(logits=t)  # noqa: E731
        exact = lambda t: bernoulli_exact(jax.nn.sigmoid(t))  # noqa: E731
    assert_unbiased(bern_f, make, theta, exact, est, key)


def test_bernoulli_single_bit_is_exact(key):
    f = lambda z: jnp.sum(jnp.cos(3.0 * z))  # noqa: E731
    exact = jax.grad(lambda p: jnp.sum(p * jnp.cos(3.0) + (1 - p)))(jnp.array([0.3]))
    for k in jax.random.split(key, 5):
        g = jax.grad(lambda p: stochbp.expectation(f, nd.Bernoulli(probs=p), k,
                                                   estimator=stochbp.fourier()))(
            jnp.array([0.3]))
        np.testing.assert_allclose(g, exact, rtol=1e-14)


# ---------------------------------------------------------------- Categorical
V = jnp.array([[0.5, -1.0, 2.0], [1.5, 0.2, -0.7]])


def cat_f(z):
    vals = V[jnp.arange(2), z]
    return jnp.sin(vals[0] * vals[1]) + vals[0]


def categorical_exact(probs):
    total = 0.0
    for a in range(3):
        for b in range(3):
            total += probs[0, a] * probs[1, b] * cat_f(jnp.array([a, b]))
    return total


@pytest.mark.parametrize("est", [stochbp.fourier(), stochbp.score_function(),
                                 stochbp.score_function(baseline="leave_one_out"),
                                 stochbp.score_function(baseline=2.0)],
                         ids=lambda e: e.name)
@pytest.mark.parametrize("param", ["probs", "logits"])
def test_categorical_enumeration(est, param, key):
    probs = jnp.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    if param == "probs":
        theta, make, exact = probs, (lambda t: nd.Categorical(probs=t)), categorical_exact
    else:
        theta = jnp.log(probs)
        make = lambda t: nd.Categorical(logits=t)  # noqa: E731
        exact = lambda t: categorical_exact(jax.nn.softmax(t, -1))  # noqa: E731
    assert_unbiased(cat_f, make, theta, exact, est, key)


def test_categorical_single_variable_is_exact(key):
    probs = jnp.array([[0.2, 0.5, 0.3]])
    f = lambda z: jnp.sum(V[0, z] ** 2)  # noqa: E731
    exact = jax.grad(lambda p: jnp.sum(p[0] * V[0] ** 2))(probs)
    g = jax.grad(lambda p: stochbp.expectation(f, nd.Categorical(probs=p), key,
                                               estimator=stochbp.fourier()))(probs)
    np.testing.assert_allclose(g, exact, rtol=1e-14)


# ---------------------------------------------------------------- moving-average baseline
def test_moving_average_baseline_is_unbiased(key):
    est = stochbp.score_function(baseline="moving_average", decay=0.8)
    theta = NORMAL
    exact = jax.grad(lambda t: jnp.sum((t["loc"] - C) ** 2 + t["scale"] ** 2))(theta)

    def step(state, k):
        def loss(t):
            return stochbp.expectation_with_state(sq, make_normal(t), k, state,
                                                  estimator=est, num_samples=2)
        g, new_state = jax.grad(loss, has_aux=True)(theta)
        return new_state, g

    _, grads = jax.lax.scan(step, est.init(sq, make_normal(theta), key),
                            jax.random.split(key, 3000))
    for name in theta:
        g = grads[name][50:]  # after the average has warmed up
        mean, se = g.mean(0), g.std(0, ddof=1) / np.sqrt(g.shape[0])
        assert np.all(np.abs(mean - exact[name]) < 4 * se), (name, mean, exact[name], se)
    plain = stochbp.diagnostics.gradient_stats(sq, make_normal, theta, key,
                                               estimator=stochbp.score_function(),
                                               num_samples=2, num_draws=3000,
                                               batch_size=None)
    # the baseline must reduce the variance of the location gradient
    assert np.all(grads["loc"][50:].var(0) < plain.variance["loc"])


# ---------------------------------------------------------------- Eq. 23 on Normal and Delta
def test_normal_fourier_exponential(key):
    eps = jnp.array([0.5, -1.5, 0.0])  # eps = 0 takes the limit K'(0) = mu
    f = lambda z: jnp.sum(jnp.exp(eps * z)) + 0.7 * z[2]  # noqa: E731  (linear in z_2)

    def exact(t):
        return jnp.sum(jnp.exp(eps * t["loc"] + 0.5 * (eps * t["scale"]) ** 2)) \
            + 0.7 * t["loc"][2]
    assert_unbiased(f, make_normal, NORMAL, exact, stochbp.fourier_exponential(eps), key)


def test_delta_fourier_exponential_is_backprop(key):
    f = lambda z: jnp.sum(jnp.exp(0.4 * z))  # noqa: E731
    v = jnp.array([0.3, -1.2])
    g = jax.grad(lambda v: stochbp.expectation(f, nd.Delta(v), key,
                                               estimator=stochbp.fourier_exponential(0.4)))(v)
    np.testing.assert_allclose(g, jax.grad(f)(v), rtol=1e-12)


# ---------------------------------------------------------------- GRG (gamma family)
@pytest.mark.parametrize("f, exact", [(sq, gamma_square), (exp_decay, gamma_exp)],
                         ids=["square", "exp"])
def test_grg_gamma(f, exact, key):
    assert_unbiased(f, make_gamma, GAMMA, lambda t: exact(t["k"], t["rate"]),
                    stochbp.grg(), key)


def test_grg_exponential_and_chi2(key):
    assert_unbiased(sq, nd.Exponential, jnp.array([1.5, 0.4]),
                    lambda r: gamma_square(jnp.ones_like(r), r), stochbp.grg(), key)
    assert_unbiased(exp_decay, nd.Chi2, jnp.array([3.0, 1.0]),
                    lambda df: gamma_exp(df / 2, 0.5 * jnp.ones_like(df)), stochbp.grg(), key)


def test_grg_value_is_monte_carlo_mean(key):
    d = nd.Gamma(jnp.array([2.0, 0.5]), 1.5)
    v = stochbp.expectation(sq, d, key, estimator=stochbp.grg(), num_samples=5)
    z = stochbp.family_of(d).sample(d, key, 5)  # every estimator draws through the family
    np.testing.assert_allclose(v, jnp.mean(jax.vmap(sq)(z)), rtol=1e-12)
