"""Nothing silently wrong (issue 11, library part): invalid values under jit give NaN,
overflowing series orders are refused, bad dtypes and baselines are refused."""
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest

import stochbp

KEY = jax.random.key(0)
F32 = jnp.float32  # the suite runs in float64 (conftest); these probes are about float32
SQ = lambda z: jnp.sum(z ** 2)  # noqa: E731
LIN = lambda z: jnp.sum(z * 1.0)  # noqa: E731


def _jit_value_and_grad(f, make, estimator, num_samples=4):
    return jax.jit(jax.value_and_grad(lambda th: stochbp.expectation(
        f, make(th), KEY, estimator=estimator, num_samples=num_samples)))


def _all_nan(tree):
    return all(bool(np.all(np.isnan(x))) for x in jax.tree_util.tree_leaves(tree))


def _all_finite(tree):
    return all(bool(np.all(np.isfinite(x))) for x in jax.tree_util.tree_leaves(tree))


INVALID_UNDER_JIT = {
    # name: (f, make_dist(theta), estimator, invalid theta, valid theta)
    "normal scale -1, pathwise": (SQ, lambda s: nd.Normal(0.0, s), stochbp.pathwise(),
                                  jnp.array(-1.0), jnp.array(1.0)),
    "normal scale -1, fourier": (SQ, lambda s: nd.Normal(0.0, s), stochbp.fourier(),
                                 jnp.array(-1.0), jnp.array(1.0)),
    "normal scale -1, score": (SQ, lambda s: nd.Normal(0.0, s), stochbp.score_function(),
                               jnp.array(-1.0), jnp.array(1.0)),
    "bernoulli probs 1.5": (LIN, lambda p: nd.Bernoulli(probs=p), stochbp.fourier(),
                            jnp.array([1.5, 0.3]), jnp.array([0.5, 0.3])),
    "categorical probs sum 0.6": (LIN, lambda p: nd.Categorical(probs=p), stochbp.fourier(),
                                  jnp.array([0.3, 0.3]), jnp.array([0.4, 0.6])),
    "categorical probs sum 0.6, arsm": (LIN, lambda p: nd.Categorical(probs=p),
                                        stochbp.arsm(), jnp.array([0.3, 0.3]),
                                        jnp.array([0.4, 0.6])),
    "categorical probs sum 0.6, unordered_set": (
        LIN, lambda p: nd.Categorical(probs=p), stochbp.unordered_set(2),
        jnp.array([0.3, 0.3]), jnp.array([0.4, 0.6])),
    "categorical probs sum 0.6, rao_blackwell_topk": (
        LIN, lambda p: nd.Categorical(probs=p), stochbp.rao_blackwell_topk(1),
        jnp.array([0.3, 0.3]), jnp.array([0.4, 0.6])),
    "fourier_exponential outside the CGF domain": (
        lambda z: jnp.sum(jnp.exp(2.0 * z)), lambda r: nd.Gamma(1.0, r),
        stochbp.fourier_exponential(2.0), jnp.array(1.0), jnp.array(3.0)),
    "covariance not positive definite": (
        SQ, lambda c: nd.MultivariateNormal(jnp.zeros(2), covariance_matrix=c),
        stochbp.fourier(), jnp.array([[1.0, 2.0], [2.0, 1.0]]), jnp.eye(2)),
    "mixture weight exactly 0": (
        SQ, lambda p: nd.MixtureSameFamily(nd.Categorical(probs=p),
                                           nd.Normal(jnp.array([0.0, 3.0]), 1.0)),
        stochbp.pathwise(), jnp.array([1.0, 0.0]), jnp.array([0.5, 0.5])),
}


@pytest.mark.parametrize("case", list(INVALID_UNDER_JIT))
def test_invalid_parameters_under_jit_give_nan_value_and_gradient(case):
    f, make, est, bad, good = INVALID_UNDER_JIT[case]
    fn = _jit_value_and_grad(f, make, est)
    value, grad = fn(bad)
    assert _all_nan(value) and _all_nan(grad), (value, grad)
    value, grad = fn(good)  # the same compiled function is finite on valid values
    assert _all_finite(value) and _all_finite(grad), (value, grad)


