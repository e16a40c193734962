"""Gaussian mixtures (Graves): pathwise gradients against closed forms, the implicit
function theorem, the Gaussian reparameterisation at K = 1, and bad input."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest
from jax.scipy.stats import norm
from scipy import stats

import stochbp
from helpers import assert_unbiased

LOGITS = jnp.array([0.3, -0.5, 0.1])
LOC = jnp.array([[0.5, -1.0], [1.5, 0.3], [-0.7, 0.8]])
SCALE = jnp.array([[0.8, 1.2], [0.5, 0.7], [1.1, 0.6]])
TRIL = jnp.array([[[0.8, 0.0], [0.4, 0.9]],
                  [[0.5, 0.0], [-0.3, 0.7]],
                  [[1.1, 0.0], [0.2, 0.6]]])
A = jnp.array([0.3, -0.4])


def mixing(weights, param):
    if param == "probs":
        return nd.Categorical(probs=weights)
    return nd.Categorical(logits=weights)


def make_univariate(param):
    return lambda t: nd.MixtureSameFamily(mixing(t["w"], param),
                                          nd.Normal(t["loc"], t["scale"]))


def make_diagonal(param):
    return lambda t: nd.MixtureSameFamily(
        mixing(t["w"], param), nd.Independent(nd.Normal(t["loc"], t["scale"]), 1))


def make_full(param):
    return lambda t: nd.MixtureSameFamily(
        mixing(t["w"], param), nd.MultivariateNormal(t["loc"], scale_tril=jnp.tril(t["tril"])))


def weights(t, param):
    """Mixing weights as numpyro's MixtureSameFamily uses them (probs are normalised)."""
    w = t["w"]
    return w / jnp.sum(w, -1, keepdims=True) if param == "probs" else jax.nn.softmax(w, -1)


def theta(variant, param):
    w = jax.nn.softmax(LOGITS) if param == "probs" else LOGITS
    if variant == "univariate":
        return {"w": w, "loc": LOC[:, 0], "scale": SCALE[:, 0]}
    if variant == "diagonal":
        return {"w": w, "loc": LOC, "scale": SCALE}
    return {"w": w, "loc": LOC, "tril": TRIL}


def covariances(t, variant):
    if variant == "full":
        L = jnp.tril(t["tril"])
        return L @ jnp.swapaxes(L, -1, -2)
    scale = t["scale"] if variant == "diagonal" else t["scale"][:, None]
    return jax.vmap(jnp.diag)(scale ** 2)


def exact_square(variant, param):
    """E[sum_d x_d^2] = sum_j pi_j (|mu_j|^2 + tr Sigma_j)."""
    def exact(t):
        loc = t["loc"] if variant != "univariate" else t["loc"][:, None]
        cov = covariances(t, variant)
        per = jnp.sum(loc ** 2, -1) + jnp.trace(cov, axis1=-2, axis2=-1)
        return jnp.sum(weights(t, param) * per)
    return exact


def exact_exponential(variant, param):
    """E[exp(a^T x)] = sum_j pi_j exp(a^T mu_j + a^T Sigma_j a / 2)."""
    a = A if variant != "univariate" else A[:1]

    def exact(t):
        loc = t["loc"] if variant != "univariate" else t["loc"][:, None]
        cov = covariances(t, variant)
        quad = jnp.einsum("i,kij,j->k", a, cov, a)
        return jnp.sum(weights(t, param) * jnp.exp(loc @ a + 0.5 * quad))
    return exact


MAKERS = {"univariate": make_univariate, "diagonal": make_diagonal, "full": make_full}


def square(x):
    return jnp.sum(x ** 2)


def exponential(x):
    return jnp.exp(jnp.sum(A[:jnp.size(x)] * x))


# ---------------------------------------------------------------- unbiasedness
def both(x):
    return square(x) + exponential(x)


@pytest.mark.parametrize("variant", ["univariate", "diagonal", "full"])
@pytest.mark.parametrize("f, exact", [(square, exact_square),
                                      (exponential, exact_exponential)],
                         ids=["square", "exp"])
def test_pathwise_unbiased_logits(variant, f, exact, key):
    assert_unbiased(f, MAKERS[variant]("logits"), theta(variant, "logits"),
                    exact(variant, "logits"), stochbp.pathwise(), key, num_draws=1536)


