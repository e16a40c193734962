"""The extension API and the estimator protocol: a family and estimators defined outside
the package, one init signature, states, pytrees."""
import math
import pathlib
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest
from jax.scipy.special import gammaln

import stochbp
from stochbp._src import registry

EULER = 0.5772156649015329
ZETA3 = 1.2020569031595942


# ------------------------------------------------------------------ a user family
class GumbelFamily(stochbp.CoordinateFamily):
    """Gumbel(loc, scale): K(t) = loc t + log Gamma(1 - scale t), for scale t < 1."""

    name = "Gumbel"
    types = (nd.Gumbel,)
    series = True
    reparameterized = True

    def check(self, d):
        stochbp.checks.finite("Gumbel", "loc", d.loc)
        stochbp.checks.positive("Gumbel", "scale", d.scale)

    def cgf(self, d, t):
        return d.loc * t + gammaln(1.0 - d.scale * t)


@pytest.fixture
def gumbel_registered():
    saved = dict(registry._REGISTRY)
    stochbp.register_family(GumbelFamily())
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


def _quadratic(z):
    return jnp.sum(z ** 2)


def _gumbel_exact(theta):
    """E sum z^2 for independent Gumbel(mu_j, beta_j): (mu + beta gamma)^2 + pi^2 beta^2 / 6."""
    mu, beta = theta
    return jnp.sum((mu + beta * EULER) ** 2 + math.pi ** 2 * beta ** 2 / 6)


THETA = (jnp.array([0.3, -1.0]), jnp.array([0.7, 1.5]))


def _gumbel(theta):
    return nd.Gumbel(theta[0], theta[1])


def test_unregistered_family_is_refused_with_the_known_families():
    with pytest.raises(ValueError, match="Gumbel.*no rule.*Normal"):
        stochbp.expectation(_quadratic, _gumbel(THETA), jax.random.key(0),
                            estimator=stochbp.fourier(order=2))


def test_user_family_coefficients_come_from_its_cgf(gumbel_registered):
    d = _gumbel(THETA)
    coeffs = stochbp.family_of(d).coefficients(d, 3)
    mu, beta = THETA
    expected = [mu + beta * EULER, math.pi ** 2 * beta ** 2 / 12, ZETA3 * beta ** 3 / 3]
    np.testing.assert_allclose(coeffs, np.stack(expected), rtol=1e-5)


@pytest.mark.parametrize("estimator", [stochbp.fourier(order=2), stochbp.pathwise(),
                                       stochbp.score_function("leave_one_out")],
                         ids=["fourier", "pathwise", "score_function"])
def test_user_family_is_unbiased_with_builtin_estimators(gumbel_registered, estimator):
    check = stochbp.diagnostics.check_unbiased(
        _quadratic, _gumbel, THETA, jax.random.key(1), estimator=estimator,
        reference=_gumbel_exact, num_samples=2, num_draws=2000)
    assert check.passed, check.message
    # and the check is able to fail: a reference off by one unit is detected
    wrong = jax.tree_util.tree_map(lambda g: g + 1.0, jax.grad(_gumbel_exact)(THETA))
    stats = check.stats
    assert not all(np.all(np.abs(m - w) <= 4 * s) for m, w, s in zip(
        stats.mean, wrong, stats.stderr))


def test_user_family_parameter_check_names_the_parameter(gumbel_registered):
    with pytest.raises(ValueError, match="scale"):
        stochbp.expectation(_quadratic, nd.Gumbel(0.0, -1.0, validate_args=False),
                            jax.random.key(0), estimator=stochbp.fourier(order=2))


def test_register_family_rejects_malformed_families():
    class NoTypes(stochbp.Family):
        name = "broken"
    with pytest.raises(TypeError, match="types"):
        stochbp.register_family(NoTypes())


# ------------------------------------------------------------------ user estimators
@stochbp.register_estimator(data_fields=("weight",))
class Antithetic(stochbp.Estimator):
    """Pathwise gradient from antithetic pairs z = mu +- sigma eps of a Normal,
    mixed with weight w: value w * f(z+) + (1 - w) * f(z-) (unbiased for any w)."""

    weight: object = 0.5

    def check(self, dist):
        fam = stochbp.family_of(dist)
        if fam is None or fam.name != "Normal":
            raise ValueError("Antithetic: Normal only")

    def surrogate(self, f, dist, key, num_samples, state):
        eps = jax.random.normal(key, (num_samples,) + dist.batch_shape)
        plus = jax.vmap(f)(dist.loc + dist.scale * eps)
        minus = jax.vmap(f)(dist.loc - dist.scale * eps)
        return jnp.mean(self.weight * plus + (1 - self.weight) * minus), state


class CountState(NamedTuple):
    calls: jax.Array


