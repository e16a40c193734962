"""stochbp inside numpyro: an ELBO with a chosen gradient estimator per guide sample site.

    elbo = stochbp.infer.ELBO(estimators={"z": stochbp.fourier()}, num_particles=1)
    svi = numpyro.infer.SVI(model, guide, optax.adam(1e-3), loss=elbo)

**What is estimated.** One particle draws every guide site, runs the model on those
values and forms the ELBO particle

    L = sum_{model sites t} s_t log p(t | ...) - sum_{guide sites t} s_t log q(t | ...),

with s_t the site's numpyro scale (the subsampling factor of its plates). ``loss`` returns
-L (averaged over particles); ``jax.grad`` of it is the negative of the sum of

1. the *pathwise part*: the gradient of L with every site handled by an estimator other
   than ``pathwise()`` held at its drawn value. This carries the gradients of the model's
   parameters and of reparameterised guide sites (drawn with numpyro's ``rsample``, or by
   the family's implicit rule in stochbp, e.g. Graves' rule for Gaussian mixtures);
2. for every other guide site s, the estimator's gradient of E_{v ~ q_s}[F_s(v)] with
   respect to the parameters of q_s, as returned by
   ``estimator.surrogate(F_s, q_s, key_s, n_s, state_s)`` (added as ``surr -
   stop_gradient(surr)``, so it changes the gradient and not the value). q_s is the
   site's distribution in the particle, a function of the parameters (and of upstream
   reparameterised values, so the chain through them is included).

**Draws per site.** n_s = 1 for every estimator that works from one draw of the site.
Those that evaluate F_s at several values of the site from that one draw do so inside
their surrogate, from key_s: fourier's substitutions, arm / disarm's antithetic pair,
measure_valued's positive and negative parts, arsm's column swaps, unordered_set(k)'s k
classes drawn without replacement (its baseline built from them), rao_blackwell_topk's
k summed classes plus one sampled remainder. Estimators that need several independent
draws get the fewest they accept (:func:`site_samples`): 2 for
``score_function(baseline="leave_one_out")`` (each draw's baseline is the other's
signal, so the baseline stays independent of the draw), 3 for
``delta_method(..., coefficient="estimated")`` (each draw's coefficient fitted on the
two others), K for ``mixture_marginal()`` (one draw per component); wrappers
(delta_method, rao_blackwell_topk) pass on their inner estimator's number. These extra
draws are the estimator's own; the other random choices in F_s are the particle's, as
for every estimator, so the estimate stays unbiased, and the value is unchanged.

**The learning signal F_s.** F_s(v) is the particle's L with site s set to v and every
other random choice held by common random numbers: each site's key is derived from the
particle key and a hash of its name (a small handler replaces numpyro's ``seed``, whose
keys shift when a site is substituted), so guide sites downstream of s are re-drawn from
their conditional given v with the same noise, and model densities are re-evaluated. F_s
closes over stop-gradiented parameters, so only q_s's parameters receive the estimator's
gradient; F_s is a pure JAX function, so the Fourier rules evaluate their d + 1 (Bernoulli),
d K (Categorical) or Taylor-mode substitutions of it as one batched computation. F_s keeps
only the terms that depend on s (found once per compilation by numpyro's provenance
tracking, as ``TraceGraph_ELBO`` does): other terms do not change with v and would only add
noise to score-type estimators.

**Plates.** If s lies in a plate whose dimension is the leading batch dimension of q_s and
every term that depends on s lies in that plate too, F_s is declared with
``stochbp.row_terms``: it returns the vector of per-example terms (each term's log-density
summed over everything but the plate dimension), row i holding only example i's terms.
The Bernoulli / Categorical Fourier rules then substitute coordinate j in all rows at once
(d + 1 or d K whole-model evaluations for any batch size), and arm, disarm, rebar, relax and
score_function use row i's term as row i's signal, so the variance of a per-example site
does not grow with the batch size. Otherwise F_s is the plain sum (still unbiased). The
other estimators see the sum of the rows (unbiased too), and their cost or variance grows
with the batch: measure_valued, unordered_set, rao_blackwell_topk and delta_method (its
Hessian diagonal) evaluate the whole model once or more per coordinate, arsm's and
mixture_marginal's signals are the whole batch's (mixture_marginal's weights multiply
across a batch of mixtures); they suit sites with few coordinates (global latents).
Subsampled plates are scaled as numpyro scales them (``msg["scale"]``). The substituted
evaluations are not a plain ``vmap``: the model is traced once and its jaxpr interpreted
with the latent matrix in factored form (``stochbp._src.substitution``), so a matrix
product of the latent with a weight matrix (a linear first layer) costs a rank-one update
per substitution instead of a matrix product -- what ``stochbp.linear`` does by hand.

**Randomness.** A particle's key k gives the guide's sites keys fold_in(k_guide, hash of
the name), the model's own latent sites fold_in(k_model, ...) and plates (subsampling)
fold_in(k, ...), so model and guide subsample the same indices. The estimator of a site
draws with the site's key, and a site handled by an estimator other than ``pathwise()``
is drawn in the guide by its family's sampler (``Family.sample``, stochbp's gamma sampler
for Gamma, Exponential, Chi2, Beta and Dirichlet; numpyro's ``sample`` for a family
stochbp does not know) with that key, so an estimator that draws once with the unsplit
key (score_function, fourier, grg, ...) draws the value the particle holds. Bernoulli
log-densities are computed as v log sigmoid(l) + (1 - v) log sigmoid(-l) with a
written-out log sigmoid (numpyro's differentiates to a wrong value at a logit of exactly
0, and relaxed values in (0, 1) must get a finite density).

**The -log q term.** For a site handled by an estimator, the direct derivative of
-log q_s(z_s) at the drawn z_s (which has expectation zero) is dropped from the pathwise
part; -log q_s(v) with frozen parameters is part of F_s, so the estimator's gradient
accounts for the entropy. For a pathwise site, -log q enters the pathwise part whole, as in
numpyro's ``Trace_ELBO``. Both choices keep the estimate unbiased.

**Estimator state.** score_function(baseline="moving_average"), rebar(tune=True) and
relax() (and delta_method / rao_blackwell_topk around them) keep a state per site. It
lives in numpyro's mutable state under the key ``"_stochbp_state"``; start SVI with
:meth:`ELBO.init` (``svi_state = elbo.init(svi, key, *args)``, or ``svi.run(key, n,
*args, init_state=elbo.init(svi, key, *args))``). Without it, stateful estimators start
from their initial state at every step (with a warning). ``ELBO(...,
control_optimizer=optax.adam(1e-3))`` trains the control variates of relax() and
rebar(tune=True) by each step's single-draw gradient of the variance of the site's logit
gradient (``stochbp.variance_gradient``), as the ``relax`` docstring describes.

With ``num_particles > 1`` every particle uses the same state and the mean of the
particles' new states is kept (the first particle's for integer leaves such as counts).

**Supported.** Every estimator at every guide site its own ``check`` accepts, except
those below: fourier, pathwise, score_function (every baseline, ``decay``,
``bias_correction``), grg, measure_valued (coupled or not: Normal, Gamma, Exponential,
Chi2, Poisson, Weibull), delta_method (fixed or estimated coefficient, around any of
these, on continuous sites), mixture_marginal (Gaussian mixtures), arm, disarm, rebar,
relax (``control_inputs="relaxed"`` or ``"noise_and_params"``) and gumbel_softmax on
Bernoulli sites, arsm, unordered_set(k) and rao_blackwell_topk(k) on Categorical sites.

**Not supported** (a ValueError when the loss is first traced names the estimator, the
site and the estimators that support it). Relaxation estimators (gumbel_softmax, rebar,
relax, also inside a wrapper) on Categorical sites: they would feed the model one-hot
relaxed rows where a numpyro Categorical site holds class indices; use fourier, arsm,
unordered_set, rao_blackwell_topk or score_function. rebar / relax on a site from which
the guide re-draws a discrete site (the relaxed signal would jump; a ValueError names
both). ``fourier_exponential(epsilon)``: exact only for f with d^2 f / dz_j^2 = epsilon_j
df / dz_j, which an ELBO's learning signal is not in general (it would be biased).
Combinations an estimator refuses by itself, among them measure_valued and delta_method
on Bernoulli / Categorical sites (no weak derivative; no expansion of a discrete site),
arsm / unordered_set / rao_blackwell_topk on Bernoulli sites (use fourier, disarm),
unordered_set(k) with k > K and rao_blackwell_topk(k) with k >= K, mixture_marginal off
mixtures, and ``delta_method(coefficient="estimated")`` around a stateful or pooling
estimator. Guide sites with a ``sample_shape`` (use a plate) and masked distributions
under a non-pathwise estimator.
"""
from __future__ import annotations