@pytest.mark.parametrize("variant", ["univariate", "diagonal", "full"])
def test_pathwise_unbiased_probs(variant, key):
    """Both closed forms at once (f = sum x^2 + exp(a^T x)), weights given as probs."""
    sq, ex = exact_square(variant, "probs"), exact_exponential(variant, "probs")
    assert_unbiased(both, MAKERS[variant]("probs"), theta(variant, "probs"),
                    lambda t: sq(t) + ex(t), stochbp.pathwise(), key, num_draws=1536)


@pytest.mark.parametrize("variant", ["diagonal"])
def test_pathwise_beats_score_function(variant, key):
    """Per-draw gradient variance, summed over every parameter: pathwise (Graves)
    against the score function on E[sum x^2], 4 samples a draw."""
    make, t = MAKERS[variant]("logits"), theta(variant, "logits")
    out = {}
    for est in (stochbp.pathwise(), stochbp.score_function()):
        out[est.name] = stochbp.diagnostics.gradient_stats(
            square, make, t, key, estimator=est, num_samples=4, num_draws=1024)
    for leaf in ("w", "loc"):
        assert jnp.sum(out["pathwise"].variance[leaf]) < \
            jnp.sum(out["score_function"].variance[leaf]), leaf
    assert out["pathwise"].total_variance < 0.5 * out["score_function"].total_variance


def test_batched_parameters(key):
    """Batch shape (2,): the mixing weights and the components both batched."""
    w = jnp.stack([LOGITS, -LOGITS])
    t = {"w": w, "loc": jnp.stack([LOC, LOC[::-1]]), "scale": jnp.stack([SCALE, 2 * SCALE])}
    make = make_diagonal("logits")

    def exact(t):
        per = jnp.sum(t["loc"] ** 2 + t["scale"] ** 2, -1)  # (2, K)
        return jnp.sum(jax.nn.softmax(t["w"], -1) * per)
    assert make(t).batch_shape == (2,)
    x = stochbp.mixture_rsample(make(t), key, (5,))
    assert x.shape == (5, 2, 2)
    assert_unbiased(square, make, t, exact, stochbp.pathwise(), key, num_draws=1024)


# ---------------------------------------------------------------- exactness per sample
def conditional_cdfs(x, t, variant):
    """G(x) = (F_1(x_1), F_2(x_2 | x_1), ...) from the marginal Gaussians directly."""
    cov = covariances(t, variant)
    loc = t["loc"]
    log_pi = jnp.log(weights(t, "logits"))
    out = []
    for d in range(x.shape[0]):
        if d == 0:
            log_w, mean, var = log_pi, loc[:, 0], cov[:, 0, 0]
        else:
            s11, s21 = cov[:, :d, :d], cov[:, d, :d]
            log_w = log_pi + jax.vmap(
                lambda m, s: jax.scipy.stats.multivariate_normal.logpdf(x[:d], m, s))(
                loc[:, :d], s11)
            gain = jnp.linalg.solve(s11, s21[..., None])[..., 0]  # (K, d)
            mean = loc[:, d] + jnp.sum(gain * (x[:d] - loc[:, :d]), -1)
            var = cov[:, d, d] - jnp.sum(gain * s21, -1)
        out.append(jnp.sum(jax.nn.softmax(log_w) * norm.cdf((x[d] - mean) / jnp.sqrt(var))))
    return jnp.stack(out)


@pytest.mark.parametrize("variant", ["diagonal", "full"])
def test_matches_implicit_function_theorem(variant, key):
    """dx/dtheta = -(dG/dx)^{-1} dG/dtheta for the map of conditional CDFs, per sample,
    including every earlier coordinate's influence (3 components, 3 dimensions, a batch
    of 2 mixtures with their own parameters). Forward mode agrees with reverse mode."""
    rng = np.random.default_rng(3)
    t = {"w": jnp.asarray(rng.normal(size=(2, 3))),
         "loc": jnp.asarray(rng.normal(size=(2, 3, 3)))}
    if variant == "diagonal":
        t["scale"] = jnp.asarray(rng.uniform(0.5, 1.5, (2, 3, 3)))
    else:
        low = np.tril(rng.normal(size=(2, 3, 3, 3)) * 0.4, -1)
        t["tril"] = jnp.asarray(low + np.eye(3) * rng.uniform(0.5, 1.2, (2, 3, 1, 3)))
    make = MAKERS[variant]("logits")
    sampler = lambda t: stochbp.mixture_rsample(make(t), key, (4,))  # noqa: E731
    # one compiled program for the draws and their Jacobian, one for G's Jacobians
    xs, jac = jax.jit(lambda t: (sampler(t), jax.jacrev(sampler)(t)))(t)  # xs: (4, 2, 3)
    G = jax.jacfwd(functools.partial(conditional_cdfs, variant=variant), argnums=(0, 1))
    G_batch = jax.jit(jax.vmap(G, in_axes=(0, None)))
    for b in range(2):
        tb = jax.tree_util.tree_map(lambda a: a[b], t)
        gx, gt = G_batch(xs[:, b], tb)
        for name in t:
            ref = -jnp.linalg.solve(gx, gt[name].reshape(4, 3, -1)).reshape(gt[name].shape)
            if name == "tril":
                ref = jnp.tril(ref)  # only the lower triangle is a parameter
            np.testing.assert_allclose(jac[name][:, b, :, b], ref, atol=1e-10,
                                       err_msg=name)
            np.testing.assert_allclose(jac[name][:, 1 - b, :, b], 0.0, atol=1e-14)
    if variant == "full":
        fwd = jax.jit(jax.jacfwd(sampler))(t)
        for name in t:
            np.testing.assert_allclose(fwd[name], jac[name], atol=1e-12)