@stochbp.register_estimator
class Counting(stochbp.Estimator):
    """Pathwise, counting its calls in a state (a stateful user estimator)."""

    def init(self, f, dist, key):
        return CountState(jnp.zeros((), jnp.int32))

    def check_state(self, state):
        if not isinstance(state, CountState):
            raise TypeError(f"Counting needs a CountState; got state={state!r}")

    def surrogate(self, f, dist, key, num_samples, state):
        value, _ = stochbp.pathwise().surrogate(f, dist, key, num_samples,
                                                stochbp.EmptyState())
        return value, CountState(state.calls + 1)


def _normal(theta):
    return nd.Normal(theta[0], theta[1])


def _normal_exact(theta):
    return jnp.sum(theta[0] ** 2 + theta[1] ** 2)


def test_user_estimator_is_unbiased_and_crosses_jit():
    est = Antithetic(weight=jnp.asarray(0.3))
    check = stochbp.diagnostics.check_unbiased(
        _quadratic, _normal, THETA, jax.random.key(2), estimator=est,
        reference=_normal_exact, num_draws=2000)
    assert check.passed, check.message

    @jax.jit
    def grad(est, theta, key):
        return jax.grad(lambda th: stochbp.expectation(
            _quadratic, _normal(th), key, estimator=est, num_samples=4))(theta)

    g1 = grad(est, THETA, jax.random.key(3))
    g2 = grad(Antithetic(weight=jnp.asarray(0.5)), THETA, jax.random.key(3))
    assert grad._cache_size() == 1  # the weight is traced, not baked in
    assert not np.allclose(g1[0], g2[0])


def test_user_stateful_estimator_threads_its_state():
    est = Counting()
    d = _normal(THETA)
    state = est.init(_quadratic, d, jax.random.key(0))
    for i in range(3):
        _, state = stochbp.expectation_with_state(_quadratic, d, jax.random.key(i), state,
                                                  estimator=est)
    assert int(state.calls) == 3
    with pytest.raises(TypeError, match="CountState"):
        stochbp.expectation(_quadratic, d, jax.random.key(0), estimator=est)


# ------------------------------------------------------------------ one init signature
def _bern(theta):
    return nd.Bernoulli(logits=theta)


@pytest.mark.parametrize("factory,state_type", [
    (lambda: stochbp.fourier(), stochbp.EmptyState),
    (lambda: stochbp.grg(), stochbp.EmptyState),
    (lambda: stochbp.score_function(), stochbp.EmptyState),
    (lambda: stochbp.score_function("moving_average"), stochbp.MovingAverageState),
    (lambda: stochbp.arm(), stochbp.EmptyState),
    (lambda: stochbp.disarm(), stochbp.EmptyState),
    (lambda: stochbp.gumbel_softmax(0.5), stochbp.EmptyState),
    (lambda: stochbp.rebar(), stochbp.EmptyState),
    (lambda: stochbp.rebar(tune=True), stochbp.RelaxState),
    (lambda: stochbp.relax(hidden=4), stochbp.RelaxState),
])
def test_every_estimator_has_one_init_signature(factory, state_type):
    est = factory()
    f = lambda z: jnp.sum(z)  # noqa: E731
    d = nd.Gamma(jnp.ones(3)) if est.name == "grg" else _bern(jnp.zeros(3))
    state = est.init(f, d, jax.random.key(0))
    assert type(state) is state_type
    value, new_state = stochbp.expectation_with_state(f, d, jax.random.key(1), state,
                                                      estimator=est, num_samples=2)
    assert jax.tree_util.tree_structure(new_state) == \
        jax.tree_util.tree_structure(state)
    if state_type is stochbp.EmptyState:
        stochbp.expectation(f, d, jax.random.key(1), estimator=est, num_samples=2)
    else:
        with pytest.raises(TypeError, match=r"expectation_with_state.*"
                           r"estimator\.init\(f, dist, key\)"):
            stochbp.expectation(f, d, jax.random.key(1), estimator=est, num_samples=2)


def test_relax_user_control_takes_its_parameters_from_the_factory():
    control = lambda p, y: p["a"] * jnp.sum(y)  # noqa: E731
    est = stochbp.relax(control=control, control_params={"a": jnp.asarray(0.1)})
    state = est.init(jnp.sum, _bern(jnp.zeros(2)), jax.random.key(0))
    assert float(state.params["a"]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="control_params"):
        stochbp.relax(control=control)
    with pytest.raises(ValueError, match="control_params"):
        stochbp.relax(control_params={"a": 1.0})


