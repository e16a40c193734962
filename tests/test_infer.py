"""stochbp.infer.ELBO: exact ELBO gradients by enumeration / closed form, plates, state,
SVI, bad input. Each statistical check: mean of N gradient draws within 4 standard
errors (computed from the draws) of the exact gradient."""
import itertools
import warnings

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
def grad_draws(elbo, model, guide, params, args=(), num=N, seed=0, states=None):
    """(num, ...) draws of the ELBO gradient estimate (minus the loss gradient)."""
    def one(k):
        def loss(p):
            pm = dict(p)
            if states is not None:
                pm[si.STATE_KEY] = states
            return elbo.loss(k, pm, model, guide, *args)
        return jax.tree_util.tree_map(jnp.negative, jax.grad(loss)(params))
    keys = jax.random.split(jax.random.key(seed), num)
    return jax.jit(jax.vmap(one))(keys)


def assert_matches(draws, exact, sigmas=4.0, atol=1e-8):
    for name in exact:
        d = np.asarray(draws[name])
        mean, se = d.mean(0), d.std(0) / np.sqrt(d.shape[0])
        err = np.abs(mean - np.asarray(exact[name]))
        tol = sigmas * se + atol * (1 + np.abs(np.asarray(exact[name])))
        assert np.all(err <= tol), (name, mean, np.asarray(exact[name]), se)


def enumerate_elbo(logq_and_logp, shapes):
    """Exact ELBO: sum over every binary / categorical configuration."""
    def elbo(params):
        total = 0.0
        ranges = [range(k) for k in shapes]
        for cfg in itertools.product(*ranges):
            lq, lp = logq_and_logp(params, jnp.array(cfg))
            total = total + jnp.exp(lq) * (lp - lq)
        return total
    return elbo


# ------------------------------------------------------------------ 1. Bernoulli vector
D = 3
X1 = jnp.array([0.5, -0.3, 1.2])
P1 = {"l": jnp.array([0.2, -0.4, 0.9])}


def model1(x):
    z = numpyro.sample("z", nd.Bernoulli(probs=jnp.full(D, 0.4)).to_event(1))
    numpyro.sample("x", nd.Normal(jnp.tanh(1.5 * z - 0.5 + 0.8 * z[::-1]), 1.0).to_event(1),
                   obs=x)


def guide1(x):
    l = numpyro.param("l", P1["l"])
    numpyro.sample("z", nd.Bernoulli(logits=l).to_event(1))


def _lqlp1(p, z):
    z = z.astype(float)
    lq = nd.Bernoulli(logits=p["l"]).log_prob(z).sum()
    lp = nd.Bernoulli(probs=0.4).log_prob(z).sum() + nd.Normal(
        jnp.tanh(1.5 * z - 0.5 + 0.8 * z[::-1]), 1.0).log_prob(X1).sum()
    return lq, lp


EXACT1 = jax.grad(enumerate_elbo(_lqlp1, [2] * D))(P1)

UNBIASED_BERNOULLI = [stochbp.fourier(), stochbp.score_function(),
                      stochbp.score_function(baseline=-4.0), stochbp.arm(), stochbp.disarm(),
                      stochbp.rebar(), stochbp.rebar(tune=True), stochbp.relax()]


@pytest.mark.parametrize("est", UNBIASED_BERNOULLI, ids=lambda e: e.name)
def test_bernoulli_vector(est):
    elbo = si.ELBO(estimators={"z": est})
    states = None
    if si.is_stateful(est):
        states = elbo.initial_states(jax.random.key(1), P1, model1, guide1, X1)
    draws = grad_draws(elbo, model1, guide1, P1, (X1,), states=states)
    assert_matches(draws, EXACT1)


def test_bernoulli_value_is_the_elbo_particle():
    elbo = si.ELBO(estimators={"z": stochbp.fourier()})
    keys = jax.random.split(jax.random.key(3), 4000)
    vals = jax.jit(jax.vmap(lambda k: -elbo.loss(k, P1, model1, guide1, X1)))(keys)
    exact = enumerate_elbo(_lqlp1, [2] * D)(P1)
    assert abs(vals.mean() - exact) <= 4 * vals.std() / np.sqrt(vals.size)