def test_univariate_matches_generic_implicit_rule(key):
    """The 1-D mixture's derivative equals -(dF/dtheta)/f with numpyro's own mixture CDF."""
    make, t = make_univariate("logits"), theta("univariate", "logits")
    sampler = lambda t: stochbp.mixture_rsample(make(t), key, (6,))  # noqa: E731
    xs, jac = jax.jit(lambda t: (sampler(t), jax.jacrev(sampler)(t)))(t)
    dcdf = jax.jacrev(lambda t: make(t).cdf(xs))(t)
    density = jnp.exp(make(t).log_prob(xs))
    for name in t:
        np.testing.assert_allclose(jac[name], -dcdf[name] / density[:, None], rtol=1e-9,
                                   atol=1e-12)


@pytest.mark.parametrize("variant", ["univariate", "diagonal", "full"])
def test_single_component_is_gaussian_reparameterisation(variant, key):
    """K = 1: every sample's Jacobian equals that of mu + C eps with eps fixed."""
    t = {"w": jnp.zeros(1)}
    if variant == "univariate":
        t.update(loc=jnp.array([0.4]), scale=jnp.array([1.3]))
    elif variant == "diagonal":
        t.update(loc=jnp.array([[0.4, -0.2, 1.0]]), scale=jnp.array([[1.3, 0.5, 0.8]]))
    else:
        t.update(loc=jnp.array([[0.4, -0.2, 1.0]]),
                 tril=jnp.array([[[1.3, 0.0, 0.0], [0.4, 0.5, 0.0], [-0.2, 0.3, 0.8]]]))
    make = MAKERS[variant]("logits")
    xs = stochbp.mixture_rsample(make(t), key, (8,))
    if variant == "full":
        L = jnp.tril(t["tril"][0])
        eps = jax.scipy.linalg.solve_triangular(L, (xs - t["loc"][0]).T, lower=True).T
        gauss = lambda t: t["loc"][0] + eps @ jnp.tril(t["tril"][0]).T  # noqa: E731
    else:
        eps = (xs - t["loc"][0]) / t["scale"][0]
        gauss = lambda t: t["loc"][0] + t["scale"][0] * eps  # noqa: E731
    np.testing.assert_allclose(gauss(t), xs, rtol=1e-12, atol=1e-12)
    ours = jax.jit(jax.jacrev(lambda t: stochbp.mixture_rsample(make(t), key, (8,))))(t)
    ref = jax.jacrev(gauss)(t)
    np.testing.assert_allclose(ours["w"], 0.0, atol=1e-15)
    for name in ("loc", "scale", "tril"):
        if name in t:
            np.testing.assert_allclose(ours[name], ref[name], rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- the draws themselves
def test_univariate_draws_follow_the_mixture(key):
    d = make_univariate("logits")(theta("univariate", "logits"))
    x = np.asarray(stochbp.mixture_rsample(d, key, (4000,)))
    assert stats.kstest(x, lambda v: np.asarray(d.cdf(jnp.asarray(v)))).pvalue > 1e-3


@pytest.mark.parametrize("variant", ["diagonal", "full"])
def test_draws_have_the_mixture_moments(variant, key):
    t = theta(variant, "logits")
    d = MAKERS[variant]("logits")(t)
    x = stochbp.mixture_rsample(d, key, (20000,))
    pi = jax.nn.softmax(LOGITS)
    mean = pi @ LOC
    second = jnp.einsum("k,kij->ij", pi, covariances(t, variant) +
                        LOC[:, :, None] * LOC[:, None, :])
    se_mean = jnp.sqrt(jnp.diag(second - jnp.outer(mean, mean)) / x.shape[0])
    assert jnp.all(jnp.abs(x.mean(0) - mean) < 4 * se_mean)
    emp = jnp.einsum("si,sj->ij", x, x) / x.shape[0]
    assert jnp.allclose(emp, second, atol=0.12)


# ---------------------------------------------------------------- transformations
def test_jit_and_vmap(key):
    make, t = make_diagonal("logits"), theta("diagonal", "logits")

    def loss(t, k):
        return stochbp.expectation(square, make(t), k, estimator=stochbp.pathwise(),
                                   num_samples=16)
    grad = jax.jit(jax.grad(loss))
    keys = jax.random.split(key, 3)
    g_keys = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(t, keys)
    for name in t:
        np.testing.assert_allclose(g_keys[name][2], grad(t, keys[2])[name], rtol=1e-10)
    ts = jax.tree_util.tree_map(lambda a: jnp.stack([a, 1.1 * a]), t)
    g_params = jax.jit(jax.vmap(jax.grad(loss), in_axes=(0, None)))(ts, key)
    np.testing.assert_allclose(g_params["scale"][0], grad(t, key)["scale"], rtol=1e-10)
    value = loss(t, key)  # eagerly, outside jit
    np.testing.assert_allclose(value, jax.jit(loss)(t, key), rtol=1e-12)


def test_float32_unbiased(key):
    """The whole estimator in float32 (draws, conditionals, tangents)."""
    t = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), theta("full", "logits"))
    check = assert_unbiased(exponential, make_full("logits"), t,
                            exact_exponential("full", "logits"), stochbp.pathwise(), key,
                            num_draws=1024, rtol=1e-4)
    assert check.stats.mean["loc"].dtype == jnp.float32


