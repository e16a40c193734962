"""Rules that use derivatives of f of order >= 2 refuse an f with a kink or a jump.

Theorem 1 holds with distributional derivatives; at a kink of f (relu, abs, clip) the
second derivative holds a Dirac delta that Taylor mode does not see, so fourier() on a
Normal and mixture_marginal(component_rule="fourier") would return a biased gradient
(for relu: a scale gradient of exactly 0). stochbp._src.smoothness proves f smooth
enough from its jaxpr, or the estimator raises before any work.
"""
import jax
import jax.numpy as jnp
import numpyro.distributions as nd
import pytest
from jax.scipy.stats import norm

import stochbp
from stochbp._src.smoothness import jump_order

from helpers import assert_unbiased

X2 = jnp.array([0.3, -0.2])

KINKED = {  # f: (primitive named in the message, jump order)
    "relu": (lambda z: jnp.sum(jax.nn.relu(z)), "max", 1),
    "abs": (lambda z: jnp.sum(jnp.abs(z)), "abs", 1),
    "clip": (lambda z: jnp.sum(jnp.clip(z, -1.0, 1.0)), "max", 1),
    "maximum": (lambda z: jnp.sum(jnp.maximum(z, 0.5)), "max", 1),
    "floor": (lambda z: jnp.sum(jnp.floor(z)), "floor", 0),
    "where_jump": (lambda z: jnp.sum(jnp.where(z > 0, 1.0, 0.0)), "select_n", 0),
    "where_kink": (lambda z: jnp.sum(jnp.where(z > 0, z, 0.0)), "select_n", 1),
    "sort": (lambda z: jnp.sort(z)[0], "sort", 1),
    "argmax_gather": (lambda z: z[jnp.argmax(z)] ** 2, "dynamic_slice", 0),
    "relu_in_scan": (lambda z: jax.lax.scan(lambda c, x: (0.5 * c + jax.nn.relu(x), None),
                                            0.0, z)[0], "max", 1),
    "hard_tanh": (lambda z: jnp.sum(jax.nn.hard_tanh(z)), "select_n", 1),
    "elu_alpha2": (lambda z: jnp.sum(jax.nn.elu(z, alpha=2.0)), "select_n", 1),
    # the inner where keeps log away from 0, the outer one still jumps (log -> -inf)
    "guarded_log": (lambda z: jnp.sum(jnp.where(z > 0, jnp.log(jnp.where(z > 0, z, 1.0)),
                                                0.0)), "select_n", 0),
    # C1 and C2 pieces: the first non-zero Taylor coefficient of the branches'
    # difference at the boundary (elu: both sides x + x^2 / 2 ... up to order 1)
    # a NaN guard on a value that is NaN for z < 0: f jumps at 0
    "nan_guard_log": (lambda z: jnp.sum(jnp.where(jnp.isnan(jnp.log(z)), 0.0,
                                                  jnp.log1p(z))), "select_n", 0),
    "elu": (lambda z: jnp.sum(jax.nn.elu(z)), "select_n", 2),
    "sparse_plus": (lambda z: jnp.sum(jax.nn.sparse_plus(z)), "select_n", 2),
    "cubic_piece": (lambda z: jnp.sum(jnp.where(z > 1.0, (z - 1.0) ** 3, 0.0)),
                    "select_n", 3),
}


def _log_joint(z):
    """A model's log joint with z = (w0, w1) as latents: Normal, Gamma and Beta priors
    and Bernoulli(logits) / Categorical(logits) / Normal likelihoods."""
    lp = nd.Normal(0.0, 1.0).log_prob(z).sum()
    lp += nd.Gamma(2.0, 1.0).log_prob(jnp.exp(z[0])) + nd.Beta(2.0, 3.0).log_prob(
        jax.nn.sigmoid(z[1]))
    lp += nd.Gamma(jnp.exp(z[1]), 1.0).log_prob(1.5)
    logits = jnp.array([[1.0, -2.0], [0.5, 0.3], [-1.0, 0.7]]) @ z
    lp += nd.Bernoulli(logits=logits).log_prob(jnp.array([1.0, 0.0, 1.0])).sum()
    lp += nd.Categorical(logits=logits).log_prob(2)
    lp += nd.Normal(z[0] * z[1], jnp.exp(z[1])).log_prob(0.4)
    return lp