def test_invalid_parameters_under_vmap_give_nan_only_where_invalid():
    fn = jax.vmap(jax.value_and_grad(lambda s, k: stochbp.expectation(
        SQ, nd.Normal(0.0, s), k, estimator=stochbp.pathwise(), num_samples=2)))
    values, grads = fn(jnp.array([1.0, -1.0]), jax.random.split(KEY, 2))
    assert np.isfinite(values[0]) and np.isfinite(grads[0])
    assert np.isnan(values[1]) and np.isnan(grads[1])


@pytest.mark.parametrize("probs", [jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])])
@pytest.mark.parametrize("est", [stochbp.pathwise(), stochbp.score_function()],
                         ids=["pathwise", "score_function"])
def test_exact_zero_mixture_weight_is_refused_eagerly(probs, est):
    mix = nd.MixtureSameFamily(nd.Categorical(probs=probs),
                               nd.Normal(jnp.array([0.0, 3.0]), 1.0))
    with pytest.raises(ValueError, match=r"mixing_distribution\.probs.*exact zero"):
        stochbp.expectation(SQ, mix, KEY, estimator=est)


def test_mixture_logits_minus_inf_is_refused():
    mix = nd.MixtureSameFamily(nd.Categorical(logits=jnp.array([0.0, -jnp.inf]),
                                              validate_args=False),
                               nd.Normal(jnp.array([0.0, 3.0]), 1.0))
    with pytest.raises(ValueError, match=r"mixing_distribution\.logits"):
        stochbp.expectation(SQ, mix, KEY, estimator=stochbp.pathwise())


# ------------------------------------------------------------------ series orders
def test_order_beyond_float32_factorials_is_refused_before_any_work():
    with pytest.raises(ValueError, match=r"order=35 .*float32.*order <= 34"):
        stochbp.expectation(SQ, nd.Gamma(F32(1.0), F32(1.0)), KEY,
                            estimator=stochbp.fourier(order=35))
    with pytest.raises(ValueError, match=r"order=171 .*float64.*order <= 170"):
        stochbp.expectation(SQ, nd.Gamma(1.0, 1.0), KEY, estimator=stochbp.fourier(order=171))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"order=1000000"):
        stochbp.expectation(SQ, nd.Gamma(1.0, 1.0), KEY,
                            estimator=stochbp.fourier(order=10 ** 6))
    with pytest.raises(ValueError, match=r"order=300"):
        stochbp.expectation(SQ, nd.Laplace(0.0, 1.0), KEY,
                            estimator=stochbp.fourier(order=300))
    assert time.perf_counter() - start < 5.0


def test_order_34_still_works_in_float32():
    # jitted: the same float32 program as op by op, compiled once (op by op it took 4x
    # the CPU, compiling each of the sampler's and the series' operations separately)
    value, grad = _jit_value_and_grad(SQ, lambda k: nd.Gamma(k, F32(1.0)),
                                      stochbp.fourier(order=34))(F32(1.0))
    assert grad.dtype == F32 and value.dtype == F32  # float64 coefficients do not leak
    assert np.isfinite(value) and np.isfinite(grad)


def test_series_in_log_space_is_exact_where_coefficients_overflow_float32():
    """c_16 = b^16 / 8 = 1.25e47 overflows float32; the Laplace rule is computed in log
    space, so the scale gradient of E z^2 (= 4 b, zero variance: f'' = 2) is exact."""
    g = jax.grad(lambda b: stochbp.expectation(
        SQ, nd.Laplace(F32(0.0), b), KEY, estimator=stochbp.fourier(order=16),
        num_samples=4))(F32(1000.0))
    assert g.dtype == jnp.float32 and float(g) == pytest.approx(4000.0, rel=1e-5)


def test_gamma_scale_100_at_order_20_is_unbiased_in_float32():
    """c_20 = k 100^20 / 20 overflows float32; E z^2 = k mu^2 (1 + k)."""
    theta = (jnp.array([1.0, 2.0], F32), jnp.array([100.0, 50.0], F32))
    check = stochbp.diagnostics.check_unbiased(
        SQ, lambda th: nd.Gamma(th[0], 1.0 / th[1]), theta, KEY,
        estimator=stochbp.fourier(order=20), num_samples=4, num_draws=1000,
        reference=lambda th: jnp.sum(th[0] * th[1] ** 2 * (1 + th[0])), rtol=1e-4)
    assert check.passed, check.message


