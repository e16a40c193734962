"""Measure-valued (weak-derivative) gradients and the moving-average baseline options."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest

import stochbp

THETA = (jnp.array([0.3, -1.0, 0.8]), jnp.array([0.7, 1.5, 0.4]))


def _normal(theta):
    return nd.Normal(theta[0], theta[1])


def _f(z):  # not a polynomial: the Fourier rule would need infinitely many derivatives
    return jnp.sum(jnp.sin(z) + z ** 2)


def _exact(theta):
    mu, sigma = theta
    return jnp.sum(jnp.sin(mu) * jnp.exp(-sigma ** 2 / 2) + mu ** 2 + sigma ** 2)


@pytest.mark.parametrize("coupled", [True, False], ids=["coupled", "independent"])
def test_measure_valued_is_unbiased_on_normal(coupled):
    check = stochbp.diagnostics.check_unbiased(
        _f, _normal, THETA, jax.random.key(11), estimator=stochbp.measure_valued(coupled),
        reference=_exact, num_draws=3000)
    assert check.passed, check.message


def test_coupling_lowers_the_variance_and_a_wrong_constant_is_caught():
    stats = {c: stochbp.diagnostics.gradient_stats(
        _f, _normal, THETA, jax.random.key(12), estimator=stochbp.measure_valued(c),
        num_draws=3000) for c in (True, False)}
    assert stats[True].total_variance < 0.7 * stats[False].total_variance
    # a decomposition constant off by sqrt(2 pi) is detected by the same check
    wrong = jax.tree_util.tree_map(lambda g: g * math.sqrt(2 * math.pi),
                                   jax.grad(_exact)(THETA))
    z = np.abs(np.asarray(stats[True].mean[0]) - np.asarray(wrong[0])) / \
        np.asarray(stats[True].stderr[0])
    assert z.max() > 4


def test_measure_valued_works_for_non_differentiable_f():
    step = lambda z: jnp.sum((z > 0).astype(z.dtype))  # noqa: E731
    exact = lambda th: jnp.sum(jax.scipy.stats.norm.cdf(th[0] / th[1]))  # noqa: E731
    check = stochbp.diagnostics.check_unbiased(
        step, _normal, THETA, jax.random.key(13), estimator=stochbp.measure_valued(),
        reference=exact, num_draws=3000)
    assert check.passed, check.message


def test_measure_valued_refuses_families_without_a_decomposition():
    with pytest.raises(ValueError, match="measure_valued.*Laplace.*Normal.*Poisson"):
        stochbp.expectation(_f, nd.Laplace(1.0, 1.0), jax.random.key(0),
                            estimator=stochbp.measure_valued())
    with pytest.raises(TypeError, match="coupled"):
        stochbp.measure_valued(coupled="yes")


@pytest.mark.parametrize("bias_correction", [True, False])
def test_moving_average_options_stay_unbiased(bias_correction):
    est = stochbp.score_function("moving_average", decay=0.5, bias_correction=bias_correction)
    f = lambda z: jnp.sum((z - 2.0) ** 2)  # noqa: E731
    theta = (jnp.array([0.5]), jnp.array([1.0]))
    exact = jax.grad(lambda th: jnp.sum((th[0] - 2.0) ** 2 + th[1] ** 2))(theta)

    def step(state, k):
        g, state = jax.grad(lambda th: stochbp.expectation_with_state(
            f, _normal(th), k, state, estimator=est, num_samples=2), has_aux=True)(theta)
        return state, (g, state.average)
    state0 = est.init(f, _normal(theta), jax.random.key(0))
    _, (grads, averages) = jax.lax.scan(step, state0, jax.random.split(jax.random.key(1),
                                                                       3000))
    for g, e in zip(grads, exact):
        g = np.asarray(g)[20:]
        assert np.all(np.abs(g.mean(0) - e) < 4 * g.std(0, ddof=1) / np.sqrt(len(g)))
    assert np.all(np.isfinite(np.asarray(averages)))


def test_bias_correction_changes_the_baseline_by_the_expected_amount():
    """After one update a = (1 - decay) mean f; the corrected baseline is a / (1 - decay),
    the raw one a, so the gradients differ by -(b_corrected - b_raw) mean_s grad log p."""
    f = lambda z: jnp.sum((z - 2.0) ** 2)  # noqa: E731
    theta = (jnp.array([0.5, 0.1]), jnp.array([1.0, 2.0]))
    key, decay = jax.random.key(3), 0.75
    state = stochbp.MovingAverageState(jnp.asarray(1.3), jnp.asarray(1, jnp.int32))
    grads = {}
    for corrected in (True, False):
        est = stochbp.score_function("moving_average", decay=decay,
                                     bias_correction=corrected)
        grads[corrected] = jax.grad(lambda th: stochbp.expectation_with_state(
            f, _normal(th), key, state, estimator=est, num_samples=3)[0])(theta)
    z = _normal(theta).sample(key, (3,))
    score = jax.grad(lambda th: jnp.mean(jnp.sum(_normal(th).log_prob(z), axis=1)))(theta)
    shift = 1.3 / (1 - decay) - 1.3
    for gc, gr, s in zip(grads[True], grads[False], score):
        np.testing.assert_allclose(gc - gr, -shift * s, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ delta-method CV
@pytest.mark.parametrize("inner", [stochbp.score_function(), stochbp.measure_valued()],
                         ids=["score_function", "measure_valued"])
def test_delta_method_is_unbiased_and_lowers_the_variance(inner):
    plain = stochbp.diagnostics.gradient_stats(_f, _normal, THETA, jax.random.key(14),
                                               estimator=inner, num_draws=3000)
    check = stochbp.diagnostics.check_unbiased(
        _f, _normal, THETA, jax.random.key(14), estimator=stochbp.delta_method(inner),
        reference=_exact, num_draws=3000)
    assert check.passed, check.message
    assert check.stats.total_variance < 0.2 * plain.total_variance


def test_delta_method_on_gamma_with_traced_coefficient():
    g = lambda z: jnp.sum(jnp.exp(0.3 * z))  # noqa: E731
    theta = (jnp.array([1.0, 2.0]),)
    make = lambda t: nd.Gamma(t[0], 1.0)  # noqa: E731
    exact = lambda t: jnp.sum((1 - 0.3) ** (-t[0]))  # noqa: E731
    check = stochbp.diagnostics.check_unbiased(
        g, make, theta, jax.random.key(15),
        estimator=stochbp.delta_method(stochbp.score_function(), jnp.asarray(0.8)),
        reference=exact, num_draws=3000)
    assert check.passed, check.message
    # f quadratic: the expansion is exact and the estimate has zero variance
    sq = lambda z: jnp.sum((z - 1.0) ** 2)  # noqa: E731
    stats = stochbp.diagnostics.gradient_stats(
        sq, make, theta, jax.random.key(16),
        estimator=stochbp.delta_method(stochbp.score_function()), num_draws=50)
    assert float(stats.total_variance) < 1e-16
    with pytest.raises(ValueError, match="delta_method.*Bernoulli"):
        stochbp.expectation(sq, nd.Bernoulli(probs=jnp.full(2, 0.3)), jax.random.key(0),
                            estimator=stochbp.delta_method(stochbp.score_function()))
    with pytest.raises(ValueError, match="coefficient"):
        stochbp.delta_method(stochbp.score_function(), float("nan"))


# ------------------------------------------------------------------ other families
def _poisson_f(n):  # integer samples; not smooth in any sense
    return jnp.sum(n ** 2 + jnp.sin(n))


def _poisson_exact(theta):
    lam = theta[0]
    return jnp.sum(lam + lam ** 2 + jnp.exp(lam * (math.cos(1.0) - 1.0))
                   * jnp.sin(lam * math.sin(1.0)))


def _gamma_f(z):
    return jnp.sum(z ** 2 + jnp.exp(-z))


def _gamma_exact(theta):  # E z^2 = k (k + 1) / beta^2, E exp(-z) = (beta / (beta + 1))^k
    k, beta = theta
    return jnp.sum(k * (k + 1) / beta ** 2 + (beta / (beta + 1.0)) ** k)


def _weibull_f(z):  # an indicator: no pathwise or Fourier rule can see it
    return jnp.sum(z ** 2 + (z > 1.0).astype(z.dtype))


def _weibull_exact(theta):  # E z^2 = lam^2 Gamma(1 + 2/k), P(z > 1) = exp(-(1/lam)^k)
    lam, k = theta
    return jnp.sum(lam ** 2 * jnp.exp(jax.scipy.special.gammaln(1.0 + 2.0 / k))
                   + jnp.exp(-(1.0 / lam) ** k))


FAMILIES = {
    # name: (make_dist, theta, f, exact, index of the block with a weak derivative)
    "Poisson": (lambda t: nd.Poisson(t[0]), (jnp.array([0.4, 2.5]),), _poisson_f,
                _poisson_exact, 0),
    "Gamma": (lambda t: nd.Gamma(t[0], t[1]), (jnp.array([0.8, 3.0]), jnp.array([1.5, 0.7])),
              _gamma_f, _gamma_exact, 1),
    "Weibull": (lambda t: nd.Weibull(t[0], t[1]), (jnp.array([0.8, 1.5]),
                                                   jnp.array([1.5, 3.0])),
                _weibull_f, _weibull_exact, 0),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_measure_valued_other_families_unbiased_and_coupling_helps(name):
    """Rate / scale by weak derivatives, shapes by the score at the same draws; the
    coupled estimate has the lower variance on the weak-derivative block."""
    make, theta, f, exact, block = FAMILIES[name]
    variance = {}
    for coupled in (True, False):
        check = stochbp.diagnostics.check_unbiased(
            f, make, theta, jax.random.key(21), estimator=stochbp.measure_valued(coupled),
            reference=exact, num_samples=2, num_draws=1000, batch_size=None)
        assert check.passed, check.message
        variance[coupled] = float(jnp.sum(check.stats.variance[block]))
    assert variance[True] < 0.8 * variance[False]


@pytest.mark.parametrize("name,estimator", [("Poisson", stochbp.score_function()),
                                            ("Weibull", stochbp.pathwise())])
def test_new_families_with_existing_estimators(name, estimator):
    make, theta, f, exact, _ = FAMILIES[name]
    f = f if name == "Poisson" else (lambda z: jnp.sum(z ** 2))  # pathwise: smooth f
    exact = exact if name == "Poisson" else (lambda t: jnp.sum(
        t[0] ** 2 * jnp.exp(jax.scipy.special.gammaln(1.0 + 2.0 / t[1]))))
    check = stochbp.diagnostics.check_unbiased(
        f, make, theta, jax.random.key(22), estimator=estimator, reference=exact,
        num_samples=2, num_draws=2000, batch_size=None)
    assert check.passed, check.message


def test_poisson_refusals_name_the_estimators_that_apply():
    d = nd.Poisson(jnp.array([1.0, 2.0]))
    for est in (stochbp.fourier(), stochbp.pathwise()):
        with pytest.raises(ValueError, match="Poisson.*measure_valued.*score_function"):
            stochbp.expectation(_poisson_f, d, jax.random.key(0), estimator=est)
    for est in (stochbp.arm(), stochbp.gumbel_softmax(0.5), stochbp.grg(),
                stochbp.delta_method(stochbp.score_function())):
        with pytest.raises(ValueError, match="does not support Poisson"):
            stochbp.expectation(_poisson_f, d, jax.random.key(0), estimator=est)
    with pytest.raises(ValueError, match="rate"):
        stochbp.expectation(_poisson_f, nd.Poisson(jnp.array([-1.0]), validate_args=False),
                            jax.random.key(0), estimator=stochbp.measure_valued())
    with pytest.raises(ValueError, match="fourier.*Weibull.*pathwise"):
        stochbp.expectation(_weibull_f, nd.Weibull(1.0, 2.0), jax.random.key(0),
                            estimator=stochbp.fourier(order=2))


# ------------------------------------------------------------------ estimated coefficient
def _sin2(z):  # the quadratic expansion is poor: the best coefficient is far from 1
    return jnp.sum(jnp.sin(2.0 * z))


def _sin2_exact(theta):
    mu, sigma = theta
    return jnp.sum(jnp.sin(2.0 * mu) * jnp.exp(-2.0 * sigma ** 2))


@pytest.mark.parametrize("inner", [stochbp.score_function(), stochbp.measure_valued()],
                         ids=["score_function", "measure_valued"])
def test_delta_method_estimated_coefficient_is_unbiased_and_beats_one(inner):
    """Unbiased with both inner estimators; with the score function (where beta = 1
    hurts most: 40-60x the plain variance on this f) the estimated beta is far better.
    A coefficient fitted on all draws, draw s included, fails the bias check (z = 19)."""
    check = stochbp.diagnostics.check_unbiased(
        _sin2, _normal, THETA, jax.random.key(23),
        estimator=stochbp.delta_method(inner, "estimated"), reference=_sin2_exact,
        num_samples=8, num_draws=1000, batch_size=None)
    assert check.passed, check.message
    if inner.name == "score_function":
        fixed = stochbp.diagnostics.gradient_stats(
            _sin2, _normal, THETA, jax.random.key(23),
            estimator=stochbp.delta_method(inner), num_samples=8, num_draws=500,
            batch_size=None)
        assert check.stats.total_variance < 0.3 * fixed.total_variance


def test_delta_method_estimated_coefficient_bad_usage():
    est = stochbp.delta_method(stochbp.score_function(), "estimated")
    with pytest.raises(ValueError, match="num_samples"):
        stochbp.expectation(_sin2, _normal(THETA), jax.random.key(0), estimator=est,
                            num_samples=2)
    for inner in (stochbp.score_function("leave_one_out"),
                  stochbp.score_function("moving_average")):
        with pytest.raises(ValueError, match="estimated.*one draw at a time"):
            stochbp.expectation(_sin2, _normal(THETA), jax.random.key(0),
                                estimator=stochbp.delta_method(inner, "estimated"),
                                num_samples=4)
    with pytest.raises(ValueError, match="coefficient"):
        stochbp.delta_method(stochbp.score_function(), "optimal")