def test_moving_average_state_unbiased_and_updated():
    est = stochbp.score_function(baseline="moving_average")
    elbo = si.ELBO(estimators={"z": est})
    states = elbo.initial_states(jax.random.key(1), P1, model1, guide1, X1)
    # any baseline value leaves the estimate unbiased
    states = {"z": {"estimator": states["z"]["estimator"]._replace(
        average=jnp.asarray(-2.0), count=jnp.asarray(3))}}
    draws = grad_draws(elbo, model1, guide1, P1, (X1,), states=states)
    assert_matches(draws, EXACT1)
    out = elbo.loss_with_mutable_state(jax.random.key(0), {**P1, si.STATE_KEY: states},
                                       model1, guide1, X1)
    new = out["mutable_state"][si.STATE_KEY]["z"]["estimator"]
    assert int(new.count) == 4 and float(new.average) != -2.0


def test_gumbel_softmax_bias_small_at_low_temperature():
    # biased by design: the relaxed objective's gradient; close at low temperature
    elbo = si.ELBO(estimators={"z": stochbp.gumbel_softmax(0.1)})
    draws = grad_draws(elbo, model1, guide1, P1, (X1,), num=4000)
    mean = np.asarray(draws["l"]).mean(0)
    assert np.all(np.isfinite(mean))
    assert np.max(np.abs(mean - np.asarray(EXACT1["l"]))) < 0.15


# ------------------------------------------------------------------ 2. categorical latent
K = 3
MU = jnp.array([-1.0, 0.5, 2.0])
X2 = jnp.array([0.3, 1.7])
P2 = {"L": jnp.array([[0.1, -0.5, 0.4], [1.0, 0.0, -1.0]])}
PRIOR2 = jnp.array([0.2, 0.5, 0.3])


def model2(x):
    z = numpyro.sample("z", nd.Categorical(probs=PRIOR2).expand([2]).to_event(1))
    numpyro.sample("x", nd.Normal(MU[z] * jnp.array([1.0, 0.7]) + 0.3 * MU[z[::-1]], 1.0)
                   .to_event(1), obs=x)


def guide2(x):
    numpyro.sample("z", nd.Categorical(logits=numpyro.param("L", P2["L"])).to_event(1))


def _lqlp2(p, z):
    lq = nd.Categorical(logits=p["L"]).log_prob(z).sum()
    lp = jnp.log(PRIOR2[z]).sum() + nd.Normal(
        MU[z] * jnp.array([1.0, 0.7]) + 0.3 * MU[z[::-1]], 1.0).log_prob(X2).sum()
    return lq, lp


EXACT2 = jax.grad(enumerate_elbo(_lqlp2, [K, K]))(P2)


@pytest.mark.parametrize("est", [stochbp.fourier(), stochbp.score_function(),
                                 stochbp.score_function(baseline=-5.0)],
                         ids=lambda e: e.name)
def test_categorical(est):
    draws = grad_draws(si.ELBO(estimators={"z": est}), model2, guide2, P2, (X2,))
    assert_matches(draws, EXACT2)


# ------------------------------------------------------------------ 3. chains
A3 = jnp.array([[1.0, -2.0], [0.5, 1.5]])
X3 = jnp.array([0.4, 1.1])
P3 = {"l1": jnp.array([0.3, -0.6]), "W": jnp.array([[0.8, -0.4], [0.2, 1.0]]),
      "b": jnp.array([-0.2, 0.5])}


def model3(x):
    z1 = numpyro.sample("z1", nd.Bernoulli(probs=0.5 * jnp.ones(2)).to_event(1))
    z2 = numpyro.sample("z2", nd.Bernoulli(logits=A3 @ z1 - 0.5).to_event(1))
    numpyro.sample("x", nd.Normal(jnp.tanh(z1 + 2.0 * z2 - 1.0), 0.7).to_event(1), obs=x)


def guide3(x):
    z1 = numpyro.sample("z1", nd.Bernoulli(logits=numpyro.param("l1", P3["l1"])).to_event(1))
    W, b = numpyro.param("W", P3["W"]), numpyro.param("b", P3["b"])
    numpyro.sample("z2", nd.Bernoulli(logits=W @ z1 + b).to_event(1))