SMOOTH = {
    "softplus": lambda z: jnp.sum(jax.nn.softplus(z)),
    "log_sigmoid": lambda z: jnp.sum(jax.nn.log_sigmoid(z)),
    "sigmoid": lambda z: jnp.sum(jax.nn.sigmoid(z)),
    "tanh": lambda z: jnp.sum(jnp.tanh(z)),
    "logaddexp": lambda z: jnp.logaddexp(z[0], z[1]) + jnp.sum(jnp.logaddexp(z, 1.0)),
    "logsumexp": lambda z: jax.nn.logsumexp(3.0 * z),
    "log_softmax": lambda z: jax.nn.log_softmax(z)[1],
    "silu_gelu": lambda z: jnp.sum(jax.nn.silu(z) + jax.nn.gelu(z)),
    "xlogy": lambda z: jnp.sum(jax.scipy.special.xlogy(2.0, jnp.exp(z))),
    "stop_gradient_max": lambda z: jnp.sum(z * jax.lax.stop_gradient(jnp.max(z))),
    "dead_sign": lambda z: (jnp.sign(z), jnp.sum(z ** 2))[1],
    "nan_guard": lambda z: jnp.sum(jnp.where(jnp.isnan(z), 0.0, z ** 2)),
    "scan_tanh": lambda z: jax.lax.scan(lambda c, x: (0.5 * c + jnp.tanh(x), None),
                                        0.0, z)[0],
    "log_joint": _log_joint,
    # stochbp's own fast softplus (experiments/discrete_models.py)
    "softplus_by_hand": lambda z: jnp.sum(0.5 * (z + jnp.abs(z))
                                          + jnp.log1p(jnp.exp(-jnp.abs(z)))),
}


@pytest.mark.parametrize("name", sorted(KINKED))
def test_jump_order_of_nonsmooth_functions(name):
    f, prim, order = KINKED[name]
    jump, why = jump_order(f, X2, 4)
    assert jump == order and f"`{prim}`" in why


@pytest.mark.parametrize("name", sorted(SMOOTH))
def test_smooth_functions_are_proved_smooth(name):
    jump, why = jump_order(SMOOTH[name], X2, 8)
    assert jump == float("inf"), why


def test_where_c1_has_jump_order_two():
    f = lambda z: jnp.sum(jnp.where(z > 0, z ** 2, 0.0))  # noqa: E731
    assert jump_order(f, X2, 2)[0] >= 2
    assert jump_order(f, X2, 5)[0] == 2


def _normal(p):
    return nd.Normal(p[0], p[1])


THETA = jnp.array([0.3, 0.8])
KEY = jax.random.PRNGKey(0)


def _grad(f, make_dist, theta, est, n=4, key=KEY):
    """The estimate, jitted (the smoothness check runs while tracing)."""
    return jax.jit(jax.grad(lambda p: stochbp.expectation(
        f, make_dist(p), key, estimator=est, num_samples=n)))(theta)


@pytest.mark.parametrize("name", ["relu", "abs", "clip", "floor", "where_jump"])
def test_fourier_normal_refuses(name):
    f, prim, order = KINKED[name]
    with pytest.raises(ValueError, match=f"fourier: f is not smooth enough.*`{prim}`"):
        _grad(lambda z: f(z[None]), _normal, THETA, stochbp.fourier())
    fix = "score_function" if order == 0 else "pathwise"
    with pytest.raises(ValueError, match=fix):  # eagerly too
        jax.grad(lambda p: stochbp.expectation(lambda z: f(z[None]), _normal(p), KEY,
                                               estimator=stochbp.fourier()))(THETA)


def _mixture(p):
    return nd.MixtureSameFamily(nd.Categorical(logits=p[0]), nd.Normal(p[1], p[2]))


MIX_THETA = (jnp.array([0.3, -0.2]), jnp.array([-0.5, 1.0]), jnp.array([0.7, 1.2]))
MIX_FOURIER = stochbp.mixture_marginal("uniform", component_rule="fourier")


@pytest.mark.parametrize("name", ["relu", "abs", "clip", "floor", "where_jump"])
def test_mixture_fourier_refuses(name):
    f, prim, _ = KINKED[name]
    with pytest.raises(ValueError, match=r"component_rule='fourier'\): f is not smooth.*"
                                         f"`{prim}`.*smooth='assume'"):
        _grad(lambda z: f(z[None]), _mixture, MIX_THETA, MIX_FOURIER)


def test_mixture_pathwise_rule_is_not_checked():
    g = _grad(jax.nn.relu, _mixture, MIX_THETA, stochbp.mixture_marginal("uniform"))
    assert all(jnp.all(jnp.isfinite(x)) for x in g)