def test_variance_gradient_is_the_one_way_to_train_a_control_variate():
    f = lambda z: jnp.sum((z - 0.45) ** 2)  # noqa: E731
    est = stochbp.rebar(tune=True)
    theta = jnp.array([0.2, -0.4])
    state = est.init(f, _bern(theta), jax.random.key(0))
    value, g = stochbp.variance_gradient(f, _bern, theta, jax.random.key(5), state,
                                         estimator=est)
    assert np.isfinite(value) and float(value) > 0
    assert float(jnp.abs(g.eta)) > 0  # the estimate depends on eta
    # a stateless estimator has nothing to train: zero gradient, not an error
    _, g0 = stochbp.variance_gradient(f, _bern, theta, jax.random.key(5),
                                      stochbp.EmptyState(), estimator=stochbp.disarm())
    assert jax.tree_util.tree_leaves(g0) == []


# ------------------------------------------------------------------ pytrees through jit
def test_estimators_and_declarations_are_pytrees():
    eps = jnp.asarray([0.3, 0.5])
    est = stochbp.fourier_exponential(eps)
    assert jax.tree_util.tree_leaves(est)[0] is eps
    A = jnp.ones((2, 3))
    lin = stochbp.linear(jax.nn.log_sigmoid, A, elementwise=True)
    per = stochbp.per_example(lin, data=jnp.zeros((4, 1)))
    leaves = jax.tree_util.tree_leaves(per)
    assert len(leaves) == 2  # A and the data; g is static
    back = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(per), leaves)
    assert back.term.g is jax.nn.log_sigmoid and back.num_examples == 4

    @jax.jit
    def grad(est, f, loc, key):
        return jax.grad(lambda m: stochbp.expectation(
            f, nd.Normal(m, 1.0), key, estimator=est, num_samples=8))(loc)

    f = stochbp.linear(lambda u: jnp.exp(u), jnp.eye(2), elementwise=True)
    g = grad(stochbp.fourier_exponential(jnp.ones(2)), f, jnp.zeros(2), jax.random.key(0))
    assert g.shape == (2,) and np.all(np.isfinite(g))


def test_estimators_never_inspect_distribution_classes():
    """Architecture: estimators ask the family (stochbp.family_of), never numpyro classes."""
    root = pathlib.Path(stochbp.__file__).parent / "_src" / "estimators"
    offenders = []
    for path in root.glob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"isinstance\([^)]*nd\.(?!Distribution\b)", line) or \
                    re.search(r"nd\.(Bernoulli|Categorical|Normal|Gamma|Delta)", line):
                offenders.append(f"{path.name}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_mixture_refused_by_fourier_in_check_before_tracing():
    mix = nd.MixtureSameFamily(nd.Categorical(logits=jnp.zeros(2)),
                               nd.Normal(jnp.zeros(2), jnp.ones(2)))
    with pytest.raises(ValueError, match="no Fourier rule for MixtureSameFamily"):
        stochbp.fourier().check(mix)


def test_library_import_is_lean():
    """`import stochbp` needs only jax, numpy and numpyro (the experiments extra is
    optional): no optax, matplotlib or scikit-learn (tqdm comes with numpyro)."""
    import subprocess
    import sys
    code = ("import sys, stochbp, stochbp.diagnostics; "
            "bad = [m for m in ('optax', 'matplotlib', 'sklearn', "
            "'stochbp.experiments') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", out


def test_compare_measures_estimators_side_by_side(tmp_path):
    theta = {"loc": jnp.array([0.3, -0.2]), "scale": jnp.array([1.0, 0.5])}
    make = lambda th: nd.Normal(th["loc"], th["scale"])  # noqa: E731
    exact = lambda th: jnp.sum(th["loc"] ** 2 + th["scale"] ** 2)  # noqa: E731
    result = stochbp.diagnostics.compare(
        _quadratic, make, theta, jax.random.key(4),
        {"fourier": stochbp.fourier(), "score": stochbp.score_function()},
        num_samples=2, num_draws=400, reference=exact, timing_repeats=3)
    rows = {(r.estimator, r.block): r for r in result.rows}
    assert set(rows) == {(e, b) for e in ("fourier", "score") for b in ("loc", "scale")}
    for r in result.rows:
        assert r.max_z < 4.5 and r.seconds > 0 and r.variance_time == r.variance * r.seconds
    # Price's theorem is exact for the scale of a quadratic f: zero variance there
    assert rows[("fourier", "scale")].variance < 1e-12 < rows[("score", "scale")].variance
    assert result.best() == "fourier"
    table = result.table()
    assert table.count("\n") == 5 and "variance × time" in table
    result.plot(tmp_path / "compare.png")
    assert (tmp_path / "compare.png").stat().st_size > 5000
    with pytest.raises(ValueError, match="estimators"):
        stochbp.diagnostics.compare(_quadratic, make, theta, jax.random.key(4), {})