# ---------------------------------------------------------------- bad input
NV = {"validate_args": False}


@pytest.mark.parametrize("make, name", [
    (lambda: nd.MixtureSameFamily(nd.Categorical(probs=jnp.array([0.5, -0.1, 0.6]), **NV),
                                  nd.Normal(LOC[:, 0], SCALE[:, 0])), "probs"),
    (lambda: nd.MixtureSameFamily(nd.Categorical(probs=jnp.array([0.5, 0.3, 0.3]), **NV),
                                  nd.Normal(LOC[:, 0], SCALE[:, 0])), "probs"),
    (lambda: nd.MixtureSameFamily(nd.Categorical(logits=jnp.array([0.0, jnp.nan, 1.0])),
                                  nd.Normal(LOC[:, 0], SCALE[:, 0])), "logits"),
    (lambda: nd.MixtureSameFamily(nd.Categorical(logits=LOGITS),
                                  nd.Normal(LOC[:, 0], jnp.array([1.0, 0.0, 1.0]), **NV)),
     "scale"),
    (lambda: nd.MixtureSameFamily(nd.Categorical(logits=LOGITS),
                                  nd.Independent(nd.Normal(LOC, -SCALE, **NV), 1)), "scale"),
    (lambda: nd.MixtureSameFamily(nd.Categorical(logits=LOGITS),
                                  nd.Normal(LOC[:, 0].at[1].set(jnp.inf), SCALE[:, 0])),
     "loc"),
    (lambda: nd.MixtureSameFamily(nd.Categorical(logits=LOGITS), nd.MultivariateNormal(
        LOC, scale_tril=TRIL.at[1, 1, 1].set(-0.7), **NV)), "scale_tril"),
    (lambda: nd.MixtureSameFamily(nd.Categorical(logits=LOGITS), nd.MultivariateNormal(
        LOC, covariance_matrix=jnp.array([[1.0, 2.0], [2.0, 1.0]]), **NV)),
     "positive definite"),
])
@pytest.mark.parametrize("entry", ["expectation", "mixture_rsample", "mixture_marginal"])
def test_invalid_parameters(make, name, entry, key):
    with pytest.raises(ValueError, match=name) as err:
        if entry == "expectation":
            stochbp.expectation(square, make(), key, estimator=stochbp.pathwise())
        elif entry == "mixture_marginal":
            stochbp.expectation(square, make(), key, estimator=stochbp.mixture_marginal(),
                                num_samples=3)
        else:
            stochbp.mixture_rsample(make(), key, (2,))
    assert "got" in str(err.value)