def test_opt_out_gives_the_biased_number():
    """smooth='assume' runs the rule: relu'' = 0 almost everywhere, so the scale
    gradient is exactly 0, where the exact one is phi(mu / sigma) > 0."""
    g = _grad(jax.nn.relu, _normal, THETA, stochbp.fourier(smooth="assume"), n=16)
    assert g[1] == 0.0 and norm.pdf(THETA[0] / THETA[1]) > 0.3
    est = stochbp.mixture_marginal("uniform", component_rule="fourier", smooth="assume")
    assert _grad(jax.nn.relu, _mixture, MIX_THETA, est)[2].tolist() == [0.0, 0.0]
    assert "smooth='assume'" in est.name and "smooth='assume'" in \
        stochbp.fourier(smooth="assume").name


def test_smooth_f_accepted_by_fourier_and_mixture():
    g = _grad(SMOOTH["log_joint"], lambda p: nd.Normal(p[0], p[1] * jnp.ones(2)), THETA,
              stochbp.fourier(), n=1)
    assert jnp.all(jnp.isfinite(g))
    g = _grad(lambda z: jax.nn.logsumexp(jnp.stack([z, -z])), _mixture, MIX_THETA,
              MIX_FOURIER)
    assert all(jnp.all(jnp.isfinite(x)) for x in g)


def _relu_squared_mean(p):
    """E[max(x, 0)^2] for x ~ N(mu, s^2) = (mu^2 + s^2) Phi(a) + mu s phi(a), a = mu/s."""
    mu, s = p[0], p[1]
    a = mu / s
    return (mu ** 2 + s ** 2) * norm.cdf(a) + mu * s * norm.pdf(a)


def test_c1_piecewise_accepted_at_order_two_and_unbiased():
    """where(x > 0, x^2, 0) is C1: its second derivative jumps but has no delta, so
    the order-2 rule (Price) is exact in expectation."""
    f = lambda z: jnp.where(z > 0, z ** 2, 0.0)  # noqa: E731
    assert_unbiased(f, _normal, THETA, _relu_squared_mean, stochbp.fourier(),
                    jax.random.PRNGKey(1), num_samples=4, num_draws=2000)


@pytest.mark.parametrize("order", [3, 4])
def test_c1_piecewise_refused_at_higher_order_on_laplace(order):
    f = lambda z: jnp.where(z > 0, z ** 2, 0.0)  # noqa: E731
    laplace = lambda p: nd.Laplace(p[0], p[1])  # noqa: E731
    with pytest.raises(ValueError, match="derivative of order 2 jumps"):
        _grad(f, laplace, THETA, stochbp.fourier(order=order))
    assert jnp.all(jnp.isfinite(_grad(f, laplace, THETA, stochbp.fourier(order=2))))


def test_order_one_rules_and_discrete_families_are_not_checked():
    relu = lambda z: jnp.sum(jax.nn.relu(z))  # noqa: E731
    step = lambda z: jnp.sum(jnp.where(z > 0, 1.0, 0.0))  # noqa: E731
    mvn = lambda p: nd.MultivariateNormal(p, jnp.eye(2))  # noqa: E731
    assert jnp.all(jnp.isfinite(_grad(relu, mvn, THETA, stochbp.fourier(order=1))))
    with pytest.raises(ValueError, match="`max`"):
        _grad(relu, mvn, THETA, stochbp.fourier())
    delta = lambda p: nd.Delta(p)  # noqa: E731
    assert jnp.all(jnp.isfinite(_grad(relu, delta, THETA, stochbp.fourier())))
    bern = lambda p: nd.Bernoulli(logits=p)  # noqa: E731
    g = _grad(lambda z: step(z - 0.5) + relu(z), bern, THETA, stochbp.fourier())
    # exact: E[f] = 2 sum_j sigmoid(l_j), a full enumeration per coordinate
    assert jnp.allclose(g, 2 * jax.nn.sigmoid(THETA) * (1 - jax.nn.sigmoid(THETA)))
    cat = lambda p: nd.Categorical(logits=jnp.stack([p, -p]))  # noqa: E731
    assert jnp.all(jnp.isfinite(_grad(lambda k: jnp.floor(k * 0.5).sum() + 0.0, cat,
                                      THETA, stochbp.fourier())))


def test_smooth_option_validated():
    with pytest.raises(ValueError, match="smooth must be one of.*got smooth='maybe'"):
        stochbp.fourier(smooth="maybe")
    with pytest.raises(ValueError, match="smooth must be one of"):
        stochbp.mixture_marginal(smooth=True)