import warnings
import zlib
from typing import Any, Callable, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import numpyro.distributions as nd
from jax import lax, random
from numpyro.distributions.util import scale_and_mask
from numpyro.handlers import substitute, trace
from numpyro.infer.elbo import ELBO as _NumpyroELBO
from numpyro.ops.provenance import eval_provenance
from numpyro.primitives import Messenger

from stochbp._src.estimators import (arm, arsm, delta_method, disarm, fourier, grg,
                                     gumbel_softmax, measure_valued, mixture_marginal,
                                     pathwise, rao_blackwell_topk, rebar, relax,
                                     score_function, unordered_set)
from stochbp._src.core import variance_gradient
from stochbp._src.estimators.base import EmptyState, Estimator, draw
from stochbp._src.estimators.pathwise import Pathwise
from stochbp._src.estimators.relax import Relax, RelaxState
from stochbp._src.families.base import family_of, unwrap
from stochbp._src.structure import row_terms

STATE_KEY = "_stochbp_state"
_RELAXATIONS = ("gumbel_softmax", "rebar", "relax")


# ------------------------------------------------------------------ handlers
def _name_hash(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


class _NamedSeed(Messenger):
    """Keys by site name: fold_in(key, crc32(name)); plates use ``plate_key``.

    Latent sample sites without a value are drawn here by ``sampler(name, fn, key)``.
    ``overrides`` maps names to values; in provenance mode ``value + 0 * sample`` keeps
    the dependence of a substituted value on its distribution's parameters.
    """

    def __init__(self, fn, key, plate_key, sampler, overrides=None, provenance=False):
        self.key, self.plate_key, self.sampler = key, plate_key, sampler
        self.overrides = overrides or {}
        self.provenance = provenance
        self.count = 0
        super().__init__(fn)

    def process_message(self, msg):
        kind = msg["type"]
        if kind not in ("sample", "prng_key", "plate", "control_flow"):
            return
        name = msg.get("name")
        if kind == "sample" and name in self.overrides and not msg["is_observed"]:
            value = self.overrides[name]
            if self.provenance:
                value = value + 0 * msg["fn"].sample(random.key(0))
            msg["value"] = value
            return
        if msg["kwargs"].get("rng_key") is not None or msg["value"] is not None:
            return
        if name is None:
            name = f"__{kind}#{self.count}"
            self.count += 1
        base = self.plate_key if kind == "plate" else self.key
        key = random.fold_in(base, _name_hash(name))
        if kind == "sample" and not msg["is_observed"] and \
                msg["kwargs"].get("sample_shape", ()) == () and self.sampler is not None:
            msg["value"] = self.sampler(name, msg["fn"], key)
        else:
            msg["kwargs"]["rng_key"] = key


def _site_key(key, name):
    return random.fold_in(key, _name_hash(name))


# ------------------------------------------------------------------ distributions
def materialize(fn: nd.Distribution) -> nd.Distribution:
    """An equivalent distribution without numpyro's ExpandedDistribution wrapper (plates
    expand distributions), so that stochbp's families recognise it."""
    if isinstance(fn, nd.Independent):
        return nd.Independent(materialize(fn.base_dist), fn.reinterpreted_batch_ndims)
    if isinstance(fn, nd.ExpandedDistribution) and isinstance(fn.base_dist, nd.Independent):
        inner, k = fn.base_dist.base_dist, fn.base_dist.reinterpreted_batch_ndims
        shape = tuple(fn.batch_shape) + tuple(inner.batch_shape[len(inner.batch_shape) - k:])
        return nd.Independent(materialize(inner.expand(shape)), k)
    if isinstance(fn, nd.ExpandedDistribution):
        base = materialize(fn.base_dist)
        params = {}
        try:
            for name, constraint in base.arg_constraints.items():
                if name not in base.__dict__:
                    continue
                value = jnp.asarray(getattr(base, name))
                ev = getattr(constraint, "event_dim", 0)
                event = value.shape[value.ndim - ev:] if ev else ()
                params[name] = jnp.broadcast_to(value, tuple(fn.batch_shape) + event)
            out = type(base)(**params)
        except Exception:  # noqa: BLE001  (a family we cannot rebuild: keep the wrapper)
            return fn
        return out if out.batch_shape == fn.batch_shape else fn
    return fn


def _is_discrete(fn) -> bool:
    return bool(getattr(fn.support, "is_discrete", False))


def _pathwise_ok(fn) -> bool:
    try:
        Pathwise().check(materialize(fn))
        return True
    except (ValueError, TypeError):
        return False


def _pathwise_sample(fn, key):
    d = materialize(fn)
    fam = family_of(d)
    if fam is not None and fam.reparameterized:
        return fam.pathwise_sample(unwrap(d), key, 1)[0].reshape(
            tuple(d.batch_shape) + tuple(d.event_shape))
    return fn.rsample(key)


def _candidates():
    return [("fourier()", fourier()), ("fourier(order=4)", fourier(order=4)),
            ("pathwise()", pathwise()), ("score_function()", score_function()),
            ("grg()", grg()), ("measure_valued()", measure_valued()),
            ("delta_method(score_function())", delta_method(score_function())),
            ("mixture_marginal()", mixture_marginal()),
            ("arm()", arm()), ("disarm()", disarm()), ("arsm()", arsm()),
            ("unordered_set(k=2)", unordered_set(2)),
            ("rao_blackwell_topk(k=1)", rao_blackwell_topk(1)),
            ("rebar()", rebar()), ("relax()", relax()),
            ("gumbel_softmax(temperature)", gumbel_softmax(0.5))]


def _supported(fn) -> list:
    names = []
    for name, est in _candidates():
        try:
            _check(est, fn)
        except (ValueError, TypeError):
            continue
        if name == "fourier(order=4)":
            if "fourier()" not in names:
                names.append("fourier(order=...)")
            continue
        names.append(name)
    return names


def _base_name(est) -> str:
    return est.name.split("(")[0]


def _parts(est) -> list:
    """``est`` and the estimators it wraps (delta_method's inner estimator,
    rao_blackwell_topk's base estimator), outermost first."""
    out = [est]
    for field in ("inner", "estimator"):
        inner = getattr(est, field, None)
        if isinstance(inner, Estimator):
            out.extend(_parts(inner))
    return out


def site_samples(est: Estimator, dist) -> int:
    """How many draws of the site the ELBO asks ``est`` for (``num_samples`` of its
    surrogate): one, except for estimators that cannot work from one draw, which get the
    fewest they accept -- 2 for score_function(baseline="leave_one_out") (the baseline of
    each draw is the other draw's signal), 3 for delta_method(coefficient="estimated")
    (each draw's coefficient is fitted on the two others), K for mixture_marginal (one
    draw per component). Wrappers pass their inner estimator's number on. The extra draws
    are the estimator's own, from the site's key; only the surrogate's gradient is used
    (see the module docstring), so the ELBO's value stays that of the particle."""
    return int(est.min_samples(materialize(dist)))


def _check(est, fn):
    d = materialize(fn)
    est.check(d)
    for part in _parts(est):
        name = _base_name(part)
        if name == "fourier_exponential":
            raise ValueError(f"{part.name} is exact only for f with d^2 f / dz_j^2 = "
                             "epsilon_j df / dz_j (exponentials), which an ELBO's learning "
                             "signal is not in general (it would be biased); use "
                             "fourier(), pathwise() or score_function()")
        if name in _RELAXATIONS and _is_discrete(fn) and \
                family_of(d).num_classes(unwrap(d)) is not None:
            raise ValueError(f"{part.name} relaxes a Categorical into one-hot rows, but a "
                             "numpyro Categorical site holds class indices the model cannot "
                             "take relaxed; use fourier(), arsm(), unordered_set(), "
                             "rao_blackwell_topk() or score_function() for Categorical sites")


# ------------------------------------------------------------------ estimator state
def is_stateful(est: Estimator) -> bool:
    """An estimator keeps a state iff it refuses the empty state (the protocol's rule)."""
    try:
        est.check_state(EmptyState())
    except (TypeError, ValueError):
        return True
    return False


def init_estimator_state(est: Estimator, f: Callable, dist, key):
    """The estimator's initial state, None for stateless estimators."""
    if not is_stateful(est):
        return None
    return est.init(f, dist, key)


class _Site:
    """What the ELBO decided for one guide sample site."""

    def __init__(self, name, fn, estimator, stack, scale):
        self.name, self.fn, self.estimator = name, fn, estimator
        self.stack, self.scale = stack, scale

    @property
    def pathwise(self) -> bool:
        return self.estimator is None or isinstance(self.estimator, Pathwise)


def _log_sigmoid(x):
    """log sigmoid(x) = min(x, 0) - log1p(exp(-|x|)), with min written (x - |x|) / 2 so
    that the derivative at 0 is 1/2 (numpyro's Bernoulli log_prob differentiates to the
    wrong value at a logit of exactly 0), and no custom-JVP softplus (slow on CPU)."""
    a = jnp.abs(x)
    return 0.5 * (x - a) - jnp.log1p(jnp.exp(-a))


def _bernoulli_log_prob(fn, value):
    """log Bernoulli(value) = v log sigmoid(l) + (1 - v) log sigmoid(-l), written out:
    relaxed values in (0, 1) (rebar, relax, gumbel_softmax) get a finite value where
    numpyro's log_prob rejects values outside the support, and the gradient is right at
    l = 0. None for other families."""
    d = materialize(fn)
    ndims = 0
    while isinstance(d, nd.Independent):
        ndims += d.reinterpreted_batch_ndims
        d = d.base_dist
    if isinstance(d, nd.BernoulliLogits):
        l = d.logits
        value = jnp.asarray(value, jnp.result_type(l, float))
        lp = _log_sigmoid(l) - (1 - value) * l  # = v log s(l) + (1 - v) log s(-l)
    elif isinstance(d, nd.BernoulliProbs):
        value = jnp.asarray(value, jnp.result_type(d.probs, float))
        lp = value * jnp.log(d.probs) + (1 - value) * jnp.log1p(-d.probs)
    else:
        return None
    return jnp.sum(lp, axis=tuple(range(-ndims, 0))) if ndims else lp


def _log_prob(site) -> jax.Array:
    value = site["value"]
    lp = _bernoulli_log_prob(site["fn"], value)
    if lp is None:
        lp = site["fn"].log_prob(value)
    return scale_and_mask(lp, site["scale"])


def _per_row(lp, dim: int, size: int):
    """Sum a site's log-density over everything but the plate dimension ``dim`` (< 0)."""
    lp = jnp.asarray(lp)
    if lp.ndim < -dim or lp.shape[dim] != size:
        return None
    lp = jnp.moveaxis(lp, dim, 0)
    return lp.reshape(size, -1).sum(axis=1)


def _map_leaves(fn, *trees):
    return jax.tree_util.tree_map(fn, *trees)


def _mean_state(states):
    def one(x):
        if jnp.issubdtype(x.dtype, jnp.floating):
            return jnp.mean(x, axis=0).astype(x.dtype)
        return x[0]
    return _map_leaves(one, states)


# ------------------------------------------------------------------ the ELBO
class ELBO(_NumpyroELBO):
    """The negative ELBO with a stochbp gradient estimator per guide sample site.

    Args:
      estimators: maps guide sample-site names to estimators built by stochbp's factories
        (``stochbp.fourier()``, ``stochbp.disarm()``, ``stochbp.relax()``, ...).
      default: estimator for sites not named in ``estimators``. None: ``pathwise()`` where
        the site can be reparameterised (numpyro's ``has_rsample``, or stochbp's implicit
        rules such as Graves' for Gaussian mixtures), else a ValueError naming the site and
        the estimators that support it.
      num_particles, vectorize_particles: as in numpyro's ELBO.
      control_optimizer: optional optax-style gradient transformation (``init`` /
        ``update``) that trains the control variates of relax() / rebar(tune=True) sites
        between steps (needs :meth:`init`). None keeps them fixed.

    ``loss(rng_key, param_map, model, guide, *args, **kwargs)`` is -L averaged over the
    particles; its gradient with respect to ``param_map`` is the estimate described in the
    module docstring. Errors (an unknown site name, an estimator that does not support a
    site's distribution, a site with no estimator) are raised when the loss is first traced,
    before any step.
    """

    can_infer_discrete = True

    def __init__(self, estimators: Optional[Mapping[str, Estimator]] = None,
                 default: Optional[Estimator] = None, num_particles: int = 1,
                 vectorize_particles=True, control_optimizer: Any = None):
        estimators = dict(estimators or {})
        for name, est in estimators.items():
            if not isinstance(name, str):
                raise TypeError(f"ELBO(): estimators must be keyed by site name strings; got "
                                f"key {name!r}")
            if not isinstance(est, Estimator):
                raise TypeError(f"ELBO(): estimators[{name!r}] must be built by a stochbp "
                                f"factory such as stochbp.fourier(); got {est!r}")
        if default is not None and not isinstance(default, Estimator):
            raise TypeError("ELBO(): default must be None or built by a stochbp factory; got "
                            f"default={default!r}")
        if isinstance(num_particles, bool) or not isinstance(num_particles, int) or \
                num_particles < 1:
            raise ValueError("ELBO(): num_particles must be a positive integer; got "
                             f"num_particles={num_particles!r}")
        if control_optimizer is not None and not (hasattr(control_optimizer, "init") and
                                                  hasattr(control_optimizer, "update")):
            raise TypeError("ELBO(): control_optimizer must be an optax-style gradient "
                            f"transformation (init/update); got {control_optimizer!r}")
        self.estimators, self.default = estimators, default
        self.control_optimizer = control_optimizer
        super().__init__(num_particles=num_particles,
                         vectorize_particles=vectorize_particles)

    # -- site decisions
    def _choose(self, name, fn) -> Optional[Estimator]:
        est = self.estimators.get(name, self.default)
        if est is None:
            if _pathwise_ok(fn):
                return None
            raise ValueError(
                f"stochbp.infer.ELBO: guide site {name!r} ({type(unwrap(fn)).__name__}) "
                "cannot be reparameterised and has no estimator; pass estimators="
                f"{{{name!r}: ...}} or default=... with one of: "
                f"{', '.join(_supported(fn)) or 'none (no stochbp estimator supports it)'}")
        try:
            _check(est, fn)
        except (ValueError, TypeError) as err:
            raise ValueError(f"stochbp.infer.ELBO: estimator {est.name} does not support "
                             f"guide site {name!r} ({type(unwrap(fn)).__name__}): {err}. "
                             f"Estimators that support it: {', '.join(_supported(fn))}"
                             ) from None
        return est

    # -- running model and guide
    def _sampler(self, decided: Dict[str, Optional[Estimator]]):
        def sample(name, fn, key):
            if name not in decided:
                try:
                    decided[name] = self._choose(name, fn)
                except ValueError as err:  # raised after the site names are checked
                    decided.setdefault("__errors__", []).append(err)
                    decided[name] = score_function()  # placeholder until the error is raised
            est = decided[name]
            if est is None or isinstance(est, Pathwise):
                return _pathwise_sample(fn, key)
            # the family's sampler (the fast gamma sampler for Gamma, Exponential, Chi2,
            # Beta, Dirichlet): the same draw the site's estimator makes from this key
            shape = tuple(fn.batch_shape) + tuple(fn.event_shape)
            return lax.stop_gradient(draw(materialize(fn), key, 1)[0].reshape(shape))
        return sample

    def _run(self, fn, params, key, plate_key, args, kwargs, decided, values=None,
             overrides=None, provenance=False):
        data = dict(params)
        if values:
            data.update(values)
        seeded = _NamedSeed(substitute(fn, data=data), key, plate_key,
                            self._sampler(decided), overrides, provenance)
        return trace(seeded).get_trace(*args, **kwargs)

    def _traces(self, params, key, args, kwargs, model, guide, decided, overrides=None,
                provenance=False):
        k_guide, k_model = random.split(key)
        gtr = self._run(guide, params, k_guide, key, args, kwargs, decided,
                        overrides=overrides, provenance=provenance)
        latents = {n: s["value"] for n, s in gtr.items()
                   if s["type"] == "sample" and not s["is_observed"]}
        mtr = self._run(model, params, k_model, key, args, kwargs, decided, values=latents,
                        provenance=provenance)
        return gtr, mtr, k_guide

    @staticmethod
    def _terms(gtr, mtr):
        """{'m:name' | 'g:name': the site's scaled term of L} for every sample site:
        log p for model sites, -log q for guide sites."""
        out = {}
        for tag, tr, sign in (("m", mtr, 1.0), ("g", gtr, -1.0)):
            for name, site in tr.items():
                if site["type"] == "sample":
                    out[f"{tag}:{name}"] = sign * _log_prob(site)
        return out

    def _check_names(self, gtr, decided):
        latents = [n for n, s in gtr.items() if s["type"] == "sample" and not s["is_observed"]]
        unknown = [n for n in self.estimators if n not in latents]
        if unknown:
            raise ValueError(f"stochbp.infer.ELBO: estimators names {unknown} that are not "
                             f"sample sites of the guide; the guide's sample sites are "
                             f"{latents}")
        for name in latents:
            site = gtr[name]
            if site["kwargs"].get("sample_shape", ()) != ():
                raise ValueError(f"stochbp.infer.ELBO: guide site {name!r} has sample_shape "
                                 f"{site['kwargs']['sample_shape']}; use a plate instead")
        errors = decided.pop("__errors__", [])
        if errors:
            raise errors[0]

    # -- one particle
    def _particle(self, key, params, model, guide, args, kwargs, states):
        decided: Dict[str, Optional[Estimator]] = {}
        gtr, mtr, k_guide = self._traces(params, key, args, kwargs, model, guide, decided)
        self._check_names(gtr, decided)
        terms = self._terms(gtr, mtr)
        frames = {f"{tag}:{n}": list(st["cond_indep_stack"])
                  for tag, tr in (("m", mtr), ("g", gtr)) for n, st in tr.items()
                  if st["type"] == "sample"}
        user_mutable = {n: st["value"] for tr in (gtr, mtr) for n, st in tr.items()
                        if st["type"] == "mutable"}
        sites = [n for n, s in gtr.items() if s["type"] == "sample" and not s["is_observed"]]
        scored = [n for n in sites if not (decided[n] is None or
                                           isinstance(decided[n], Pathwise))]
        value = 0.0
        for tag_name, term in terms.items():
            tag, name = tag_name.split(":", 1)
            term = jnp.sum(term)
            # the direct derivative of -log q at a scored site's value has mean zero: dropped
            value = value + (lax.stop_gradient(term) if tag == "g" and name in scored
                             else term)
        if not scored:
            return value, states, user_mutable

        sg_params = lax.stop_gradient(params)
        # which terms depend on each scored site (static; abstract evaluation only)
        values = {n: lax.stop_gradient(gtr[n]["value"]) for n in scored}

        def all_terms(**vals):
            g, m, _ = self._traces(sg_params, key, args, kwargs, model, guide, dict(decided),
                                   overrides=vals, provenance=True)
            return self._terms(g, m)

        deps = eval_provenance(all_terms, **values)

        surrogate_total = 0.0
        new_states = dict(states) if states is not None else None
        for name in scored:
            est = decided[name]
            site = gtr[name]
            dist = materialize(site["fn"])
            selected = [t for t, srcs in deps.items() if name in srcs]
            if any(_base_name(part) in ("rebar", "relax") for part in _parts(est)):
                redrawn = [t[2:] for t in selected if t.startswith("g:") and t[2:] != name
                           and t[2:] in scored]
                if redrawn:
                    raise ValueError(
                        f"stochbp.infer.ELBO: {est.name} at guide site {name!r} evaluates "
                        "the learning signal at relaxed values, which must be continuous "
                        f"in them, but the guide re-draws discrete site(s) {redrawn} from "
                        "distributions that depend on it; use fourier(), arm(), disarm() "
                        f"or score_function() for {name!r}")

            f = self._signal(name, site, dist, selected, frames, sg_params, key, args,
                             kwargs, model, guide, decided)
            skey = _site_key(k_guide, name)
            stored = None
            if is_stateful(est):
                stored = states.get(name) if states is not None else None
                if stored is None:
                    stored = self._initial_site_state(est, f, dist, skey)
            state = stored["estimator"] if stored is not None else None
            surr, new_state = est.surrogate(f, dist, skey, site_samples(est, dist), state)
            surrogate_total = surrogate_total + (surr - lax.stop_gradient(surr))
            if is_stateful(est) and new_states is not None:
                new_states[name] = self._train_control(est, f, dist, skey, new_state,
                                                       stored)
        return value + surrogate_total, new_states, user_mutable

    def _signal(self, name, site, dist, selected, frames, sg_params, key, args, kwargs,
                model, guide, decided):
        rows = None
        batch_ndim = len(dist.batch_shape)
        lead = [fr for fr in site["cond_indep_stack"] if fr.dim == -batch_ndim]
        if lead:
            frame = lead[0]
            # every term that depends on the site must lie in the same plate
            if all(frame in frames.get(t, ()) for t in selected):
                rows = frame

        def evaluate(v):
            g, m, _ = self._traces(sg_params, key, args, kwargs, model, guide, dict(decided),
                                   overrides={name: v})
            return self._terms(g, m)

        if rows is None:
            def f(v):
                out = evaluate(v)
                return sum((jnp.sum(out[t]) for t in selected), jnp.zeros(()))
            return f

        def per_row(v):
            out = evaluate(v)
            total = jnp.zeros((rows.size,))
            for t in selected:
                r = _per_row(out[t], rows.dim, rows.size)
                if r is None:  # broadcast term (size 1 along the plate): spread evenly
                    r = jnp.full((rows.size,), jnp.sum(out[t]) / rows.size)
                total = total + r
            return total
        return row_terms(per_row)

    def _initial_site_state(self, est, f, dist, key):
        state = {"estimator": init_estimator_state(est, f, dist, key)}
        if self.control_optimizer is not None and \
                isinstance(state["estimator"], RelaxState):
            state["optimizer"] = self.control_optimizer.init(state["estimator"])
        return state

    def _train_control(self, est, f, dist, key, new_state, stored):
        """One optimizer step on the control variate: the single-draw gradient of the
        squared norm of the site's logit gradient (``Relax.variance_gradient``)."""
        out = dict(stored)
        out["estimator"] = new_state
        if "optimizer" not in stored:
            return out
        base = unwrap(dist)
        logits = lax.stop_gradient(family_of(base).logits(base))
        make = (lambda l: nd.Bernoulli(logits=l))  # noqa: E731  (relaxations: Bernoulli)
        _, grad = variance_gradient(f, make, logits, key, new_state, estimator=est)
        updates, opt_state = self.control_optimizer.update(grad, stored["optimizer"],
                                                           new_state)
        out["estimator"] = _map_leaves(lambda p, u: p + u, new_state, updates)
        out["optimizer"] = opt_state
        return out

    # -- numpyro's interface
    def _stateful_sites(self):
        return {n for n, e in self.estimators.items() if is_stateful(e)} | (
            {"*"} if self.default is not None and is_stateful(self.default) else set())

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        params = dict(param_map)
        states = params.pop(STATE_KEY, None)
        if states is None and self._stateful_sites():
            warnings.warn("stochbp.infer.ELBO: stateful estimators restart from their initial "
                          "state at every step; start SVI with elbo.init(svi, key, *args) to "
                          "keep their state", stacklevel=2)

        def particle(key):
            return self._particle(key, params, model, guide, args, kwargs, states)

        if self.num_particles == 1:
            elbo, new_states, user_mutable = particle(rng_key)
        else:
            keys = random.split(rng_key, self.num_particles)
            elbos, new_states, user_mutable = self.vectorize_particles_fn(particle, keys)
            elbo = jnp.mean(elbos)
            new_states = None if new_states is None else _mean_state(new_states)
            user_mutable = _mean_state(user_mutable)
        mutable = dict(user_mutable) if user_mutable else None
        if states is not None:
            mutable = dict(mutable or {})
            mutable[STATE_KEY] = new_states
        return {"loss": -elbo, "mutable_state": mutable}

    def init(self, svi, rng_key, *args, **kwargs):
        """``svi.init(rng_key, *args, **kwargs)`` with the estimators' states added to the
        mutable state (under ``"_stochbp_state"``), for ``svi.update`` / ``svi.run(...,
        init_state=...)``."""
        svi_state = svi.init(rng_key, *args, **kwargs)
        params = svi.get_params(svi_state)
        states = self.initial_states(rng_key, params, svi.model, svi.guide, *args,
                                     **kwargs)
        if not jax.tree_util.tree_leaves(states):  # nothing to keep: numpyro's own path
            return svi_state
        mutable = dict(svi_state.mutable_state or {})
        mutable[STATE_KEY] = states
        return svi_state._replace(mutable_state=mutable)

    def initial_states(self, rng_key, params, model, guide, *args, **kwargs):
        """{site: initial estimator state} for every stateful site (a fixed pytree)."""
        params = dict(params)
        params.pop(STATE_KEY, None)
        decided: Dict[str, Optional[Estimator]] = {}
        key = random.split(rng_key)[0]
        gtr, _, k_guide = self._traces(params, key, args, kwargs, model, guide, decided)
        self._check_names(gtr, decided)
        states = {}
        for name, est in decided.items():
            if est is not None and is_stateful(est):
                dist = materialize(gtr[name]["fn"])
                f = None
                if isinstance(est, Relax) and est.network:
                    # the network is sized from one row when the site lies in a plate
                    frames = [fr for fr in gtr[name]["cond_indep_stack"]
                              if fr.dim == -len(dist.batch_shape)]
                    f = row_terms(lambda v: v) if frames else None
                states[name] = self._initial_site_state(est, f, dist,
                                                        _site_key(k_guide, name))
        return states

