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
function you supply). f must therefore accept relaxed values (floats in (0, 1) for
Bernoulli; one-hot rows for Categorical: ``stochbp.one_hot`` or a categorical
``stochbp.linear``).

Everything is computed in logit space (grad is with respect to the logits l; for a
probs-parameterised distribution the gradient is chained through
l = log p - log(1 - p), or log p for Categorical).

**Control-variate parameters are state.** ``rebar()`` with fixed eta = 1 and
temperature 0.5 is stateless. ``rebar(tune=True)`` and ``relax()`` keep
``RelaxState(eta, log_temperature, params)`` (a pytree) and are used with
``stochbp.expectation_with_state``; the state is returned unchanged. To lower the
variance, ``estimator.variance_gradient(f, make_dist, theta, key, state)`` returns the
single-draw estimate of E||g_theta||^2 and its gradient with respect to the state, where
g_theta is the estimator's gradient with respect to theta (for ``make_dist`` building
the distribution from theta). Since E[g_theta] does not depend on the control variate,
that gradient is the gradient of the variance; apply it with optax (see the docstring of
:func:`relax`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
from jax import lax

from stochbp._src import structure
from stochbp._src.estimators.base import Estimator
from stochbp._src.estimators.discrete import (boolean, finite_number, is_categorical,
                                              logit_surrogate, logits_of, open_uniform,
                                              positive_number, require_discrete)
from stochbp._src.families.base import unwrap


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
    h = y.reshape(-1)
    for layer in params[:-1]:
        h = jnp.tanh(h @ layer["w"] + layer["b"])
    return h @ params[-1]["w"] + params[-1]["b"]


def _row_shape(dist, f) -> Tuple[int, ...]:
    base = unwrap(dist)
    shape = tuple(base.batch_shape)
    if is_categorical(base):
        shape = shape + (base.probs.shape[-1],)
    return shape[1:] if structure.has_rows(f) else shape


# ------------------------------------------------------------------ the estimator
@dataclasses.dataclass(frozen=True)
class Relax(Estimator):
    temperature: float = 0.5
    eta: float = 1.0
    network: bool = False
    hidden: Tuple[int, ...] = (64,)
    control: Optional[Callable] = None
    tune: bool = False

    @property
    def name(self) -> str:
        if self.network:
            return "relax"
        return "rebar(tune=True)" if self.tune else "rebar"

    @property
    def stateful(self) -> bool:  # type: ignore[override]
        return self.network or self.tune

    def init(self, dist=None, f: Optional[Callable] = None, *, key=None,
             params: Any = None) -> Optional[RelaxState]:
        """Initial state: None for plain rebar(); else RelaxState(eta, log_temperature,
        params). relax() sizes its network from ``dist`` (and ``f``: a per_example f
        gets one network applied to each example's row) and draws it with ``key``
        (default PRNGKey(0)); relax(control=fn) needs ``params``."""
        if not self.stateful:
            return None
        dtype = jnp.result_type(float)
        eta = jnp.asarray(self.eta, dtype)
        log_t = jnp.log(jnp.asarray(self.temperature, dtype))
        if not self.network:
            return RelaxState(eta, log_t, None)
        if self.control is not None:
            if params is None:
                raise ValueError("relax(control=...).init(): pass params=, the initial "
                                 "parameters of your control function; got params=None")
            return RelaxState(eta, log_t, params)
        if dist is None:
            raise ValueError("relax().init(dist, f): dist is required to size the "
                             "control-variate network; got dist=None")
        require_discrete("relax()", dist)
        size = int(math.prod(_row_shape(dist, f)))
        key = jax.random.PRNGKey(0) if key is None else key
        return RelaxState(eta, log_t, _mlp_init(key, size, self.hidden, dtype))

    def check(self, dist):
        require_discrete(f"{self.name.split('(')[0]}()", dist)

    # -- control-variate parameters
    def _parameters(self, state) -> RelaxState:
        if not self.stateful:
            return RelaxState(self.eta, math.log(self.temperature), None)
        if not isinstance(state, RelaxState):
            raise TypeError(f"{self.name} keeps its control-variate parameters in a state: "
                            "pass state=estimator.init(...) to "
                            f"stochbp.expectation_with_state; got state={state!r}")
        if self.network and state.params is None:
            raise ValueError("relax(): state.params is None; build the state with "
                             "estimator.init(dist, f)")
        return state

    def _check_call(self, f, base, state) -> RelaxState:
        owner = f"{self.name.split('(')[0]}()"
        if is_categorical(base):
            structure.require_one_hot(owner, f)
            structure.check_num_classes(owner, f, base.probs.shape[-1])
        structure.check_rows(f, base.batch_shape)
        cv = self._parameters(state)
        if self.network and self.control is None:
            expected = int(math.prod(_row_shape(base, f)))
            got = jnp.shape(cv.params[0]["w"])[0]
            if got != expected:
                raise ValueError(f"relax(): state.params is a network for inputs of size "
                                 f"{got} but this distribution and f give rows of size "
                                 f"{expected}; build the state with "
                                 "estimator.init(dist, f)")
        return cv

    def _control(self, f, categorical, cv):
        """c(y) per row (n,) for a per_example f, else a scalar."""
        def c(y):
            value = cv.eta * structure.row_values(f, y, one_hot=categorical)
            if not self.network:
                return value
            net = self.control if self.control is not None else _mlp
            if structure.has_rows(f):
                return value + jax.vmap(lambda yi: net(cv.params, yi))(y)
            return value + net(cv.params, y)
        return c

    def _one_sample(self, f, categorical, l, keys, cv):
        """(f at the hard sample, per-row signals, and ghat with respect to l)."""
        lam = jnp.exp(cv.log_temperature)
        c = self._control(f, categorical, cv)
        u = open_uniform(keys[0], l.shape, l.dtype)
        v = open_uniform(keys[1], l.shape, l.dtype)
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

        def cv_difference(ll):
            c_z, c_zt = c(relaxed(z_of(ll))), c(relaxed(zt_of(ll)))
            return jnp.sum(c_z) - jnp.sum(c_zt), c_zt

        (_, c_zt), reparam = jax.value_and_grad(cv_difference, has_aux=True)(l)
        f_hard = structure.row_values(f, hard)
        signal = structure.expand_rows(f_hard - c_zt, l.ndim)
        return f_hard, signal * score + reparam

    def _estimate(self, f, base, l, key, num_samples, cv):
        """Mean over S draws of (sum of f at the hard samples, ghat)."""
        categorical = is_categorical(base)
        keys = jax.random.split(key, (num_samples, 2))
        f_hard, ghat = jax.vmap(lambda k: self._one_sample(f, categorical, l, k, cv))(keys)
        total = jnp.sum(f_hard.reshape(num_samples, -1), axis=1)
        return jnp.mean(total), jnp.mean(ghat, axis=0)

    def surrogate(self, f, dist, key, num_samples, state):
        base = unwrap(dist)
        cv = self._check_call(f, base, state)
        logits = logits_of(base)
        cv_fixed = jax.tree_util.tree_map(lax.stop_gradient, cv)
        value, ghat = self._estimate(f, base, lax.stop_gradient(logits), key, num_samples,
                                     cv_fixed)
        # value: f at the hard samples (ordinary backprop for arrays f closes over);
        # ghat enters only through the logits.
        return value + logit_surrogate(base, ghat, value), state

    def variance_gradient(self, f: Callable, make_dist: Callable, theta: Any, key,
                          state: RelaxState, *, num_samples: int = 1):
        """(E||g||^2 estimate, its gradient with respect to ``state``).

        g is this estimator's gradient with respect to ``theta`` for the distribution
        ``make_dist(theta)``, drawn with ``key`` (pass the key given to
        expectation_with_state to score the same draw). The mean of g does not depend
        on the state, so the returned gradient is an unbiased estimate of the gradient
        of the variance of g, the RELAX objective. Pass ``make_dist=lambda l:
        nd.Bernoulli(logits=l)`` and ``theta=logits`` to minimise the variance with
        respect to the logits themselves.
        """
        if not self.stateful:
            raise TypeError("rebar() with fixed eta and temperature has nothing to tune; "
                            "use rebar(tune=True) or relax()")
        from stochbp._src.core import _validate  # local: core imports the estimators

        dist = make_dist(theta)
        _validate(f, dist, key, self, num_samples)
        base = unwrap(dist)
        self._check_call(f, base, state)

        logits = lax.stop_gradient(logits_of(base))

        def second_moment(st):
            value, ghat = self._estimate(f, base, logits, key, num_samples, st)
            value = lax.stop_gradient(value)
            # the estimator's gradient with respect to theta, as a function of the state
            g_theta = jax.grad(lambda th: logit_surrogate(unwrap(make_dist(th)), ghat,
                                                          value, stop=False))(theta)
            return sum(jnp.sum(g ** 2) for g in jax.tree_util.tree_leaves(g_theta))

        return jax.value_and_grad(second_moment)(state)


def _hidden(owner: str, hidden) -> Tuple[int, ...]:
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        hidden = (hidden,)
    try:
        hidden = tuple(hidden)
    except TypeError:
        hidden = None
    if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1
                         for h in hidden):
        raise ValueError(f"{owner}: hidden must be a positive integer or a non-empty "
                         f"sequence of them (hidden layer sizes); got hidden={hidden!r}")
    return hidden