def _lqlp3(p, z):
    z = z.astype(float)
    z1, z2 = z[:2], z[2:]
    lq = nd.Bernoulli(logits=p["l1"]).log_prob(z1).sum() + \
        nd.Bernoulli(logits=p["W"] @ z1 + p["b"]).log_prob(z2).sum()
    lp = nd.Bernoulli(probs=0.5).log_prob(z1).sum() + \
        nd.Bernoulli(logits=A3 @ z1 - 0.5).log_prob(z2).sum() + \
        nd.Normal(jnp.tanh(z1 + 2.0 * z2 - 1.0), 0.7).log_prob(X3).sum()
    return lq, lp


EXACT3 = jax.grad(enumerate_elbo(_lqlp3, [2] * 4))(P3)


@pytest.mark.parametrize("ests", [
    (stochbp.fourier(), stochbp.fourier()),
    (stochbp.score_function(), stochbp.score_function()),
    (stochbp.disarm(), stochbp.arm()),
    (stochbp.fourier(), stochbp.rebar()),
    (stochbp.disarm(), stochbp.relax()),
], ids=lambda e: f"{e[0].name}-{e[1].name}")
def test_chain_in_guide_and_model(ests):
    elbo = si.ELBO(estimators={"z1": ests[0], "z2": ests[1]})
    states = elbo.initial_states(jax.random.key(1), P3, model3, guide3, X3) \
        if si.is_stateful(ests[1]) else None
    draws = grad_draws(elbo, model3, guide3, P3, (X3,), states=states)
    assert_matches(draws, EXACT3)


# ------------------------------------------------------------------ 4. plates
W4 = jnp.array([1.2, -0.7])


def make_plate(n, m=None):
    xs = jnp.sin(jnp.arange(n) * 1.3) + 0.5
    # (no logit exactly 0: numpyro's Bernoulli log_prob has a kink in its gradient there)
    L0 = jnp.stack([jnp.cos(jnp.arange(n)), 0.5 * jnp.sin(2.0 * jnp.arange(n)) + 0.1], 1)

    def model(x):
        with numpyro.plate("data", n, subsample_size=m) as idx:
            z = numpyro.sample("z", nd.Bernoulli(probs=0.3 * jnp.ones(2)).to_event(1))
            numpyro.sample("x", nd.Normal(jnp.tanh(z @ W4 + z[..., 0] * z[..., 1]), 0.5),
                           obs=x[idx])

    def guide(x):
        L = numpyro.param("L", L0)
        with numpyro.plate("data", n, subsample_size=m) as idx:
            numpyro.sample("z", nd.Bernoulli(logits=L[idx]).to_event(1))

    def lqlp(p, i, z):
        z = z.astype(float)
        lq = nd.Bernoulli(logits=p["L"][i]).log_prob(z).sum()
        lp = nd.Bernoulli(probs=0.3).log_prob(z).sum() + nd.Normal(
            jnp.tanh(z @ W4 + z[0] * z[1]), 0.5).log_prob(xs[i])
        return lq, lp

    def exact_elbo(p):
        return sum(enumerate_elbo(lambda q, z, i=i: lqlp(q, i, z), [2, 2])(p)
                   for i in range(n))
    return model, guide, xs, {"L": L0}, jax.grad(exact_elbo)({"L": L0})


PLATE_ESTIMATORS = [stochbp.fourier(), stochbp.score_function(), stochbp.arm(),
                    stochbp.disarm(), stochbp.rebar(), stochbp.relax()]


@pytest.mark.parametrize("m", [None, 2], ids=["full", "subsampled"])
@pytest.mark.parametrize("est", PLATE_ESTIMATORS, ids=lambda e: e.name)
def test_plate_local_latents(est, m):
    model, guide, xs, params, exact = make_plate(4, m)
    elbo = si.ELBO(estimators={"z": est})
    states = elbo.initial_states(jax.random.key(1), params, model, guide, xs) \
        if si.is_stateful(est) else None
    draws = grad_draws(elbo, model, guide, params, (xs,), states=states)
    assert_matches(draws, exact)


@pytest.mark.parametrize("est", [stochbp.score_function(), stochbp.disarm()],
                         ids=lambda e: e.name)