def test_invalid_parameters_under_grad(key):
    def loss(scale):
        d = nd.MixtureSameFamily(nd.Categorical(logits=LOGITS),
                                 nd.Normal(LOC[:, 0], scale, **NV))
        return stochbp.expectation(square, d, key, estimator=stochbp.pathwise())
    with pytest.raises(ValueError, match="component_distribution.scale"):
        jax.grad(loss)(jnp.array([1.0, -1.0, 1.0]))


def test_mismatched_component_count():
    """numpyro's constructor already rejects a mixing size that differs from the
    components' last batch dimension, naming both."""
    with pytest.raises((AssertionError, ValueError), match="mixture_size"):
        nd.MixtureSameFamily(nd.Categorical(logits=jnp.zeros(2)), nd.Normal(LOC[:, 0], 1.0))


def test_unsupported_components(key):
    gamma = nd.MixtureSameFamily(nd.Categorical(logits=LOGITS),
                                 nd.Gamma(jnp.ones(3), jnp.ones(3)))
    with pytest.raises(ValueError, match="component_distribution=Gamma"):
        stochbp.expectation(square, gamma, key, estimator=stochbp.pathwise())
    # the score function still works for any component family
    stochbp.expectation(square, gamma, key, estimator=stochbp.score_function())
    bad_gamma = nd.MixtureSameFamily(nd.Categorical(logits=LOGITS),
                                     nd.Gamma(-jnp.ones(3), jnp.ones(3), **NV))
    with pytest.raises(ValueError, match="concentration"):
        stochbp.expectation(square, bad_gamma, key, estimator=stochbp.score_function())
    with pytest.raises(ValueError, match="Fourier"):
        stochbp.expectation(square, make_univariate("logits")(theta("univariate", "logits")),
                            key, estimator=stochbp.fourier())


def test_mixture_rsample_arguments(key):
    d = make_univariate("logits")(theta("univariate", "logits"))
    with pytest.raises(ValueError, match="sample_shape"):
        stochbp.mixture_rsample(d, key, 5)
    with pytest.raises(ValueError, match="sample_shape"):
        stochbp.mixture_rsample(d, key, (-1,))
    with pytest.raises(TypeError, match="MixtureSameFamily"):
        stochbp.mixture_rsample(nd.Normal(0.0, 1.0), key, (2,))
    batched = nd.MixtureSameFamily(nd.Categorical(logits=jnp.zeros((4, 3))),
                                   nd.Independent(nd.Normal(LOC, SCALE), 1))
    assert stochbp.mixture_rsample(nd.Independent(batched, 1), key, (5,)).shape == (5, 4, 2)
    one_dim = nd.MixtureSameFamily(nd.Categorical(logits=LOGITS),
                                   nd.Independent(nd.Normal(LOC[:, :1], SCALE[:, :1]), 1))
    assert stochbp.mixture_rsample(one_dim, key, (5,)).shape == (5, 1)


# ---------------------------------------------------------------- mixture_marginal
# The component index summed out: unbiased against the same closed forms, for each
# allocation and noise option, 1-D / diagonal / full covariance, logits and probs.
MARGINAL_CASES = [
    ("univariate", "logits", stochbp.mixture_marginal()),
    ("diagonal", "probs", stochbp.mixture_marginal("uniform", common_noise=False)),
    ("full", "logits", stochbp.mixture_marginal("proportional", common_noise=False)),
    # Latin hypercube strata and antithetic pairs, with and without common noise (the
    # designs themselves are checked exactly in test_marginal_noise_designs_exact)
    ("diagonal", "probs", stochbp.mixture_marginal(noise="stratified")),
    ("diagonal", "logits", stochbp.mixture_marginal("uniform", noise="antithetic")),
    # the covariance by the Gaussian Fourier rule (Price), E[Hessian] / 2, per component
    ("univariate", "probs", stochbp.mixture_marginal(component_rule="fourier")),
    ("diagonal", "logits", stochbp.mixture_marginal(noise="stratified",
                                                    component_rule="fourier")),
    ("full", "probs", stochbp.mixture_marginal("uniform", noise="stratified",
                                               component_rule="fourier")),
    # the uniform allocation's own Latin hypercubes (5 draws for K = 3: sizes 2, 2, 1)
    ("diagonal", "logits", stochbp.mixture_marginal("uniform", noise="stratified")),
]


@pytest.mark.parametrize("variant, param, est", MARGINAL_CASES,
                         ids=[f"{v}-{p}-{e.allocation}-{e.common_noise}-{e.noise}-"
                              f"{e.component_rule}" for v, p, e in MARGINAL_CASES])
