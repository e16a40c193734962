"""REBAR (Tucker et al. 2017) and RELAX (Grathwohl et al. 2018), Bernoulli and Categorical.

Both are the score-function estimator with a control variate c evaluated on the
continuous variable z behind the discrete sample b = H(z), plus the reparameterised
correction that makes the control variate's mean exact:

    ghat = [f(b) - c(z~)] grad log p(b) + grad c(z) - grad c(z~),

with z drawn by reparameterisation (logistic or Gumbel noise added to the logits), b its
threshold / argmax, and z~ a reparameterised draw from p(z | b). ghat is unbiased for
**any** c, so the control variate can be tuned freely. Here

    REBAR:  c(z) = eta f(sigma_lambda(z)),
    RELAX:  c(z) = eta f(sigma_lambda(z)) + r_phi(sigma_lambda(z)),

sigma_lambda being the Concrete relaxation at temperature lambda (sigmoid(z / lambda),
or softmax(z / lambda) over the K classes) and r_phi a small neural network (or a
function you supply). With ``control_inputs="noise_and_params"`` the network sees
more than the relaxed sample: r_phi(sigma_lambda(z), z - o(l), l), where o(l) is the
offset the noise was added to (l for Bernoulli, log softmax(l) for Categorical), so
z - o(l) is the logistic / Gumbel noise (for z~, the conditional noise consistent with
b), and l are the current logits, held constant (no gradient flows through o(l) or l).
For fixed parameters this is still a function of z alone, so ghat stays unbiased for
any phi. f must therefore accept relaxed values (floats in (0, 1) for
Bernoulli; one-hot rows for Categorical: ``stochbp.one_hot`` or a categorical
``stochbp.linear``).

Everything is computed in logit space (grad is with respect to the logits l; for a
probs-parameterised distribution the gradient is chained through
l = log p - log(1 - p), or log p for Categorical).

**Control-variate parameters are state.** ``rebar()`` with fixed eta = 1 and
temperature 0.5 is stateless. ``rebar(tune=True)`` and ``relax()`` keep
``RelaxState(eta, log_temperature, params)`` (a pytree) and are used with
``stochbp.expectation_with_state``; the state is returned unchanged. To lower the
variance, ``stochbp.variance_gradient(f, make_dist, theta, key, state, estimator=est)``
returns the single-draw estimate of E||g_theta||^2 and its gradient with respect to the
state, where g_theta is the estimator's gradient with respect to theta (for
``make_dist`` building the distribution from theta). Since E[g_theta] does not depend on
the control variate, that gradient is the gradient of the variance; apply it with optax
(see the docstring of :func:`relax`).
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Tuple

import jax
import numpyro.distributions as nd
import jax.numpy as jnp
from jax import lax

from stochbp._src import checks, structure
from stochbp._src.estimators.base import (Estimator, register_estimator, require_logits,
                                          stateful_error)
from stochbp._src.estimators.discrete import (CONDITIONAL_STREAM, NOISE_STREAM, LogitView,
                                              logit_view, open_uniform)
from stochbp._src.registry import family_of, unwrap


class ControlInputs(NamedTuple):
    """What ``relax(control_inputs="noise_and_params")`` passes to the control network
    (each of the sample's shape: batch_shape, plus (K,) for a Categorical; one example's
    row with a per_example f)."""

    relaxed: jax.Array  # sigma_lambda(z)
    noise: jax.Array  # z - o(l): the logistic or Gumbel noise behind z
    logits: jax.Array  # the distribution's logits l (a constant for the network)


CONTROL_INPUTS = ("relaxed", "noise_and_params")


class RelaxState(NamedTuple):
    """Tunable control-variate parameters (a pytree; train it with optax)."""

    eta: jax.Array  # weight of f(sigma_lambda(z)) in the control variate
    log_temperature: jax.Array  # log lambda
    params: Any  # parameters of r_phi (None for REBAR)


# ------------------------------------------------------------------ the default network
def _mlp_init(key, in_size: int, hidden: Tuple[int, ...], dtype) -> list:
    sizes = (in_size,) + tuple(hidden)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        w = jax.random.normal(sub, (n_in, n_out), dtype) / math.sqrt(n_in)
        layers.append({"w": w, "b": jnp.zeros((n_out,), dtype)})
    # zero output layer: r_phi starts at 0, so relax() starts as rebar()
    layers.append({"w": jnp.zeros((sizes[-1],), dtype), "b": jnp.zeros((), dtype)})
    return layers


def _mlp(params, y):
    """tanh MLP on the concatenated, flattened inputs (an array or ControlInputs)."""
    h = jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(y)])
    for layer in params[:-1]:
        h = jnp.tanh(h @ layer["w"] + layer["b"])
    return h @ params[-1]["w"] + params[-1]["b"]


def _row_shape(dist, f) -> Tuple[int, ...]:
    base = unwrap(dist)
    shape = tuple(base.batch_shape)
    num_classes = family_of(base).num_classes(base)
    if num_classes is not None:
        shape = shape + (num_classes,)
    return shape[1:] if structure.has_rows(f) else shape


# ------------------------------------------------------------------ the estimator
@register_estimator(data_fields=("control_params",))
class Relax(Estimator):
    temperature: float = 0.5
    eta: float = 1.0
    network: bool = False
    hidden: Tuple[int, ...] = (64,)
    control: Optional[Callable] = None
    tune: bool = False
    control_params: Any = None  # initial parameters of a user control function
    control_inputs: str = "relaxed"  # or "noise_and_params" (ControlInputs)

    @property
    def name(self) -> str:
        if self.network:
            return "relax"
        return "rebar(tune=True)" if self.tune else "rebar"

    @property
    def _tunable(self) -> bool:
        return self.network or self.tune

    @property
    def _owner(self) -> str:
        return "relax()" if self.network else "rebar()"

    def init(self, f, dist, key):
        """``EmptyState()`` for plain rebar(); else RelaxState(eta, log_temperature,
        params). relax() sizes its default network from ``dist`` and ``f`` (a
        per_example f gets one network applied to each example's row) and draws its
        weights with ``key``; relax(control=fn, control_params=p) starts from p."""
        if not self._tunable:
            return super().init(f, dist, key)
        dtype = jnp.result_type(float)
        eta = jnp.asarray(self.eta, dtype)
        log_t = jnp.log(jnp.asarray(self.temperature, dtype))
        if not self.network:
            return RelaxState(eta, log_t, None)
        if self.control is not None:
            return RelaxState(eta, log_t, self.control_params)
        if not isinstance(dist, nd.Distribution):
            raise TypeError("relax().init(f, dist, key): dist must be the numpyro "
                            "distribution the network is sized for; got "
                            f"dist={dist!r}")
        require_logits(self._owner, dist)
        size = self._input_size(dist, f)
        return RelaxState(eta, log_t, _mlp_init(key, size, self.hidden, dtype))

    def _input_size(self, dist, f) -> int:
        size = int(math.prod(_row_shape(dist, f)))
        return size if self.control_inputs == "relaxed" else 3 * size

    def check(self, dist):
        require_logits(self._owner, dist)

    def check_state(self, state):
        if not self._tunable:
            return super().check_state(state)
        if not isinstance(state, RelaxState):
            raise stateful_error(self, state, RelaxState)
        if self.network and state.params is None:
            raise ValueError(f"{self._owner}: state.params is None; build the state with "
                             "estimator.init(f, dist, key)")

    # -- control-variate parameters
    def _parameters(self, state) -> RelaxState:
        if not self._tunable:
            return RelaxState(self.eta, math.log(self.temperature), None)
        self.check_state(state)
        return state

    def _check_call(self, f, view: LogitView, state) -> RelaxState:
        owner = self._owner
        if view.categorical:
            structure.require_one_hot(owner, f)
            structure.check_num_classes(owner, f, view.num_classes)
        structure.check_rows(f, view.base.batch_shape)
        cv = self._parameters(state)
        if self.network and self.control is None:
            expected = self._input_size(view.base, f)
            got = jnp.shape(cv.params[0]["w"])[0]
            if got != expected:
                raise ValueError(f"relax(): state.params is a network for inputs of size "
                                 f"{got} but this distribution and f give rows of size "
                                 f"{expected}; build the state with "
                                 "estimator.init(f, dist, key)")
        return cv

    def _control(self, f, categorical, cv, relaxed, offset, l):
        """c(z) per row (n,) for a per_example f, else a scalar; ``relaxed`` maps z to
        sigma_lambda(z) and ``offset`` is the constant o(l) (z = o(l) + noise)."""
        def c(z):
            y = relaxed(z)
            value = cv.eta * structure.row_values(f, y, one_hot=categorical)
            if not self.network:
                return value
            net = self.control if self.control is not None else _mlp
            if self.control_inputs == "noise_and_params":
                x = ControlInputs(y, z - offset, jnp.broadcast_to(l, z.shape))
            else:
                x = y
            if structure.has_rows(f):
                return value + jax.vmap(lambda xi: net(cv.params, xi))(x)
            return value + net(cv.params, x)
        return c

    def _one_sample(self, f, categorical, l, keys, cv):
        """(f at the hard sample, per-row signals, and ghat with respect to l)."""
        lam = jnp.exp(cv.log_temperature)
        u = open_uniform(keys[NOISE_STREAM], l.shape, l.dtype)
        v = open_uniform(keys[CONDITIONAL_STREAM], l.shape, l.dtype)
        if categorical:
            gumbel = -jnp.log(-jnp.log(u))
            log_v = jnp.log(-jnp.log(v))  # log of the Exp(1) variable -log v
            z_of = lambda ll: jax.nn.log_softmax(ll, -1) + gumbel  # noqa: E731
            b = jnp.argmax(z_of(lax.stop_gradient(l)), axis=-1)
            hot = jax.nn.one_hot(b, l.shape[-1], dtype=l.dtype)

            def zt_of(ll):  # z given argmax z = b: the top is Gumbel(0), others truncated
                lp = jax.nn.log_softmax(ll, -1)
                log_vb = jnp.sum(hot * log_v, axis=-1, keepdims=True)
                return jnp.where(hot > 0, -log_vb, -jnp.logaddexp(log_v - lp, log_vb))

            relaxed = lambda z: jax.nn.softmax(z / lam, axis=-1)  # noqa: E731
            score = hot - jax.nn.softmax(l, -1)
            hard = b
            offset = jax.nn.log_softmax(l, -1)
        else:
            logit_u = jnp.log(u) - jnp.log1p(-u)
            logit_v = jnp.log(v) - jnp.log1p(-v)
            z_of = lambda ll: ll + logit_u  # noqa: E731
            b = (z_of(lax.stop_gradient(l)) > 0).astype(l.dtype)

            def zt_of(ll):  # z given (z > 0) = b, by inverting the conditional CDF
                up = jax.nn.softplus(logit_v - jax.nn.log_sigmoid(-ll))
                down = -jax.nn.softplus(-logit_v - jax.nn.log_sigmoid(ll))
                return jnp.where(b > 0, up, down)

            relaxed = lambda z: jax.nn.sigmoid(z / lam)  # noqa: E731
            score = b - jax.nn.sigmoid(l)
            hard = b
            offset = l

        c = self._control(f, categorical, cv, relaxed, lax.stop_gradient(offset),
                          lax.stop_gradient(l))

        def cv_difference(ll):
            c_z, c_zt = c(z_of(ll)), c(zt_of(ll))
            return jnp.sum(c_z) - jnp.sum(c_zt), c_zt

        (_, c_zt), reparam = jax.value_and_grad(cv_difference, has_aux=True)(l)
        f_hard = structure.row_values(f, hard)
        signal = structure.expand_rows(f_hard - c_zt, l.ndim)
        return f_hard, signal * score + reparam

    def _estimate(self, f, categorical, l, key, num_samples, cv):
        """Mean over S draws of (sum of f at the hard samples, ghat)."""
        keys = jax.random.split(key, (num_samples, 2))
        f_hard, ghat = jax.vmap(lambda k: self._one_sample(f, categorical, l, k, cv))(keys)
        total = jnp.sum(f_hard.reshape(num_samples, -1), axis=1)
        return jnp.mean(total), jnp.mean(ghat, axis=0)

    def _surrogate(self, f, dist, key, num_samples, state, *, stop):
        view = logit_view(dist)
        cv = self._check_call(f, view, state)
        if stop:
            cv = jax.tree_util.tree_map(lax.stop_gradient, cv)
        value, ghat = self._estimate(f, view.categorical, lax.stop_gradient(view.logits),
                                     key, num_samples, cv)
        # value: f at the hard samples (ordinary backprop for arrays f closes over);
        # ghat enters only through the logits.
        f_mean = value if stop else lax.stop_gradient(value)
        return value + view.surrogate(ghat, f_mean, stop=stop), state

    def surrogate(self, f, dist, key, num_samples, state):
        return self._surrogate(f, dist, key, num_samples, state, stop=True)

    def differentiable_surrogate(self, f, dist, key, num_samples, state):
        """ghat stays a differentiable function of the control-variate state, so
        ``stochbp.variance_gradient`` can differentiate E||g||^2 with respect to it."""
        return self._surrogate(f, dist, key, num_samples, state, stop=False)


def rebar(temperature: float = 0.5, eta: float = 1.0, *, tune: bool = False) -> Relax:
    """REBAR: score function with control variate eta f(sigma_lambda(z)); unbiased.

    Args:
      temperature: lambda > 0 of the Concrete relaxation used by the control variate.
      eta: weight of the control variate (eta = 0 is plain REINFORCE).
      tune: if True, eta and log(temperature) live in a ``RelaxState`` (use
        ``stochbp.expectation_with_state`` with ``state = estimator.init(f, dist, key)``)
        and can be trained to minimise the variance with ``stochbp.variance_gradient``
        (see :func:`relax`).

    Bernoulli and Categorical (f must accept relaxed values: see the module docstring).
    The gradient is with respect to the logits, chained to probs by
    l = log p - log(1 - p) (Bernoulli) or log p (Categorical). Costs three evaluations of
    f and two of its gradient per sample.
    """
    temperature = checks.positive_number("rebar()", "temperature", temperature)
    eta = checks.finite_number("rebar()", "eta", eta)
    tune = checks.boolean("rebar()", "tune", tune)
    return Relax(temperature=temperature, eta=eta, network=False, tune=tune)


def relax(temperature: float = 0.5, eta: float = 1.0, *, hidden=(64,),
          control: Optional[Callable] = None, control_params: Any = None,
          control_inputs: str = "relaxed") -> Relax:
    """RELAX: REBAR's control variate plus a learned network r_phi; unbiased for any phi.

    c(z) = eta f(sigma_lambda(z)) + r_phi(sigma_lambda(z)). By default r_phi is a tanh
    MLP with the given hidden sizes, fed one relaxed sample (one example's row when f is
    a ``stochbp.per_example``), with a zero output layer so that it starts as REBAR.
    ``control(params, y) -> scalar`` replaces it with your own function.
    ``control_inputs="noise_and_params"`` gives the network (or your control, as
    ``control(params, inputs)``) a ``ControlInputs(relaxed, noise, logits)`` instead of
    the relaxed sample alone: the noise behind z (or z~) and the current logits, held
    constant; the default network then takes their concatenation (3x the inputs).

    Stateful: eta, log(temperature) and the network parameters form a ``RelaxState``::

        est = stochbp.relax()
        state = est.init(f, make_dist(theta), jax.random.key(1))
        opt = optax.adam(1e-3); opt_state = opt.init(state)

        def loss(theta, state, key):
            return stochbp.expectation_with_state(f, make_dist(theta), key, state,
                                                  estimator=est)
        (value, state), g = jax.value_and_grad(loss, has_aux=True)(theta, state, key)
        _, cv_grad = stochbp.variance_gradient(f, make_dist, theta, key, state,
                                               estimator=est)
        updates, opt_state = opt.update(cv_grad, opt_state, state)
        state = optax.apply_updates(state, updates)

    Args:
      temperature, eta: initial lambda and eta (both are tuned with the state).
      hidden: hidden layer sizes of the default network.
      control: optional ``control(params, y) -> scalar`` replacing the network.
      control_params: the initial ``params`` of ``control`` (a pytree of arrays).
      control_inputs: ``"relaxed"`` (default) or ``"noise_and_params"``.

    Bernoulli and Categorical; gradients with respect to the logits as for rebar().
    """
    temperature = checks.positive_number("relax()", "temperature", temperature)
    eta = checks.finite_number("relax()", "eta", eta)
    checks.callable_or_none("relax()", "control", control, "(params, y)")
    if control is not None and control_params is None:
        raise ValueError("relax(control=...): pass control_params=, the initial "
                         "parameters of your control function; got control_params=None")
    if control is None and control_params is not None:
        raise ValueError("relax(): control_params is for a user control function; pass "
                         "control= too, or drop control_params")
    hidden = checks.layer_sizes("relax()", "hidden", hidden)
    if not (isinstance(control_inputs, str) and control_inputs in CONTROL_INPUTS):
        raise ValueError(f"relax(): control_inputs must be one of {CONTROL_INPUTS}; got "
                         f"control_inputs={control_inputs!r}")
    return Relax(temperature=temperature, eta=eta, network=True, hidden=hidden,
                 control=control, tune=True, control_params=control_params,
                 control_inputs=control_inputs)
