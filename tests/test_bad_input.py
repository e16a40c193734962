"""Invalid input fails before sampling with an error that names the argument."""
import jax
import jax.numpy as jnp
import numpyro.distributions as nd
import pytest

import stochbp

KEY = jax.random.PRNGKey(0)


def call(dist, est=None, f=jnp.sum, **kw):
    return stochbp.expectation(f, dist, KEY, estimator=est or stochbp.fourier(order=2), **kw)


NV = {"validate_args": False}  # bypass numpyro's own construction-time check


@pytest.mark.parametrize("make, name", [
    (lambda: nd.Normal(0.0, -1.0, **NV), "scale"),
    (lambda: nd.Normal(jnp.nan, 1.0, **NV), "loc"),
    (lambda: nd.Laplace(0.0, 0.0, **NV), "scale"),
    (lambda: nd.Gamma(-2.0, 1.0, **NV), "concentration"),
    (lambda: nd.Gamma(2.0, jnp.nan, **NV), "rate"),
    (lambda: nd.Exponential(-1.0, **NV), "rate"),
    (lambda: nd.Chi2(-3.0, **NV), "concentration"),
    (lambda: nd.Beta(0.0, 1.0, **NV), "concentration"),  # numpyro checks its inner Dirichlet
    (lambda: nd.Dirichlet(jnp.array([1.0, -1.0]), **NV), "concentration"),
    (lambda: nd.Bernoulli(probs=jnp.array([0.5, 1.5]), **NV), "probs"),
    (lambda: nd.Bernoulli(probs=jnp.nan, **NV), "probs"),
    (lambda: nd.Categorical(probs=jnp.array([0.5, 0.7]), **NV), "probs"),
    (lambda: nd.Delta(jnp.nan, **NV), "v"),
])
def test_invalid_parameters(make, name):
    with pytest.raises(ValueError, match=name) as err:
        call(make())
    assert "got" in str(err.value)  # the message shows the offending value


def test_invalid_parameters_under_grad():
    with pytest.raises(ValueError, match="scale"):
        jax.grad(lambda s: call(nd.Normal(0.0, s), stochbp.pathwise()))(-1.0)


def test_not_positive_definite():
    with pytest.raises(ValueError, match="scale_tril"):
        call(nd.MultivariateNormal(jnp.zeros(2), scale_tril=jnp.array([[1.0, 0.0],
                                                                        [0.3, -0.5]]), **NV))


@pytest.mark.parametrize("order", [0, -1, 2.5, "8", True])
def test_bad_order(order):
    with pytest.raises(ValueError, match="order"):
        stochbp.fourier(order=order)


@pytest.mark.parametrize("dist", [nd.Laplace(0.0, 1.0), nd.Gamma(2.0, 1.0),
                                  nd.Exponential(1.0), nd.Beta(2.0, 2.0),
                                  nd.Dirichlet(jnp.ones(3))])
def test_missing_order_for_series_family(dist):
    with pytest.raises(ValueError, match="order is required"):
        call(dist, stochbp.fourier())


def test_f_must_return_scalar():
    with pytest.raises(TypeError, match="scalar"):
        call(nd.Normal(jnp.zeros(3), 1.0), f=lambda z: z * 2)


@pytest.mark.parametrize("n", [0, -3, 1.5, True])
def test_num_samples(n):
    with pytest.raises(ValueError, match="num_samples"):
        call(nd.Normal(0.0, 1.0), num_samples=n)


@pytest.mark.parametrize("dist", [nd.Bernoulli(probs=0.3), nd.Categorical(probs=jnp.ones(3) / 3)])
def test_pathwise_on_discrete(dist):
    with pytest.raises(ValueError, match="pathwise"):
        call(dist, stochbp.pathwise())


def test_score_function_on_delta():
    with pytest.raises(ValueError, match="Delta"):
        call(nd.Delta(1.0), stochbp.score_function())


def test_fourier_on_unknown_family():
    with pytest.raises(ValueError, match="Gumbel"):
        call(nd.Gumbel(0.0, 1.0))


def test_exponential_rule_domain_and_family():
    with pytest.raises(ValueError, match="epsilon"):
        call(nd.Gamma(2.0, 1.0), stochbp.fourier_exponential(1.5))
    with pytest.raises(ValueError, match="epsilon"):
        call(nd.Laplace(0.0, 1.0), stochbp.fourier_exponential(-1.0))
    with pytest.raises(ValueError, match="Beta"):
        call(nd.Beta(2.0, 2.0), stochbp.fourier_exponential(0.5))


def test_bad_estimator_key_dist():
    with pytest.raises(TypeError, match="estimator"):
        stochbp.expectation(jnp.sum, nd.Normal(0.0, 1.0), KEY, estimator="pathwise")
    with pytest.raises(TypeError, match="key"):
        stochbp.expectation(jnp.sum, nd.Normal(0.0, 1.0), 42, estimator=stochbp.pathwise())
    with pytest.raises(TypeError, match="dist"):
        stochbp.expectation(jnp.sum, "normal", KEY, estimator=stochbp.pathwise())


def test_score_function_options():
    with pytest.raises(ValueError, match="baseline"):
        stochbp.score_function(baseline="mean")
    with pytest.raises(ValueError, match="decay"):
        stochbp.score_function(baseline="moving_average", decay=1.5)
    with pytest.raises(ValueError, match="num_samples"):
        call(nd.Normal(0.0, 1.0), stochbp.score_function(baseline="leave_one_out"))
    with pytest.raises(TypeError, match="expectation_with_state"):
        call(nd.Normal(0.0, 1.0), stochbp.score_function(baseline="moving_average"))


def test_linear_shapes():
    with pytest.raises(ValueError, match="A"):
        stochbp.linear(jnp.tanh, jnp.ones(3))
    with pytest.raises(ValueError, match="b"):
        stochbp.linear(jnp.tanh, jnp.ones((3, 2)), jnp.ones(2))


def test_grg_only_for_gamma():
    with pytest.raises(ValueError, match="grg"):
        call(nd.Normal(0.0, 1.0), stochbp.grg())


@pytest.mark.parametrize("est, dist, fewest", [
    (stochbp.score_function("leave_one_out"), nd.Normal(0.0, 1.0), 2),
    (stochbp.delta_method(stochbp.score_function(), "estimated"), nd.Normal(0.0, 1.0), 3),
    (stochbp.mixture_marginal(), nd.MixtureSameFamily(nd.Categorical(logits=jnp.zeros(4)),
                                                      nd.Normal(jnp.zeros(4), 1.0)), 4),
])
def test_too_few_samples_for_the_estimator(est, dist, fewest):
    """An estimator's min_samples is enforced before any work, naming num_samples."""
    assert est.min_samples(dist) == fewest
    calls = []
    with pytest.raises(ValueError, match=f"num_samples >= {fewest}.*num_samples={fewest - 1}"):
        call(dist, est, f=lambda z: calls.append(1) or jnp.sum(z), num_samples=fewest - 1)
    assert not calls  # f never traced
    call(dist, est, num_samples=fewest)  # the fewest accepted runs