def test_marginal_unbiased(variant, param, est, key):
    """f = sum x^2 + exp(a^T x); 5 samples for K = 3 (the proportional allocation then
    places 2 of them by the weights)."""
    sq, ex = exact_square(variant, param), exact_exponential(variant, param)
    assert_unbiased(both, MAKERS[variant](param), theta(variant, param),
                    lambda t: sq(t) + ex(t), est, key, num_samples=5, num_draws=1000)


def test_marginal_batched(key):
    """A batch of 2 mixtures with their own weights (per-element shuffled slots and
    product importance weights)."""
    t = {"w": jnp.stack([LOGITS, -LOGITS]), "loc": jnp.stack([LOC, LOC[::-1]]),
         "scale": jnp.stack([SCALE, 2 * SCALE])}

    def exact(t):
        per = jnp.sum(t["loc"] ** 2 + t["scale"] ** 2, -1)
        return jnp.sum(jax.nn.softmax(t["w"], -1) * per)
    assert_unbiased(square, make_diagonal("logits"), t, exact, stochbp.mixture_marginal(),
                    key, num_samples=4, num_draws=1000)


def test_marginal_batched_fourier(key):
    """The batch of two mixtures with the Fourier component rule: every slot's Hessian
    pairs with its own component's scale (f = sum x^2 + exp(a^T x) over the batch,
    exact through the per-element closed forms)."""
    t = {"w": jnp.stack([LOGITS, -LOGITS]), "loc": jnp.stack([LOC, LOC[::-1]]),
         "scale": jnp.stack([SCALE, 0.5 * SCALE])}
    a = A[:LOC.shape[-1]]

    def f(x):
        return jnp.sum(x ** 2) + jnp.exp(jnp.sum(a * x[0]) - jnp.sum(a * x[1]))

    def exact(t):
        pi = jax.nn.softmax(t["w"], -1)
        sq = jnp.sum(pi * jnp.sum(t["loc"] ** 2 + t["scale"] ** 2, -1))
        # the exponential term factorises over the batch: E[exp(a.x0)] E[exp(-a.x1)]
        mgf = [jnp.sum(pi[b] * jnp.exp(s * t["loc"][b] @ a
                                       + 0.5 * (t["scale"][b] ** 2) @ (a ** 2)))
               for b, s in ((0, 1.0), (1, -1.0))]
        return sq + mgf[0] * mgf[1]
    assert_unbiased(f, make_diagonal("logits"), t, exact,
                    stochbp.mixture_marginal(component_rule="fourier"), key,
                    num_samples=4, num_draws=1000)


def test_marginal_batched_fourier_full_covariance(key):
    """A batch of three full-covariance mixtures (K = 2, D = 2) with the Fourier component
    rule, f = sum x^2 + exp(sum_b c_b . x_b) coupling the batch elements. Exact: the
    square term is sum_b sum_j pi_bj (|mu_bj|^2 + tr L_bj L_bj^T), and the batch elements
    are independent, so E exp(sum_b c_b . x_b) is the product over b of the mixtures'
    moment generating functions, sum_j pi_bj exp(c_b . mu_bj + c_b^T L_bj L_bj^T c_b / 2).
    The check has power: 4 standard errors stay under half of every gradient element
    but scale_tril's upper triangles (masked by tril: exactly 0)."""
    # components far apart in |mu|, so the weights' gradients stand out of the noise
    t = {"w": jnp.stack([LOGITS[:2], -LOGITS[1:], jnp.array([0.8, -0.6])]),
         "loc": jnp.array([[[1.5, -1.0], [0.6, 0.5]], [[-0.7, 0.4], [-1.6, 1.2]],
                           [[1.8, 0.9], [0.5, 0.7]]]),
         "tril": jnp.stack([TRIL[:2], TRIL[1:], 0.8 * TRIL[::2]])}
    c = jnp.array([[0.3, -0.4], [-0.5, 0.2], [0.4, 0.35]])

    def f(x):  # x: (3, 2)
        return jnp.sum(x ** 2) + jnp.exp(jnp.sum(c * x))

    def exact(t):
        pi = jax.nn.softmax(t["w"], -1)
        tril = jnp.tril(t["tril"])
        cov = tril @ jnp.swapaxes(tril, -1, -2)
        sq = jnp.sum(pi * (jnp.sum(t["loc"] ** 2, -1) + jnp.trace(cov, axis1=-2, axis2=-1)))
        mgf = jnp.sum(pi * jnp.exp(jnp.einsum("bd,bjd->bj", c, t["loc"])
                                   + 0.5 * jnp.einsum("bd,bjde,be->bj", c, cov, c)), -1)
        return sq + jnp.prod(mgf)
    check = assert_unbiased(f, make_full("logits"), t, exact,
                            stochbp.mixture_marginal(component_rule="fourier"), key,
                            num_samples=4, num_draws=1000)
    upper = np.triu(np.ones((2, 2), bool), 1)
    for name in t:
        g = np.asarray(check.reference[name])
        se = np.asarray(check.stats.stderr[name])
        keep = np.broadcast_to(~upper, g.shape) if name == "tril" else np.ones(g.shape, bool)
        assert np.all(g[~keep] == 0) and np.all(4 * se[keep] < 0.5 * np.abs(g[keep])), (
            name, g, se)