def test_plate_variance_does_not_grow_with_n(est):
    variances = []
    for n in (2, 16):
        model, guide, xs, params, _ = make_plate(n)
        draws = grad_draws(si.ELBO(estimators={"z": est}), model, guide, params, (xs,))
        variances.append(np.asarray(draws["L"])[:, 0].var(0))
    ratio = variances[1] / variances[0]
    # without per-example signals the variance of example 0's gradient would grow ~8x
    assert np.all(ratio < 1.4) and np.all(ratio > 0.7), ratio


def test_plate_uses_row_terms():
    model, guide, xs, params, _ = make_plate(5)
    seen = []
    from stochbp._src.estimators.fourier import Fourier
    orig = Fourier.surrogate

    def spy(self, f, dist, key, n, state):
        seen.append(f)
        return orig(self, f, dist, key, n, state)
    Fourier.surrogate = spy
    try:
        elbo = si.ELBO(estimators={"z": stochbp.fourier()})
        jax.eval_shape(lambda p: elbo.loss(jax.random.key(0), p, model, guide, xs), params)
    finally:
        Fourier.surrogate = orig
    assert isinstance(seen[0], stochbp.RowTerms)


# ------------------------------------------------------------------ 5. gamma / Poisson
X5 = jnp.array([3.0, 1.0, 4.0, 2.0])
A0, B0 = 2.0, 1.5
P5 = {"a": jnp.asarray(3.0), "b": jnp.asarray(1.2)}


def model5(x):
    lam = numpyro.sample("lam", nd.Gamma(A0, B0))
    with numpyro.plate("obs", x.shape[0]):
        numpyro.sample("x", nd.Poisson(lam), obs=x)


def guide5(x):
    numpyro.sample("lam", nd.Gamma(numpyro.param("a", P5["a"]), numpyro.param("b", P5["b"])))


def _elbo5(p):
    a, b = p["a"], p["b"]
    elog, e = digamma(a) - jnp.log(b), a / b
    prior = A0 * jnp.log(B0) - gammaln(A0) + (A0 - 1) * elog - B0 * e
    lik = jnp.sum(X5 * elog - e - gammaln(X5 + 1))
    entropy = a - jnp.log(b) + gammaln(a) + (1 - a) * digamma(a)
    return prior + lik + entropy


EXACT5 = jax.grad(_elbo5)(P5)


@pytest.mark.parametrize("est", [None, stochbp.grg(), stochbp.score_function()],
                         ids=lambda e: "default" if e is None else e.name)
def test_gamma_poisson(est):
    elbo = si.ELBO(estimators={} if est is None else {"lam": est})
    draws = grad_draws(elbo, model5, guide5, P5, (X5,))
    assert_matches(draws, EXACT5)


# ------------------------------------------------------------------ 6. Gaussian mixture
P6 = {"pw": jnp.array([0.3, -0.3]), "mu": jnp.array([-1.0, 1.5]),
      "s": jnp.array([0.6, 0.9])}


def model6(x):
    w = numpyro.sample("w", nd.Normal(0.0, 1.5))
    numpyro.sample("x", nd.Normal(w, 0.8), obs=x)


def guide6(x):
    mix = nd.MixtureSameFamily(nd.Categorical(logits=numpyro.param("pw", P6["pw"])),
                               nd.Normal(numpyro.param("mu", P6["mu"]),
                                         numpyro.param("s", P6["s"])))
    numpyro.sample("w", mix)


def _elbo6(p):
    grid = jnp.linspace(-9.0, 9.0, 20001)
    q = nd.MixtureSameFamily(nd.Categorical(logits=p["pw"]), nd.Normal(p["mu"], p["s"]))
    lq = q.log_prob(grid)
    lp = nd.Normal(0.0, 1.5).log_prob(grid) + nd.Normal(grid, 0.8).log_prob(0.7)
    return jnp.trapezoid(jnp.exp(lq) * (lp - lq), grid)


EXACT6 = jax.grad(_elbo6)(P6)


def test_mixture_default_pathwise():
    draws = grad_draws(si.ELBO(), model6, guide6, P6, (jnp.asarray(0.7),))
    assert_matches(draws, EXACT6, atol=1e-5)