def _model(x, act):
    import numpyro
    z = numpyro.sample("z", nd.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.sample("x", nd.Normal(act(z[0]) + z[1], 1.0).expand([3]).to_event(1), obs=x)


def _guide(x, act):
    import numpyro
    numpyro.sample("z", nd.Normal(numpyro.param("m", jnp.zeros(2)), 1.0).to_event(1))


def test_elbo_site_with_fourier_is_checked_too():
    """stochbp.infer hands each site's learning signal (the model's log joint) to the
    estimator's surrogate, which runs the check."""
    import stochbp.infer as si
    elbo = si.ELBO(estimators={"z": stochbp.fourier()})
    loss = jax.jit(jax.grad(lambda p, act: elbo.loss(jax.random.key(0), p, _model, _guide,
                                                      jnp.array([0.5, -1.0, 2.0]), act)),
                   static_argnums=1)
    assert jnp.all(jnp.isfinite(loss({"m": jnp.zeros(2)}, jax.nn.softplus)["m"]))
    with pytest.raises(ValueError, match=r"`max` inside relu at .*test_smoothness.py"):
        loss({"m": jnp.zeros(2)}, jax.nn.relu)


# Review false negatives: each was accepted (J >= 2) before, and fourier() gave a
# biased gradient (e.g. expon.pdf, sqrt(z**2): sigma-gradient 0 vs 0.773).
_expon_lp = jax.scipy.stats.expon.logpdf
REFUSED_NOW = {  # f: jump order (a lower bound, at need = 4)
    # D1: a support guard where(inside, v, +-inf / nan) made finite again
    "expon_pdf": (lambda z: jnp.sum(jax.scipy.stats.expon.pdf(z)), 0),
    "uniform_pdf": (lambda z: jnp.sum(jax.scipy.stats.uniform.pdf(z)), 0),
    "exp_of_guard": (lambda z: jnp.sum(jnp.exp(jnp.where(z > 0, 0.0, -jnp.inf))), 0),
    "logsumexp_guard": (lambda z: jax.nn.logsumexp(jnp.stack([norm.logpdf(z),
                                                              _expon_lp(z)])), 0),
    "tanh_guard": (lambda z: jnp.sum(jnp.tanh(_expon_lp(z))), 0),
    "nansum_guard": (lambda z: jnp.nansum(jnp.where(z > 0, 1.0, jnp.nan)), 0),
    "nan_to_num_guard": (lambda z: jnp.sum(jnp.nan_to_num(_expon_lp(z))), 0),
    "isnan_of_guard": (lambda z: jnp.sum((lambda v: jnp.where(jnp.isnan(v), 0.0, v))(
        jnp.where(z > 0, z, jnp.nan))), 0),
    "isfinite_of_guard": (lambda z: jnp.sum(jnp.isfinite(
        jnp.where(z > 0, z, jnp.inf)).astype(z.dtype)), 0),
    "guard_in_scan": (lambda z: jnp.exp(jax.lax.scan(
        lambda c, x: (c + jnp.where(x > 0, x, -jnp.inf), None), 0.0, z)[0]), 0),
    # D2: sqrt of a value of unknown sign is not >= 0 (NaN below 0)
    "where_sqrt_pos": (lambda z: jnp.sum(jnp.where(jnp.sqrt(z) > 0, 1.0, 0.0)), 0),
    "where_sqrt_ge": (lambda z: jnp.sum(jnp.where(jnp.sqrt(z) >= 0, z, -z)), 0),
    # D3: the boundary test is relative, per order
    "tiny_step": (lambda z: 1e12 * jnp.sum(jnp.where(z > 0, 1e-12, 0.0)), 0),
    "tiny_kink": (lambda z: 1e10 * jnp.sum(jnp.where(z > 0, 1e-10 * z, 0.0)), 1),
    # D4: a root of a value >= 0 that reaches 0 (|z| in disguise)
    "sqrt_square": (lambda z: jnp.sum(jnp.sqrt(z ** 2)), 1),
    "pow_half_square": (lambda z: jnp.sum(jnp.power(z ** 2, 0.5)), 1),
    "norm_1d": (lambda z: jnp.linalg.norm(z[:1]), 1),
    "abs_cubed_by_pow": (lambda z: jnp.sum(jnp.power(z ** 2, 1.5)), 3),
    "inverse_square": (lambda z: jnp.sum(1.0 / (z * z)), 0),
    # a square whose sign the rules lose (pad), and a root of a value of unknown sign
    "sqrt_padded_square": (lambda z: jnp.sum(jnp.sqrt(jnp.pad(z ** 2, 1))), 1),
    "sqrt_unknown_sign": (lambda z: jnp.sum(jnp.sqrt(1.0 + z)), 1),
}


@pytest.mark.parametrize("name", sorted(REFUSED_NOW))
def test_review_false_negatives_are_refused(name):
    f, order = REFUSED_NOW[name]
    jump, why = jump_order(f, X2, 4)
    assert jump == order, why


def test_guard_refusal_names_the_guard_and_fourier_refuses():
    jump, why = jump_order(REFUSED_NOW["expon_pdf"][0], X2, 2)
    assert "`exp`" in why and "support guard" in why
    with pytest.raises(ValueError, match="fourier: f is not smooth.*`exp`"):
        _grad(lambda z: REFUSED_NOW["expon_pdf"][0](z[None]), _normal, THETA,
              stochbp.fourier())
    with pytest.raises(ValueError, match="fourier: f is not smooth.*`sqrt`"):
        _grad(lambda z: REFUSED_NOW["sqrt_square"][0](z[None]), _normal, THETA,
              stochbp.fourier())


STILL_SMOOTH = {
    # a support guard whose -inf reaches f's output (visible): still accepted
    "expon_logpdf": lambda z: jnp.sum(_expon_lp(z)) + 2.0 * jnp.sum(_expon_lp(z) * 3.0),
    "sqrt_positive": lambda z: jnp.sum(jnp.sqrt(1.0 + z ** 2) + jnp.sqrt(jnp.exp(z))),
    "checkpoint": lambda z: jnp.sum(jax.checkpoint(jnp.sin)(z)),
    "logsumexp_where": lambda z: jax.nn.logsumexp(z, where=jnp.array([True, False])),
    "mvn_log_prob": lambda z: nd.MultivariateNormal(
        z, covariance_matrix=jnp.array([[2.0, 0.3], [0.3, 1.0]])).log_prob(X2),
    "studentt_lognormal_poisson": lambda z: jnp.sum(
        nd.StudentT(3.0, z, 1.0).log_prob(X2) + nd.LogNormal(z, 1.0).log_prob(1.5)
        + nd.Poisson(jnp.exp(z)).log_prob(2.0) + nd.Exponential(jnp.exp(z)).log_prob(.5)),
}


@pytest.mark.parametrize("name", sorted(STILL_SMOOTH))
def test_smooth_functions_stay_accepted(name):
    jump, why = jump_order(STILL_SMOOTH[name], X2, 8)
    assert jump == float("inf"), why


def test_norm_of_k_coordinates_has_jump_order_k():
    """|z| on R^k: its derivatives of order m are O(|z|^(1-m)), locally integrable and
    free of a Dirac part at 0 iff m <= k, so J = k."""
    z3 = jnp.zeros(3)
    assert jump_order(jnp.linalg.norm, X2, 4)[0] == 2
    assert jump_order(jnp.linalg.norm, z3, 4)[0] == 3
    # jnp.std of n values: a sum of n - 1 squares (|z0 - z1| / 2 for n = 2)
    assert jump_order(jnp.std, X2, 4)[0] == 1
    assert jump_order(jnp.std, z3, 4)[0] == 2
    # the same coordinate twice is still one coordinate: refused
    assert jump_order(lambda z: jnp.sqrt(z[0] ** 2 + z[0] ** 2), X2, 2)[0] == 1


def test_no_rule_message():
    f = lambda z: jnp.sum(jnp.fft.fft(z).real)  # noqa: E731
    with pytest.raises(ValueError, match=r"could not prove f smooth at `fft`.*no smoothness "
                                         r"rule for this primitive.*smooth='assume'"):
        _grad(lambda z: f(jnp.stack([z, z])), _normal, THETA, stochbp.fourier())


def test_checkpoint_is_entered_by_the_check_and_by_taylor_mode():
    """jax.checkpoint (primitive remat2): same estimate as without it (Taylor mode,
    Laplace order 4)."""
    laplace = lambda p: nd.Laplace(p[0], p[1])  # noqa: E731
    est = stochbp.fourier(order=4)
    plain = _grad(jnp.sin, laplace, THETA, est, n=8)
    assert jnp.array_equal(_grad(jax.checkpoint(jnp.sin), laplace, THETA, est, n=8), plain)