@pytest.mark.parametrize("variant", ["univariate", "diagonal", "full"])
def test_marginal_fourier_exact_for_quadratic(variant, key):
    """For a quadratic f the Hessian is constant, so the Fourier component rule gives
    the scales' (and scale_tril's) exact gradient on every draw, 2 pi_j sigma_j (2 pi_j
    L_j): equality, not a statistical check; the pathwise rule's differs draw by draw."""
    make, t = MAKERS[variant]("logits"), theta(variant, "logits")
    name = "tril" if variant == "full" else "scale"
    want = jax.grad(exact_square(variant, "logits"))(t)[name]

    def grads(est):  # three draws, one compiled program
        one = lambda k: jax.grad(lambda t: stochbp.expectation(  # noqa: E731
            square, make(t), k, estimator=est, num_samples=5))(t)[name]
        return jax.jit(jax.vmap(one))(jax.random.split(key, 3))
    for g in grads(stochbp.mixture_marginal(component_rule="fourier")):
        np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-12)
    assert not np.allclose(grads(stochbp.mixture_marginal())[0], want, rtol=1e-3)


def test_marginal_weights_gradient_is_shift_invariant(key):
    """For one mixture the weights' gradient is sum_j dpi_j fbar_j with every component
    drawn, so adding a constant to f changes it by sum_j dpi_j c = 0, draw for draw (the
    score function's would change by c * dlog pi_j)."""
    make, t = make_full("logits"), theta("full", "logits")

    def grads(c):
        return jax.grad(lambda t: stochbp.expectation(
            lambda x: square(x) + c, make(t), key, estimator=stochbp.mixture_marginal(),
            num_samples=7))(t)
    g0, g1 = grads(0.0), grads(1e3)
    for name in t:
        np.testing.assert_allclose(g1[name], g0[name], rtol=1e-9, atol=1e-9)


def test_marginal_float32_finite_and_unbiased(key):
    """float32 throughout; at K = D = 10 with full covariance (where Graves' rule is
    heavy-tailed) a gradient of 640 samples is finite."""
    t = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), theta("full", "logits"))
    check = assert_unbiased(exponential, make_full("logits"), t,
                            exact_exponential("full", "logits"),
                            stochbp.mixture_marginal(), key, num_samples=5,
                            num_draws=1000, rtol=1e-4)
    assert check.stats.mean["loc"].dtype == jnp.float32
    rng = np.random.default_rng(0)
    big = {"w": jnp.asarray(rng.normal(size=10), jnp.float32),
           "loc": jnp.asarray(rng.normal(size=(10, 10)), jnp.float32),
           "tril": jnp.asarray(np.tril(rng.normal(size=(10, 10, 10)) * 0.3, -1)
                               + np.eye(10) * rng.uniform(0.5, 1.2, (10, 1, 10)),
                               jnp.float32)}
    g = jax.grad(lambda t: stochbp.expectation(  # any non-finite sample would show
        square, make_full("logits")(t), key, estimator=stochbp.mixture_marginal(),
        num_samples=640))(big)
    for name in big:
        assert g[name].dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g[name]))), name


def _component_noise(noise, common, key, num=7, dim=3):
    """The standard normal noise of every draw, by component, in float32: K = 2
    unit-scale components at 0 and 10 (one mixture, uniform allocation: slot s is
    component s % 2), so eps_s = x_s - mu_(s % 2)."""
    loc = jnp.stack([jnp.zeros(dim, jnp.float32), jnp.full(dim, 10.0, jnp.float32)])
    d = nd.MixtureSameFamily(nd.Categorical(logits=jnp.zeros(2, jnp.float32)),
                             nd.Independent(nd.Normal(loc, jnp.float32(1.0)), 1))
    x, _, _ = stochbp._src.mixture.marginal_draws(d, key, num, "uniform", common, noise)
    assert x.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(x)))
    eps = x - loc[jnp.arange(num) % 2]
    return [np.asarray(eps[c::2], np.float64) for c in range(2)]