# ------------------------------------------------------------------ SVI
def test_svi_run_with_stateful_estimators():
    optax = pytest.importorskip("optax")
    model, guide, xs, params, _ = make_plate(6)
    for est in (stochbp.fourier(), stochbp.score_function(baseline="moving_average"),
                stochbp.relax()):
        elbo = si.ELBO(estimators={"z": est},
                       control_optimizer=optax.adam(1e-2) if est.name == "relax" else None)
        svi = numpyro.infer.SVI(model, guide, optax.adam(0.05), loss=elbo)
        init = elbo.init(svi, jax.random.key(0), xs)
        result = svi.run(jax.random.key(0), 30, xs, init_state=init, progress_bar=False)
        assert np.all(np.isfinite(result.losses))
        assert result.losses[-5:].mean() < result.losses[:5].mean()
        if si.is_stateful(est):
            st = result.state.mutable_state[si.STATE_KEY]["z"]["estimator"]
            before = init.mutable_state[si.STATE_KEY]["z"]["estimator"]
            changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), st, before)
            assert any(jax.tree_util.tree_leaves(changed))


def test_svi_plain_run_fourier():
    optax = pytest.importorskip("optax")
    svi = numpyro.infer.SVI(model1, guide1, optax.adam(0.05),
                            loss=si.ELBO(estimators={"z": stochbp.fourier()}))
    result = svi.run(jax.random.key(0), 100, X1, progress_bar=False)
    assert np.all(np.isfinite(result.losses))
    assert np.isfinite(float(svi.evaluate(result.state, X1)))
    exact = enumerate_elbo(_lqlp1, [2] * D)
    assert float(exact(result.params)) > float(exact(P1)) + 0.05


# ------------------------------------------------------------------ bad input
def _loss(elbo, model, guide, params, *args):
    return elbo.loss(jax.random.key(0), params, model, guide, *args)


def test_unknown_site_lists_guide_sites():
    with pytest.raises(ValueError, match=r"'zz'.*\['z'\]"):
        _loss(si.ELBO(estimators={"zz": stochbp.fourier()}), model1, guide1, P1, X1)


def test_unsupported_estimator_names_both():
    with pytest.raises(ValueError, match=r"disarm.*'z'.*Categorical"):
        _loss(si.ELBO(estimators={"z": stochbp.disarm()}), model2, guide2, P2, X2)
    with pytest.raises(ValueError, match=r"rebar.*'z'"):
        _loss(si.ELBO(estimators={"z": stochbp.rebar()}), model2, guide2, P2, X2)
    with pytest.raises(ValueError, match=r"grg.*'z'"):
        _loss(si.ELBO(estimators={"z": stochbp.grg()}), model1, guide1, P1, X1)


def test_discrete_site_without_estimator():
    with pytest.raises(ValueError, match=r"'z'.*fourier\(\).*score_function\(\)"):
        _loss(si.ELBO(), model1, guide1, P1, X1)


def test_relaxation_upstream_of_redrawn_discrete_site():
    with pytest.raises(ValueError, match=r"'z1'.*\['z2'\]"):
        _loss(si.ELBO(estimators={"z1": stochbp.rebar(), "z2": stochbp.fourier()}),
              model3, guide3, P3, X3)


def test_constructor_arguments():
    with pytest.raises(TypeError, match="estimators"):
        si.ELBO(estimators={"z": "fourier"})
    with pytest.raises(TypeError, match="default"):
        si.ELBO(default="fourier")
    with pytest.raises(ValueError, match="num_particles"):
        si.ELBO(num_particles=0)


def test_stateful_without_init_warns():
    elbo = si.ELBO(estimators={"z": stochbp.score_function(baseline="moving_average")})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _loss(elbo, model1, guide1, P1, X1)
    assert any("elbo.init" in str(w.message) for w in caught)


# ------------------------------------------------------------------ SBN vs the experiment
def _example(name):
    import importlib
    import os
    import sys
    here = os.path.join(os.path.dirname(__file__), "..", "examples")
    if here not in sys.path:
        sys.path.insert(0, here)
    return importlib.import_module(name)