def test_overflowing_user_cgf_coefficients_are_refused_naming_order():
    cgf = lambda d, t: -d.concentration * jnp.log1p(-t / d.rate)  # noqa: E731
    # scale 1e20: c_20 = 1e400 / 20 overflows float64 (the suite's precision)
    with pytest.raises(ValueError, match=r"order=20.*overflow float64 from n = 16.*"
                       r"order <= 15"):
        stochbp.expectation(SQ, nd.Gamma(1.0, 1e-20), KEY,
                            estimator=stochbp.fourier(order=20, cgf=cgf))


# ------------------------------------------------------------------ dtypes and numbers
def test_complex_parameters_are_refused_naming_the_parameter():
    with pytest.raises(TypeError, match="parameter loc must be real"):
        stochbp.expectation(SQ, nd.Normal(jnp.ones(2) * (1 + 1j), 1.0), KEY,
                            estimator=stochbp.pathwise())


@pytest.mark.parametrize("f", [lambda z: jnp.sum(z > 0),
                               lambda z: jnp.sum(z).astype(jnp.int32),
                               lambda z: jnp.any(z > 0)], ids=["sum of bools", "int32",
                                                              "bool"])
@pytest.mark.parametrize("est", [stochbp.fourier(), stochbp.pathwise(),
                                 stochbp.score_function()],
                         ids=["fourier", "pathwise", "score_function"])
def test_non_float_f_is_refused(f, est):
    with pytest.raises(TypeError, match="f must return a real floating-point scalar"):
        stochbp.expectation(f, nd.Normal(jnp.ones(2), 1.0), KEY, estimator=est)


def test_integer_f_of_discrete_samples_is_exact_and_bool_is_refused():
    """Differences of integer values are exact: an int-valued f of bits is fine."""
    theta = jnp.array([0.2, 0.7])
    g = jax.grad(lambda p: stochbp.expectation(jnp.sum, nd.Bernoulli(probs=p), KEY,
                                               estimator=stochbp.fourier()))(theta)
    np.testing.assert_allclose(g, [1.0, 1.0])
    with pytest.raises(TypeError, match="f must return a real floating-point scalar"):
        stochbp.expectation(lambda z: jnp.any(z > 0), nd.Bernoulli(probs=theta), KEY,
                            estimator=stochbp.fourier())


@pytest.mark.parametrize("n", [3, np.int64(3), np.int32(3), jnp.int32(3), jnp.int64(3)],
                         ids=["int", "np.int64", "np.int32", "jnp.int32", "jnp.int64"])
def test_every_integer_scalar_is_accepted(n):
    v = stochbp.expectation(SQ, nd.Gamma(1.0, 1.0), KEY, estimator=stochbp.fourier(order=n),
                            num_samples=n)
    assert np.isfinite(v)


@pytest.mark.parametrize("bad", [3.0, True, jnp.array([3]), "3", 0, -1])
def test_non_integers_are_refused_for_num_samples(bad):
    with pytest.raises(ValueError, match="num_samples"):
        stochbp.expectation(SQ, nd.Normal(0.0, 1.0), KEY, estimator=stochbp.pathwise(),
                            num_samples=bad)


@pytest.mark.parametrize("baseline", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_baselines_are_refused(baseline):
    with pytest.raises(ValueError, match="baseline"):
        stochbp.score_function(baseline=baseline)


def test_masked_categorical_logits_stay_finite_under_jit():
    """-inf logits (a masked class) are valid, eagerly and under jit; +inf is not."""
    fn = _jit_value_and_grad(LIN, lambda l: nd.Categorical(logits=l), stochbp.fourier())
    value, grad = fn(jnp.array([0.0, 1.0, -jnp.inf]))
    assert _all_finite(value) and _all_finite(grad) and float(grad[2]) == 0.0
    value, grad = fn(jnp.array([0.0, jnp.inf, 1.0]))
    assert _all_nan(value) and _all_nan(grad)