@pytest.mark.parametrize("common", [True, False])
def test_marginal_noise_designs_exact(common, key):
    """The designs themselves, exactly (float32): with n draws of a component,
    "stratified" puts one draw of every coordinate in each stratum [i/n, (i+1)/n) of
    Phi(eps), and "antithetic" gives draws 2m and 2m + 1 opposite noise (n odd: the
    last one alone); with common noise the two components (4 and 3 draws) share the
    antithetic base draws rank by rank, without it they do not."""
    for noise in ("stratified", "antithetic"):
        eps = _component_noise(noise, common, key)
        for e in eps:
            n = e.shape[0]
            if noise == "stratified":
                strata = np.floor(stats.norm.cdf(e) * n)
                np.testing.assert_array_equal(np.sort(strata, axis=0),
                                              np.broadcast_to(np.arange(n)[:, None], e.shape))
            else:
                np.testing.assert_allclose(e[1::2], -e[0:n - 1:2], atol=1e-5)
        if noise == "antithetic":
            assert np.allclose(eps[1], eps[0][:3], atol=1e-5) == common


@pytest.mark.parametrize("num, k", [(7, 2), (12, 3), (5, 3)])
def test_stratified_uniform_fast_path_equals_general_path(num, k, key):
    """With the uniform allocation and common noise, stratified noise takes one small
    Latin hypercube per component size; the general path (a sort of every slot and a
    count per component) gives the same draws, bit for bit, from the same key."""
    from stochbp._src import mixture as mx
    j, counts = mx._allocate("uniform", jnp.full((2, k), 1.0 / k), key, num)
    args = ("stratified", True, j, counts, jax.random.fold_in(key, 1), num, 2, 4,
            jnp.float32)
    fast = mx._noise(*args, uniform=True)
    general = mx._noise(*args, uniform=False)
    np.testing.assert_array_equal(np.asarray(fast), np.asarray(general))


@pytest.mark.parametrize("rule", ["pathwise", "fourier"])
def test_marginal_nan_under_jit(rule, key):
    """Under jit the scale cannot be read: a negative one gives NaN value and gradient."""
    def loss(scale):
        d = nd.MixtureSameFamily(nd.Categorical(logits=LOGITS),
                                 nd.Normal(LOC[:, 0], scale, **NV))
        return stochbp.expectation(square, d, key, estimator=stochbp.mixture_marginal(
            component_rule=rule), num_samples=3)
    value, grad = jax.jit(jax.value_and_grad(loss))(jnp.array([1.0, -1.0, 1.0]))
    assert jnp.isnan(value) and bool(jnp.all(jnp.isnan(grad)))


def test_marginal_bad_input(key):
    d = make_diagonal("logits")(theta("diagonal", "logits"))
    with pytest.raises(ValueError, match="allocation"):
        stochbp.mixture_marginal("neyman")
    with pytest.raises(TypeError, match="common_noise"):
        stochbp.mixture_marginal(common_noise="yes")
    with pytest.raises(ValueError, match="noise='sobol'"):
        stochbp.mixture_marginal(noise="sobol")
    with pytest.raises(ValueError, match="noise=None"):
        stochbp.mixture_marginal(noise=None)
    with pytest.raises(ValueError, match="component_rule='price'"):
        stochbp.mixture_marginal(component_rule="price")
    with pytest.raises(ValueError, match="num_samples=2") as err:
        stochbp.expectation(square, d, key, estimator=stochbp.mixture_marginal(),
                            num_samples=2)
    assert "needs num_samples >= 3" in str(err.value)  # K = 3 components
    with pytest.raises(ValueError, match="mixture_marginal.*Normal"):
        stochbp.expectation(square, nd.Normal(jnp.zeros(2), 1.0), key,
                            estimator=stochbp.mixture_marginal(), num_samples=3)
    gamma = nd.MixtureSameFamily(nd.Categorical(logits=LOGITS),
                                 nd.Gamma(jnp.ones(3), jnp.ones(3)))
    with pytest.raises(ValueError, match="component_distribution=Gamma"):
        stochbp.expectation(square, gamma, key, estimator=stochbp.mixture_marginal(),
                            num_samples=3)