@pytest.mark.parametrize("layers", [1, 2])
def test_sbn_matches_hand_written_experiment(layers):
    from stochbp.experiments import discrete_models as dm
    sbn = _example("sbn_mnist")
    n, latent = 6, 8
    spec = dm.ModelSpec("sbn", layers, latent=latent)
    x = (jax.random.uniform(jax.random.key(5), (n, 784)) < 0.2).astype(jnp.float64)
    exp_params = dm.init_params(spec, jax.random.key(2), data_mean=x.mean(0) * 0.9 + 0.05)
    exp_params["prior"] = exp_params["prior"] + 0.3
    params = sbn.from_experiment(exp_params, layers)
    model, guide = sbn.make_sbn(params, layers)
    inner = None if layers == 1 else dm.Inner(stochbp.fourier(), nested=False)

    def hand(k):
        g = jax.grad(lambda p: dm.surrogate_elbo(spec, p, x, k, estimator=stochbp.fourier(),
                                                 inner=inner)[0])(exp_params)
        return sbn.from_experiment(g, layers)

    sites = {"z": stochbp.fourier()} if layers == 1 else \
        {"z": stochbp.fourier(), "z2": stochbp.fourier()}
    ours = grad_draws(si.ELBO(estimators=sites), model, guide, params, (x,), num=600)
    ours = jax.tree_util.tree_map(lambda g: g / n, ours)  # the experiment's mean per image
    theirs = jax.jit(jax.vmap(hand))(jax.random.split(jax.random.key(9), 600))
    rng = np.random.default_rng(0)
    for name in params:
        a = np.asarray(ours[name]).reshape(600, -1)
        b = np.asarray(theirs[name]).reshape(600, -1)
        # compare the mean gradient along a few fixed directions (and their sum)
        dirs = np.concatenate([rng.normal(size=(a.shape[1], 3)), np.ones((a.shape[1], 1))], 1)
        pa, pb = a @ dirs, b @ dirs
        diff = pa.mean(0) - pb.mean(0)
        se = np.sqrt(pa.var(0) / 600 + pb.var(0) / 600)
        assert np.all(np.abs(diff) <= 4 * se + 1e-9 * (1 + np.abs(pb.mean(0)))), \
            (name, diff, se)


# ------------------------------------------------------------------ row_terms (library)
XR = jnp.array([[0.3, -1.0, 2.0], [1.5, 0.2, -0.7], [0.0, 0.4, 0.9], [-0.6, 1.1, 0.5]])


def _term(z, x):
    z = z.astype(float).reshape(-1)
    return jnp.tanh(z @ jnp.arange(1.0, z.size + 1) * 0.3 + x[0]) * x[1] + z[0] * z[-1] * x[2]


@pytest.mark.parametrize("family,est", [
    ("bernoulli", stochbp.fourier()), ("categorical", stochbp.fourier()),
    ("bernoulli", stochbp.disarm()), ("bernoulli", stochbp.arm()),
    ("bernoulli", stochbp.rebar()), ("bernoulli", stochbp.relax()),
    ("bernoulli", stochbp.score_function(baseline="leave_one_out")),
    ("categorical", stochbp.score_function(baseline="leave_one_out")),
], ids=lambda v: v if isinstance(v, str) else v.name)
def test_row_terms_equal_per_example(family, est):
    per = stochbp.per_example(_term, XR)
    rows = stochbp.row_terms(lambda Z: jax.vmap(_term)(Z, XR))
    if family == "bernoulli":
        theta = jnp.linspace(-1.0, 1.0, 8).reshape(4, 2)
        make = lambda t: nd.Bernoulli(logits=t)  # noqa: E731
    else:
        theta = jnp.linspace(-1.0, 1.0, 24).reshape(4, 2, 3)
        make = lambda t: nd.Categorical(logits=t)  # noqa: E731
    state = est.init(per, make(theta), jax.random.key(1))

    def run(f, t):
        return stochbp.expectation_with_state(f, make(t), jax.random.key(4), state,
                                              estimator=est, num_samples=3)[0]
    v1, g1 = jax.value_and_grad(run, argnums=1)(per, theta)
    v2, g2 = jax.value_and_grad(run, argnums=1)(rows, theta)
    np.testing.assert_allclose(v1, v2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-9, atol=1e-12)