def rebar(temperature: float = 0.5, eta: float = 1.0, *, tune: bool = False) -> Relax:
    """REBAR: score function with control variate eta f(sigma_lambda(z)); unbiased.

    Args:
      temperature: lambda > 0 of the Concrete relaxation used by the control variate.
      eta: weight of the control variate (eta = 0 is plain REINFORCE).
      tune: if True, eta and log(temperature) live in a ``RelaxState`` (use
        ``stochbp.expectation_with_state`` with ``state = estimator.init()``) and can be
        trained to minimise the variance with ``estimator.variance_gradient`` (see
        :func:`relax`).

    Bernoulli and Categorical (f must accept relaxed values: see the module docstring).
    The gradient is with respect to the logits, chained to probs by
    l = log p - log(1 - p) (Bernoulli) or log p (Categorical). Costs three evaluations of
    f and two of its gradient per sample.
    """
    temperature = positive_number("rebar()", "temperature", temperature)
    eta = finite_number("rebar()", "eta", eta)
    tune = boolean("rebar()", "tune", tune)
    return Relax(temperature=temperature, eta=eta, network=False, tune=tune)


def relax(temperature: float = 0.5, eta: float = 1.0, *, hidden=(64,),
          control: Optional[Callable] = None) -> Relax:
    """RELAX: REBAR's control variate plus a learned network r_phi; unbiased for any phi.

    c(z) = eta f(sigma_lambda(z)) + r_phi(sigma_lambda(z)). By default r_phi is a tanh
    MLP with the given hidden sizes, fed one relaxed sample (one example's row when f is
    a ``stochbp.per_example``), with a zero output layer so that it starts as REBAR.
    ``control(params, y) -> scalar`` replaces it with your own function.

    Stateful: eta, log(temperature) and the network parameters form a ``RelaxState``::

        est = stochbp.relax()
        state = est.init(make_dist(theta), f, key=jax.random.key(1))
        opt = optax.adam(1e-3); opt_state = opt.init(state)

        def loss(theta, state, key):
            return stochbp.expectation_with_state(f, make_dist(theta), key, state,
                                                  estimator=est)
        (value, state), g = jax.value_and_grad(loss, has_aux=True)(theta, state, key)
        _, cv_grad = est.variance_gradient(f, make_dist, theta, key, state)
        updates, opt_state = opt.update(cv_grad, opt_state, state)
        state = optax.apply_updates(state, updates)

    Args:
      temperature, eta: initial lambda and eta (both are tuned with the state).
      hidden: hidden layer sizes of the default network.
      control: optional ``control(params, y) -> scalar``; then ``init(params=...)``.

    Bernoulli and Categorical; gradients with respect to the logits as for rebar().
    """
    temperature = positive_number("relax()", "temperature", temperature)
    eta = finite_number("relax()", "eta", eta)
    if control is not None and not callable(control):
        raise TypeError(f"relax(): control must be callable(params, y) or None; got "
                        f"control={control!r}")
    hidden = _hidden("relax()", hidden)
    return Relax(temperature=temperature, eta=eta, network=True, hidden=hidden,
                 control=control, tune=True)
