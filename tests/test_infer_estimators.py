"""stochbp.infer.ELBO with the estimators added after it (measure_valued, delta_method,
score-function baseline options, arsm, unordered_set, rao_blackwell_topk,
relax(control_inputs="noise_and_params"), mixture_marginal) at every kind of guide site
they support, and the refusals of those that do not fit; also the site kinds
test_infer.py leaves out: score_function at Poisson, Weibull and Gaussian-mixture sites,
the default (pathwise, inverse CDF) at a Weibull site, and fourier(order=4) at a Gamma
site whose learning signal is a polynomial of degree 4 (where the truncated series is
exact).

Each statistical check: the mean of N gradient draws of the ELBO within 4 standard errors
(computed from the draws) of the exact gradient, by enumeration over the discrete sites
of a tiny model or in closed form (quadrature for the mixture's entropy). Each check also
has power: 4 standard errors stay under half of every gradient element, so a zero or
sign-flipped gradient would fail; the guides' initial parameters sit away from the
optimum for that, and the noisiest cells take more draws (MORE_DRAWS). One jitted
function per (model, estimator) gives the draws and the particle values; its results are
cached at module level and shared by the assertions on them."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd
import pytest
from jax.scipy.special import digamma, gammaln

import stochbp
import stochbp.infer as si

N = 2000


# ------------------------------------------------------------------ helpers
def _draws(elbo, model, guide, params, args, states=None, num=N, seed=0):
    """(particle values (num,), gradient draws {name: (num, ...)}) of the ELBO.
    ``lax.map`` over the keys: tracing, not running, is what these tiny programs cost,
    and a map traces the particle once without batching rules."""
    def one(k):
        def elbo_of(p):
            pm = dict(p)
            if states is not None:
                pm[si.STATE_KEY] = states
            return -elbo.loss(k, pm, model, guide, *args)
        return jax.value_and_grad(elbo_of)(params)
    # fold_in, not split: the first n keys are the same whatever num is, so cases drawn
    # with more draws share their first particles with those drawn with fewer
    base = jax.random.key(seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(num))
    values, grads = jax.jit(lambda ks: jax.lax.map(one, ks))(keys)
    return np.asarray(values), {n: np.asarray(g) for n, g in grads.items()}


def assert_matches(draws, exact, sigmas=4.0, atol=1e-8):
    for name in exact:
        d = draws[name]
        mean, se = d.mean(0), d.std(0) / np.sqrt(d.shape[0])
        err = np.abs(mean - np.asarray(exact[name]))
        tol = sigmas * se + atol * (1 + np.abs(np.asarray(exact[name])))
        assert np.all(err <= tol), (name, mean, np.asarray(exact[name]), se)


def assert_powerful(draws, exact, sigmas=4.0, floor=1e-3, zero=()):
    """The comparison could tell a wrong gradient: every element's tolerance (sigmas
    standard errors) is under half its exact value, so a zero gradient and the
    sign-flipped one would both miss by more than the tolerance. Elements named in
    ``zero`` (name, index) are exactly 0 by construction and are exempt; any other
    element must stand above ``floor``, else the test point is a poor one."""
    for name in exact:
        g = np.asarray(exact[name])
        se = draws[name].std(0) / np.sqrt(draws[name].shape[0])
        for i in np.ndindex(g.shape):
            if (name, i) in zero:
                continue
            assert abs(g[i]) > floor, ("exact gradient ~0; list it in zero", name, i, g[i])
            assert sigmas * se[i] < 0.5 * abs(g[i]), ("no power", name, i, g[i], se[i])


def enumerate_elbo(logq_and_logp, shapes):
    """Exact ELBO: sum over every configuration of the discrete latents (one vmap)."""
    configs = jnp.array(list(np.ndindex(*shapes)))

    def elbo(params):
        lq, lp = jax.vmap(lambda z: logq_and_logp(params, z))(configs)
        return jnp.sum(jnp.exp(lq) * (lp - lq))
    return elbo


class Case:
    """A tiny model, its guide, parameters, data and exact ELBO."""

    def __init__(self, model, guide, params, args, exact_elbo, site):
        self.model, self.guide, self.params, self.args = model, guide, params, args
        self.exact_elbo, self.site = exact_elbo, site

    @functools.cached_property
    def exact(self):
        return jax.jit(jax.value_and_grad(self.exact_elbo))(self.params)


# ------------------------------------------------------------------ Bernoulli vector
XB = jnp.array([0.5, -0.3, 1.2])


def model_b(x):
    z = numpyro.sample("z", nd.Bernoulli(probs=jnp.full(3, 0.4)).to_event(1))
    numpyro.sample("x", nd.Normal(jnp.tanh(1.5 * z - 0.5 + 0.8 * z[::-1]), 1.0).to_event(1),
                   obs=x)


def guide_b(x):
    numpyro.sample("z", nd.Bernoulli(logits=numpyro.param("l", jnp.array([1.5, -0.4, 0.9])))
                   .to_event(1))


def _lqlp_b(p, z):
    z = z.astype(float)
    lq = nd.Bernoulli(logits=p["l"]).log_prob(z).sum()
    lp = nd.Bernoulli(probs=0.4).log_prob(z).sum() + nd.Normal(
        jnp.tanh(1.5 * z - 0.5 + 0.8 * z[::-1]), 1.0).log_prob(XB).sum()
    return lq, lp


# ------------------------------------------------------------------ Categorical, 2 x K = 3
MU = jnp.array([-1.0, 0.5, 2.0])
XC = jnp.array([0.3, 1.7])
PRIOR_C = jnp.array([0.2, 0.5, 0.3])


def model_c(x):
    z = numpyro.sample("z", nd.Categorical(probs=PRIOR_C).expand([2]).to_event(1))
    numpyro.sample("x", nd.Normal(MU[z] * jnp.array([1.0, 0.7]) + 0.3 * MU[z[::-1]], 1.0)
                   .to_event(1), obs=x)


def guide_c(x):
    L = numpyro.param("L", jnp.array([[0.6, -0.5, -1.0], [1.0, 0.0, -1.0]]))
    numpyro.sample("z", nd.Categorical(logits=L).to_event(1))


def _lqlp_c(p, z):
    lq = nd.Categorical(logits=p["L"]).log_prob(z).sum()
    lp = jnp.log(PRIOR_C[z]).sum() + nd.Normal(
        MU[z] * jnp.array([1.0, 0.7]) + 0.3 * MU[z[::-1]], 1.0).log_prob(XC).sum()
    return lq, lp


# ------------------------------------------------------------------ Normal, Poisson log link
def model_n(x):
    w = numpyro.sample("w", nd.Normal(0.0, 1.0))
    numpyro.sample("x", nd.Poisson(jnp.exp(w)), obs=x)


def guide_n(x):
    numpyro.sample("w", nd.Normal(numpyro.param("m", -0.5), numpyro.param("s", 0.5)))


def _elbo_n(p):
    m, s, x = p["m"], p["s"], 2.0
    # E log N(w; 0, 1) + E[x w - e^w - log x!] + H[N(m, s)]
    return (-0.5 * jnp.log(2 * jnp.pi) - (m ** 2 + s ** 2) / 2 + x * m
            - jnp.exp(m + s ** 2 / 2) - gammaln(x + 1)
            + 0.5 * jnp.log(2 * jnp.pi * jnp.e * s ** 2))


# ------------------------------------------------------------------ Gamma, Poisson data
XG = jnp.array([3.0, 1.0, 4.0, 2.0])
A0, B0 = 2.0, 1.5


def model_g(x):
    lam = numpyro.sample("lam", nd.Gamma(A0, B0))
    with numpyro.plate("obs", x.shape[0]):
        numpyro.sample("x", nd.Poisson(lam), obs=x)


def guide_g(x):
    numpyro.sample("lam", nd.Gamma(numpyro.param("a", 3.0), numpyro.param("b", 0.6)))


def _elbo_g(p):
    a, b = p["a"], p["b"]
    elog, e = digamma(a) - jnp.log(b), a / b
    prior = A0 * jnp.log(B0) - gammaln(A0) + (A0 - 1) * elog - B0 * e
    lik = jnp.sum(XG * elog - e - gammaln(XG + 1))
    entropy = a - jnp.log(b) + gammaln(a) + (1 - a) * digamma(a)
    return prior + lik + entropy


# ------------------------------------------------------------------ Poisson guide site
NMAX = 60  # truncation of the sum over the Poisson latent (mass beyond: < 1e-40)


def model_p(x):
    z = numpyro.sample("z", nd.Poisson(2.0))
    numpyro.sample("x", nd.Normal(jnp.sqrt(z + 1.0), 0.5), obs=x)


def guide_p(x):
    numpyro.sample("z", nd.Poisson(numpyro.param("r", 1.4)))


def _elbo_p(p):
    z = jnp.arange(NMAX, dtype=float)
    lq = nd.Poisson(p["r"]).log_prob(z)
    lp = nd.Poisson(2.0).log_prob(z) + nd.Normal(jnp.sqrt(z + 1.0), 0.5).log_prob(1.9)
    return jnp.sum(jnp.exp(lq) * (lp - lq))


# ------------------------------------------------------------------ Gaussian mixture site
def model_m(x):
    w = numpyro.sample("w", nd.Normal(0.0, 1.5))
    numpyro.sample("x", nd.Normal(w, 0.8), obs=x)


def guide_m(x):
    pw = numpyro.param("pw", jnp.array([0.3, -0.3]))
    mix = nd.MixtureSameFamily(nd.Categorical(logits=pw),
                               nd.Normal(numpyro.param("mu", jnp.array([-1.0, 1.5])),
                                         numpyro.param("sd", jnp.array([1.2, 0.9]))))
    numpyro.sample("w", mix)


def _elbo_m(p):
    grid = jnp.linspace(-9.0, 9.0, 20001)
    q = nd.MixtureSameFamily(nd.Categorical(logits=p["pw"]), nd.Normal(p["mu"], p["sd"]))
    lq = q.log_prob(grid)
    lp = nd.Normal(0.0, 1.5).log_prob(grid) + nd.Normal(grid, 0.8).log_prob(0.7)
    return jnp.trapezoid(jnp.exp(lq) * (lp - lq), grid)


# ------------------------------------------------------------------ Weibull guide site
def guide_w(x):  # the Gamma-prior, Poisson-data model above, a Weibull guide
    numpyro.sample("lam", nd.Weibull(numpyro.param("scale", 1.0),
                                     numpyro.param("k", 1.5)))


def _elbo_w(p):
    lam, k = p["scale"], p["k"]
    # E z = lam Gamma(1 + 1/k), E log z = log lam - gamma_E / k,
    # H = gamma_E (1 - 1/k) + log(lam / k) + 1
    elog, e = jnp.log(lam) - np.euler_gamma / k, lam * jnp.exp(gammaln(1 + 1 / k))
    prior = A0 * jnp.log(B0) - gammaln(A0) + (A0 - 1) * elog - B0 * e
    lik = jnp.sum(XG * elog - e - gammaln(XG + 1))
    entropy = np.euler_gamma * (1 - 1 / k) + jnp.log(lam / k) + 1
    return prior + lik + entropy


# ------------------------------------------------------------------ Gamma site, polynomial signal
# fourier(order=N) at a Gamma site truncates Eq. 20 after f's N-th derivative, so it is
# exact when the learning signal F(z) = log p(z) + log p(x | z) - log q(z) is a
# polynomial of degree <= N. A Gamma(A0, B0) prior and the guide's frozen -log q
# contribute (A0 - a) log z, which vanishes at the guide shape a = A0; a Normal
# likelihood with mean z - z^2 / 2 then makes F a polynomial of degree 4 (and the ELBO's
# gradient at that point still moves both a and b). The exact gradient is that of the
# whole closed-form ELBO (moments E z^n = Gamma(a + n) / (Gamma(a) b^n)).
XQ = 0.4
SQ = 1.5


def model_q(x):
    lam = numpyro.sample("lam", nd.Gamma(A0, B0))
    numpyro.sample("x", nd.Normal(lam - 0.5 * lam ** 2, SQ), obs=x)


def guide_q(x):
    numpyro.sample("lam", nd.Gamma(numpyro.param("a", A0), numpyro.param("b", 2.5)))


def _elbo_q(p):
    a, b = p["a"], p["b"]
    m = [jnp.exp(gammaln(a + n) - gammaln(a)) / b ** n for n in range(5)]  # E z^n
    elog = digamma(a) - jnp.log(b)
    prior = A0 * jnp.log(B0) - gammaln(A0) + (A0 - 1) * elog - B0 * m[1]
    # E (x - z + z^2 / 2)^2 = x^2 + E z^2 + E z^4 / 4 - 2 x E z + x E z^2 - E z^3
    sq = XQ ** 2 + m[2] + m[4] / 4 - 2 * XQ * m[1] + XQ * m[2] - m[3]
    lik = -0.5 * jnp.log(2 * jnp.pi * SQ ** 2) - sq / (2 * SQ ** 2)
    entropy = a - jnp.log(b) + gammaln(a) + (1 - a) * digamma(a)
    return prior + lik + entropy


def _params(guide, *args):
    tr = numpyro.handlers.trace(numpyro.handlers.seed(guide, 0)).get_trace(*args)
    return {n: jnp.asarray(s["value"], float) for n, s in tr.items() if s["type"] == "param"}


CASES = {
    "bernoulli": Case(model_b, guide_b, _params(guide_b, XB), (XB,),
                      enumerate_elbo(_lqlp_b, [2] * 3), "z"),
    "categorical": Case(model_c, guide_c, _params(guide_c, XC), (XC,),
                        enumerate_elbo(_lqlp_c, [3, 3]), "z"),
    "normal": Case(model_n, guide_n, _params(guide_n, 2.0), (jnp.asarray(2.0),), _elbo_n,
                   "w"),
    "gamma": Case(model_g, guide_g, _params(guide_g, XG), (XG,), _elbo_g, "lam"),
    "poisson": Case(model_p, guide_p, _params(guide_p, 1.9), (jnp.asarray(1.9),), _elbo_p,
                    "z"),
    "weibull": Case(model_g, guide_w, _params(guide_w, XG), (XG,), _elbo_w, "lam"),
    "gamma_polynomial": Case(model_q, guide_q, _params(guide_q, XQ), (jnp.asarray(XQ),),
                             _elbo_q, "lam"),
    "mixture": Case(model_m, guide_m, _params(guide_m, 0.7), (jnp.asarray(0.7),), _elbo_m,
                    "w"),
}

# (site kind, estimator): each new estimator at the kinds of site it supports
SUPPORTED = [
    ("bernoulli", stochbp.score_function("moving_average", decay=0.5,
                                         bias_correction=False)),
    ("bernoulli", stochbp.score_function("leave_one_out")),
    ("bernoulli", stochbp.relax(control_inputs="noise_and_params")),
    ("categorical", stochbp.arsm()),
    ("categorical", stochbp.unordered_set(2)),
    ("categorical", stochbp.rao_blackwell_topk(1)),
    ("normal", stochbp.delta_method(stochbp.score_function(), coefficient="estimated")),
    ("poisson", stochbp.measure_valued()),
    ("mixture", stochbp.mixture_marginal()),
    ("mixture", stochbp.mixture_marginal("uniform", noise="stratified",
                                         component_rule="fourier")),
    # the cells of the README table first tested here
    ("normal", stochbp.measure_valued()),
    ("normal", stochbp.measure_valued(coupled=False)),
    ("normal", stochbp.delta_method(stochbp.score_function(), coefficient=0.5)),
    # Gamma sites compile stochbp's gamma sampler (its rejection loop) once per case,
    # 1.5-3 s each, so the uncoupled rule and the other wrappers are left to Weibull and
    # Normal and to the estimators' own Gamma tests
    ("gamma", stochbp.measure_valued()),
    ("gamma", stochbp.delta_method(stochbp.score_function())),
    ("gamma_polynomial", stochbp.fourier(order=4)),
    ("weibull", None),  # default=None: pathwise by the inverse CDF
    ("weibull", stochbp.score_function()),
    ("weibull", stochbp.measure_valued()),
    # coupled= changes only the scale's weak-derivative pair: the shape has no
    # decomposition and both settings estimate it by the same score term (see
    # test_weibull_coupling_changes_only_the_scale)
    ("weibull", stochbp.measure_valued(coupled=False)),
    ("weibull", stochbp.delta_method(stochbp.measure_valued(), coefficient=jnp.asarray(0.8))),
    ("poisson", stochbp.score_function()),
    ("mixture", stochbp.score_function()),
    ("mixture", stochbp.delta_method(stochbp.score_function(), coefficient=0.7)),
]


@functools.lru_cache(maxsize=None)
def draws_of(index):
    """Cached (values, draws) of the ELBO with SUPPORTED[index]."""
    kind, est = SUPPORTED[index]
    case = CASES[kind]
    elbo = si.ELBO(estimators={} if est is None else {case.site: est})
    states = None
    if est is None:
        pass
    elif est.name.startswith("score_function(baseline='moving"):
        # any past average keeps it unbiased (the initial state is tested in test_infer)
        states = {case.site: {"estimator": stochbp.MovingAverageState(
            jnp.asarray(-3.0), jnp.asarray(2, jnp.int32))}}
    elif si.is_stateful(est):  # relax: the network sized by the ELBO (3 inputs per bit)
        states = elbo.initial_states(jax.random.key(1), case.params, case.model, case.guide,
                                     *case.args)
    return _draws(elbo, case.model, case.guide, case.params, case.args, states=states,
                  num=MORE_DRAWS.get(_id(SUPPORTED[index]), N))


def _id(item):
    kind, est = item
    if est is None:
        return f"{kind}-default"
    if getattr(est, "coefficient", None) is not None:  # delta_method's fixed coefficient
        return f"{kind}-{est.name}-coefficient={float(est.coefficient)}"
    return f"{kind}-{est.name}"


# Cells whose estimator is too noisy at N draws for the comparison to have power (see
# assert_powerful); their draws are cheap next to the compilation.
MORE_DRAWS = {  # the shape's score term (its measure_valued rule too) at SE/|g| ~ 0.16
    "weibull-score_function": 8000,
    "weibull-measure_valued(coupled=True)": 8000,
    "weibull-measure_valued(coupled=False)": 8000,
    "weibull-delta_method(measure_valued(coupled=True))-coefficient=0.8": 8000,
    "mixture-score_function": 14000,  # the scales at SE/|g| ~ 0.18-0.24
}

# (site kind, parameter name, index): gradient elements that are exactly zero by
# construction at the test points, exempt from the power check. None at present: every
# guide parameter is away from the optimum, and the mixture's two logits have gradients
# of opposite sign, not zero.
ZERO_BY_CONSTRUCTION = set()


@pytest.mark.parametrize("index", range(len(SUPPORTED)), ids=[_id(s) for s in SUPPORTED])
def test_gradient_matches_exact(index):
    kind = SUPPORTED[index][0]
    values, draws = draws_of(index)
    exact_value, exact_grad = CASES[kind].exact
    assert_matches(draws, exact_grad, atol=1e-5 if kind == "mixture" else 1e-8)
    assert_powerful(draws, exact_grad,
                    zero={(n, i) for k, n, i in ZERO_BY_CONSTRUCTION if k == kind})
    # the value is the particle's ELBO whatever the estimator (only gradients change) ...
    assert abs(values.mean() - exact_value) <= 4 * values.std() / np.sqrt(values.size)
    # ... so estimators of the same site give the same values for the same keys (the
    # first keys are shared whatever the number of draws)
    first = next(i for i, (k, _) in enumerate(SUPPORTED) if k == kind)
    theirs = draws_of(first)[0]
    n = min(values.size, theirs.size)
    np.testing.assert_allclose(values[:n], theirs[:n], rtol=1e-12, atol=1e-12)


def test_weibull_coupling_changes_only_the_scale():
    # so the uncoupled Weibull cell adds a test of the scale's rule only
    ids = [_id(s) for s in SUPPORTED]
    coupled = draws_of(ids.index("weibull-measure_valued(coupled=True)"))[1]
    uncoupled = draws_of(ids.index("weibull-measure_valued(coupled=False)"))[1]
    np.testing.assert_array_equal(coupled["k"], uncoupled["k"])
    assert not np.allclose(coupled["scale"], uncoupled["scale"])


def test_gamma_site_drawn_by_the_family_sampler():
    # a non-pathwise Gamma site is drawn by stochbp's gamma sampler, in the guide as by its
    # estimator, so with one draw the estimator draws the value the guide holds (same key,
    # same sampler), and jax.random.gamma (slow on CPU) appears nowhere in the program.
    # score_function's draw is recorded and returned beside the guide's value.
    from stochbp._src.estimators.base import draw
    from stochbp._src.estimators.score_function import ScoreFunction
    seen, guide_values = [], []
    orig = ScoreFunction.surrogate

    def spy(self, f, dist, key, n, state):
        seen.append(draw(dist, key, n)[0])
        return orig(self, f, dist, key, n, state)

    def guide(x):
        guide_values.append(numpyro.sample("lam", nd.Gamma(numpyro.param("a", 3.0),
                                                           numpyro.param("b", 1.2))))
    elbo = si.ELBO(estimators={"lam": stochbp.score_function()})

    def run(p):
        loss = elbo.loss(jax.random.key(4), p, model_g, guide, XG)
        return loss, seen[0], guide_values[0]
    ScoreFunction.surrogate = spy
    try:
        traced = jax.jit(run).trace(CASES["gamma"].params)
        _, ours, guides = traced.lower().compile()(CASES["gamma"].params)
    finally:
        ScoreFunction.surrogate = orig
    assert len(seen) == 1
    assert float(ours) == float(guides) and float(ours) > 0
    assert "random_gamma" not in str(traced.jaxpr)


def test_site_samples():
    mix = nd.MixtureSameFamily(nd.Categorical(logits=jnp.zeros(3)),
                               nd.Normal(jnp.zeros(3), 1.0))
    normal = nd.Normal(0.0, 1.0)
    assert si.site_samples(stochbp.score_function(), normal) == 1
    assert si.site_samples(stochbp.score_function("leave_one_out"), normal) == 2
    assert si.site_samples(stochbp.delta_method(stochbp.score_function("leave_one_out")),
                           normal) == 2
    assert si.site_samples(stochbp.delta_method(stochbp.measure_valued(), "estimated"),
                           normal) == 3
    assert si.site_samples(stochbp.mixture_marginal(), mix) == 3
    assert si.site_samples(stochbp.unordered_set(3), nd.Categorical(logits=jnp.zeros(3))) == 1


REFUSED = [  # (site kind, estimator, what the error must say besides the site's name)
    ("bernoulli", stochbp.measure_valued(), "weak-derivative"),
    ("bernoulli", stochbp.delta_method(stochbp.score_function()), "continuous"),
    ("bernoulli", stochbp.arsm(), "categorical variables only"),
    ("bernoulli", stochbp.unordered_set(2), "categorical variables only"),
    ("categorical", stochbp.unordered_set(4), "at most the number of classes"),
    ("categorical", stochbp.rao_blackwell_topk(3), "below the number of classes"),
    ("categorical", stochbp.relax(control_inputs="noise_and_params"), "class indices"),
    ("normal", stochbp.mixture_marginal(), "mixtures"),
    ("normal", stochbp.fourier_exponential(0.1), "learning signal"),
    ("normal", stochbp.delta_method(stochbp.score_function("moving_average"),
                                    coefficient="estimated"), "keep a state"),
    ("poisson", stochbp.delta_method(stochbp.score_function()), "continuous"),
]


@pytest.mark.filterwarnings("ignore:stochbp.infer.ELBO. stateful estimators restart")
def test_refusals_name_estimator_site_and_alternatives():
    for kind, est, why in REFUSED:
        case = CASES[kind]
        elbo = si.ELBO(estimators={case.site: est})
        with pytest.raises(ValueError) as err:
            jax.eval_shape(lambda p: elbo.loss(jax.random.key(0), p, case.model, case.guide,
                                               *case.args), case.params)
        msg = str(err.value)
        assert est.name in msg and repr(case.site) in msg and why in msg, (est.name, msg)
        assert "Estimators that support it: " in msg and "score_function()" in msg, msg


def test_relax_noise_and_params_network_sized_per_row_in_a_plate():
    # in a plate the network sees one example's row: relaxed sample, noise and logits
    L0 = jnp.array([[0.3, -0.2], [0.5, 0.1], [-0.4, 0.8]])

    def model(x):
        with numpyro.plate("data", 3):
            z = numpyro.sample("z", nd.Bernoulli(probs=0.3 * jnp.ones(2)).to_event(1))
            numpyro.sample("x", nd.Normal(z @ jnp.array([1.2, -0.7]), 0.5), obs=x)

    def guide(x):
        with numpyro.plate("data", 3):
            numpyro.sample("z", nd.Bernoulli(logits=numpyro.param("L", L0)).to_event(1))
    xs = jnp.array([0.4, -0.3, 1.0])
    elbo = si.ELBO(estimators={"z": stochbp.relax(hidden=(4,),
                                                  control_inputs="noise_and_params")})
    states = jax.eval_shape(lambda: elbo.initial_states(jax.random.key(0), {"L": L0}, model,
                                                        guide, xs))
    assert states["z"]["estimator"].params[0]["w"].shape == (3 * 2, 4)