def test_score_function_rows_unbiased():
    # per-row score weighting: against the exact gradient of a 2 x 2 Bernoulli batch
    f = stochbp.row_terms(lambda Z: jax.vmap(_term)(Z, XR[:2]))
    theta = jnp.array([[0.4, -0.3], [1.0, 0.2]])

    def exact(t):
        total = 0.0
        for cfg in itertools.product([0, 1], repeat=4):
            z = jnp.array(cfg).reshape(2, 2)
            total = total + jnp.exp(nd.Bernoulli(logits=t).log_prob(z).sum()) * f(z)
        return total
    est = stochbp.score_function()
    draws = jax.jit(jax.vmap(lambda k: jax.grad(lambda t: stochbp.expectation(
        f, nd.Bernoulli(logits=t), k, estimator=est))(theta)))(
            jax.random.split(jax.random.key(0), N))
    assert_matches({"t": draws}, {"t": jax.grad(exact)(theta)})


def test_column_substitutions_equal_vmap():
    from stochbp._src.substitution import column_substitutions
    k = jax.random.split(jax.random.key(0), 3)
    W = jax.random.normal(k[0], (7, 5))
    z = (jax.random.uniform(k[1], (4, 5)) < 0.5).astype(jnp.float64)
    x = jax.random.normal(k[2], (4, 7))

    def fn(v):
        l = v @ W.T + 0.1  # rank-one path
        a = jnp.sum(jnp.tanh(l) * x, axis=1)
        b = jnp.sum(jnp.log1p(jnp.exp(-jnp.abs(v * 2.0 - 1.0))), axis=1)  # elementwise
        c = jnp.max(v, axis=1) + v[:, 0] * v[:, -1]  # materialised
        return a + b + c + jnp.sum(v)
    cols = jnp.array([0, 3, 4, 1, 3])
    coef = jax.random.normal(jax.random.key(4), (5, 4))
    fast = column_substitutions(fn, z, cols, coef)
    slow = jax.vmap(lambda j, c: fn(z.at[:, j].add(c)))(cols, coef)
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ examples (shortened)
def test_example_sbn_mnist_runs(tmp_path):
    sbn = _example("sbn_mnist")
    rng = np.random.default_rng(0)
    bits = lambda n: (rng.random((n, 784)) < 0.2).astype(np.uint8)  # noqa: E731
    np.savez(tmp_path / "binarized_mnist.npz", train=bits(200), valid=bits(10), test=bits(10))
    out = tmp_path / "sbn.png"
    curves = sbn.main(["--steps", "6", "--latent", "8", "--data-dir", str(tmp_path),
                       "--out", str(out)])
    assert out.stat().st_size > 0
    assert set(curves) == {"fourier", "disarm", "relax", "TraceGraph_ELBO"}
    assert all(np.all(np.isfinite(v)) for v, _ in curves.values())


def test_example_mixture_runs(tmp_path):
    mix = _example("mixture_svi")
    out = tmp_path / "mix.png"
    curves = mix.main(["--steps", "50", "--n", "200", "--out", str(out)])
    assert out.stat().st_size > 0
    for steps, values, _ in curves.values():
        assert np.all(np.isfinite(values)) and values[-1] > values[0]


# ------------------------------------------------------------------ continuous, not pathwise
P7 = {"m": jnp.asarray(0.4), "s": jnp.asarray(0.7)}


def guide7(x):
    numpyro.sample("w", nd.Normal(numpyro.param("m", P7["m"]), numpyro.param("s", P7["s"])))


def _elbo7(p):
    m, s = p["m"], p["s"]
    # E log N(w; 0, 1.5) + E log N(0.7; w, 0.8) + H[N(m, s)]
    e_prior = -0.5 * jnp.log(2 * jnp.pi * 1.5 ** 2) - (m ** 2 + s ** 2) / (2 * 1.5 ** 2)
    e_lik = -0.5 * jnp.log(2 * jnp.pi * 0.8 ** 2) - ((0.7 - m) ** 2 + s ** 2) / (2 * 0.8 ** 2)
    return e_prior + e_lik + 0.5 * jnp.log(2 * jnp.pi * jnp.e * s ** 2)


@pytest.mark.parametrize("est", [None, stochbp.fourier(), stochbp.score_function()],
                         ids=lambda e: "default" if e is None else e.name)
def test_normal_site_any_estimator(est):
    elbo = si.ELBO(estimators={} if est is None else {"w": est})
    draws = grad_draws(elbo, model6, guide7, P7, (jnp.asarray(0.7),))
    assert_matches(draws, jax.grad(_elbo7)(P7))


def test_num_particles_average_and_vectorize():
    elbo = si.ELBO(estimators={"z": stochbp.disarm()}, num_particles=3)
    draws = grad_draws(elbo, model1, guide1, P1, (X1,), num=1000)
    assert_matches(draws, EXACT1)
    one = grad_draws(si.ELBO(estimators={"z": stochbp.disarm()}), model1, guide1, P1, (X1,),
                     num=1000)
    # three particles: about a third of the variance
    ratio = np.asarray(draws["l"]).var(0) / np.asarray(one["l"]).var(0)
    assert np.all(ratio < 0.5) and np.all(ratio > 0.2), ratio
    seq = si.ELBO(estimators={"z": stochbp.disarm()}, num_particles=3,
                  vectorize_particles=False)
    k = jax.random.key(7)
    np.testing.assert_allclose(seq.loss(k, P1, model1, guide1, X1),
                               elbo.loss(k, P1, model1, guide1, X1), rtol=1e-10)


# ------------------------------------------------------------------ mixed pathwise/discrete chain
P8 = {"l": jnp.asarray(0.3), "m": jnp.asarray(0.2), "bb": jnp.asarray(0.8),
      "s": jnp.asarray(0.6), "a": jnp.asarray(1.3), "c": jnp.asarray(-0.4)}
X8 = jnp.asarray(0.9)


def model8(x):
    z1 = numpyro.sample("z1", nd.Bernoulli(probs=0.4))
    y = numpyro.sample("y", nd.Normal(0.5 * z1, 1.0))
    z2 = numpyro.sample("z2", nd.Bernoulli(logits=y))
    numpyro.sample("x", nd.Normal(z2 + 0.5 * y - 0.3 * z1, 0.5), obs=x)


def guide8(x):
    p = {k: numpyro.param(k, v) for k, v in P8.items()}
    z1 = numpyro.sample("z1", nd.Bernoulli(logits=p["l"]))
    y = numpyro.sample("y", nd.Normal(p["m"] + p["bb"] * z1, p["s"]))  # pathwise
    numpyro.sample("z2", nd.Bernoulli(logits=p["a"] * y + p["c"]))


def _elbo8(p):
    gh_x, gh_w = np.polynomial.hermite.hermgauss(80)
    total = 0.0
    for z1 in (0.0, 1.0):
        q1 = jnp.exp(nd.Bernoulli(logits=p["l"]).log_prob(z1))
        mean = p["m"] + p["bb"] * z1
        y = mean + p["s"] * np.sqrt(2.0) * gh_x
        inner = 0.0
        for z2 in (0.0, 1.0):
            lq2 = nd.Bernoulli(logits=p["a"] * y + p["c"]).log_prob(z2)
            lp = nd.Normal(0.5 * z1, 1.0).log_prob(y) + nd.Bernoulli(logits=y).log_prob(z2) \
                + nd.Normal(z2 + 0.5 * y - 0.3 * z1, 0.5).log_prob(X8)
            inner = inner + jnp.exp(lq2) * (lp - lq2)
        e_y = jnp.sum(gh_w * inner) / np.sqrt(np.pi)
        entropy_y = 0.5 * jnp.log(2 * jnp.pi * jnp.e * p["s"] ** 2)
        lq1 = nd.Bernoulli(logits=p["l"]).log_prob(z1)
        total = total + q1 * (e_y + entropy_y + nd.Bernoulli(probs=0.4).log_prob(z1) - lq1)
    return total


@pytest.mark.parametrize("est", [stochbp.fourier(), stochbp.disarm(), stochbp.score_function()],
                         ids=lambda e: e.name)
def test_discrete_pathwise_discrete_chain(est):
    # z1 (estimator) -> y (pathwise, re-drawn with the same noise) -> z2 (estimator)
    elbo = si.ELBO(estimators={"z1": est, "z2": est})
    draws = grad_draws(elbo, model8, guide8, P8, (X8,), num=3000)
    assert_matches(draws, jax.grad(_elbo8)(P8), atol=1e-6)
