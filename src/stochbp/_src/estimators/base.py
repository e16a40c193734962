"""The estimator protocol (optax style: small immutable objects built by factories).

An estimator is a frozen dataclass registered as a JAX pytree with three methods:

``init(f, dist, key) -> state``
    The estimator's state for this f and distribution: ``EmptyState()`` for stateless
    estimators, a pytree of arrays otherwise (``MovingAverageState``, ``RelaxState``).
``check(dist) -> None``
    Raise ValueError, naming the distribution and the alternatives, if the estimator
    cannot handle ``dist``. Runs before any tracing; it asks the distribution's family
    (``family_of(dist)``), never tests distribution classes.
``surrogate(f, dist, key, num_samples, state) -> (surrogate, new_state)``
    A scalar whose value is the Monte Carlo mean of f over the draws and whose gradient
    with respect to the distribution's parameters is the estimate of grad E[f(z)].

``min_samples(dist) -> int`` (default 1) is the fewest ``num_samples`` the estimator
accepts for ``dist`` (2 for a leave-one-out baseline, K for a K-component mixture
marginalised); ``expectation`` refuses fewer before any work, and ``stochbp.infer``
asks a site's estimator for this many draws.

``check_state(state)`` validates the state passed in (stateless estimators accept the
empty state), and ``differentiable_surrogate`` (default: ``surrogate``) keeps the
estimate differentiable with respect to the state, which is what
:func:`stochbp.variance_gradient` needs to train a control variate.

A user estimator is a subclass decorated with :func:`register_estimator`; it then works
with ``expectation``, ``expectation_with_state``, ``diagnostics`` and jit.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd

from stochbp._src import checks
from stochbp._src.registry import family_of, known_families, parameter_items, unwrap


class EmptyState(NamedTuple):
    """The state of a stateless estimator (an empty pytree)."""


def register_estimator(cls=None, *, data_fields: Sequence[str] = ()):
    """Class decorator: a frozen dataclass registered as a JAX pytree.

    ``data_fields`` are the fields holding arrays (traced when the estimator is passed
    through ``jax.jit``); every other field is static (hashable configuration such as
    an order, a temperature, or a callable).
    """
    def wrap(c):
        c = dataclasses.dataclass(frozen=True)(c)
        names = [f.name for f in dataclasses.fields(c)]
        unknown = [n for n in data_fields if n not in names]
        if unknown:
            raise TypeError(f"register_estimator(): {c.__name__} has no fields {unknown}; "
                            f"its fields are {names}")
        meta = [n for n in names if n not in data_fields]
        jax.tree_util.register_dataclass(c, data_fields=list(data_fields),
                                         meta_fields=meta)
        return c
    return wrap if cls is None else wrap(cls)


@dataclasses.dataclass(frozen=True)
class Estimator:
    """Base class of every estimator (see the module docstring for the protocol)."""

    @property
    def name(self) -> str:
        return type(self).__name__

    def init(self, f: Callable, dist: nd.Distribution, key) -> Any:
        """Initial state; stateless estimators return ``EmptyState()``."""
        return EmptyState()

    def check(self, dist: nd.Distribution) -> None:
        """Raise ValueError if this estimator cannot handle ``dist``."""

    def min_samples(self, dist: nd.Distribution) -> int:
        """The fewest ``num_samples`` this estimator accepts for ``dist``."""
        return 1

    def check_state(self, state: Any) -> None:
        """Raise TypeError if ``state`` is not a state of this estimator."""
        if state is not None and not isinstance(state, EmptyState):
            raise TypeError(f"{self.name} keeps no state; pass state=EmptyState() (what "
                            f"estimator.init(f, dist, key) returns); got state={state!r}")

    def surrogate(self, f: Callable, dist: nd.Distribution, key, num_samples: int,
                  state: Any) -> Tuple[jax.Array, Any]:
        raise NotImplementedError(f"{self.name} does not implement surrogate()")

    def valid(self, dist) -> Any:
        """Traceable: whether this estimator's own settings fit ``dist`` (e.g. an
        epsilon inside the cumulant domain); the surrogate is NaN where not."""
        return True

    def differentiable_surrogate(self, f, dist, key, num_samples, state):
        """The surrogate with its gradient estimate kept differentiable with respect to
        the state (for :func:`stochbp.variance_gradient`)."""
        return self.surrogate(f, dist, key, num_samples, state)


def stateful_error(estimator: Estimator, state: Any, state_type: type) -> TypeError:
    return TypeError(
        f"{estimator.name} keeps a {state_type.__name__}: call "
        "stochbp.expectation_with_state(f, dist, key, state, estimator=...) with "
        f"state = estimator.init(f, dist, key); got state={state!r}")


# ------------------------------------------------------------------ shared checks
def unsupported(estimator: str, dist: nd.Distribution, why: str, alternatives: str):
    return ValueError(f"{estimator} does not support {type(unwrap(dist)).__name__}: {why}. "
                      f"{alternatives}")


def alternatives(dist: nd.Distribution) -> str:
    """'Use stochbp.x() or stochbp.y().': the general-purpose estimators that apply to
    the family of ``dist`` (for refusal messages)."""
    fam = family_of(dist)
    if fam is None:
        return "Use stochbp.score_function()."
    names = [n for n, ok in (
        ("fourier", fam.has_fourier), ("pathwise", fam.reparameterized),
        ("measure_valued", fam.has_weak_derivatives() and unwrap(dist).event_shape == ()),
        ("score_function", fam.has_density)) if ok]
    calls = [f"stochbp.{n}()" for n in names]
    if not calls:
        return ""
    return "Use " + (calls[0] if len(calls) == 1 else
                     ", ".join(calls[:-1]) + " or " + calls[-1]) + "."


def require_family(estimator: str, dist: nd.Distribution):
    fam = family_of(dist)
    if fam is None:
        raise unsupported(estimator, dist, "stochbp has no rule for this family",
                          f"Families with rules: {known_families()}.")
    return fam


def require_logits(owner: str, dist, *, binary_only: bool = False, alternatives: str = ""):
    """The family of ``dist`` if the logit-space estimators apply to it (a discrete
    family with logits; binary coordinates only if ``binary_only``), after checking
    that the logits are finite; else an error naming the distribution."""
    fam = family_of(dist)
    base = unwrap(dist)
    ok = fam is not None and fam.discrete and fam.has_logits() and (
        not binary_only or fam.num_classes(base) is None)
    if not ok:
        what = "binary (Bernoulli-type)" if binary_only else \
            "binary and categorical"
        raise unsupported(owner, dist, f"it is defined for {what} variables with logits "
                          "only", alternatives or "For other families use "
                          "stochbp.fourier(), stochbp.pathwise() or "
                          f"stochbp.score_function() (families with rules: "
                          f"{known_families()}).")
    fam.check_logits(owner, base)
    return fam


def _check_key(key) -> None:
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"expectation(): key must be a single PRNG key; got a key "
                             f"array of shape {key.shape} (use jax.vmap over keys)")
        return
    if dtype == jnp.uint32 and jnp.shape(key) == (2,):
        return
    raise TypeError("expectation(): key must be a JAX PRNG key (jax.random.key(0) or "
                    f"jax.random.PRNGKey(0)); got key={key!r}")


def validate_call(f, dist, key, estimator, num_samples, state) -> int:
    """Every check of an ``expectation`` call, before any sampling; returns the number
    of samples as an int."""
    if not isinstance(estimator, Estimator):
        raise TypeError("expectation(): estimator must be built by a stochbp factory such "
                        "as stochbp.fourier(), stochbp.pathwise() or "
                        f"stochbp.score_function(); got estimator={estimator!r}")
    num_samples = checks.positive_int("expectation()", "num_samples", num_samples)
    if not isinstance(dist, nd.Distribution):
        raise TypeError("expectation(): dist must be a numpyro distribution; got "
                        f"dist={dist!r}")
    if not callable(f):
        raise TypeError(f"expectation(): f must be callable; got f={f!r}")
    _check_key(key)
    fam = family_of(dist)
    if fam is not None:
        fam.check(unwrap(dist))
    for name, _, value in parameter_items(unwrap(dist)):
        checks.reject_complex("expectation()", name, value)
    estimator.check(dist)
    fewest = int(estimator.min_samples(dist))
    if num_samples < fewest:
        raise ValueError(f"expectation(): {estimator.name} needs num_samples >= {fewest} "
                         f"for this distribution; got num_samples={num_samples}")
    estimator.check_state(state)
    sample = jax.eval_shape(lambda k: dist.sample(k), key)
    out = jax.eval_shape(f, sample)
    if not (hasattr(out, "shape") and out.shape == ()):
        shape = getattr(out, "shape", type(out).__name__)
        raise TypeError("expectation(): f must map one sample (shape "
                        f"{tuple(sample.shape)}) to a scalar; it returned {shape}")
    # A real scalar: floating point, or an integer when the samples are integers
    # (bits or class indices: differences of integer values are exact). A bool, a
    # complex number, or an integer f of continuous samples (whose derivatives would
    # silently be zero) is refused.
    integer_ok = jnp.issubdtype(out.dtype, jnp.integer) and \
        not jnp.issubdtype(sample.dtype, jnp.inexact)
    if not (jnp.issubdtype(out.dtype, jnp.floating) or integer_ok):
        raise TypeError("expectation(): f must return a real floating-point scalar (its "
                        f"gradients are taken); it returned dtype {out.dtype} for samples "
                        f"of dtype {sample.dtype}. Cast it, e.g. f(z).astype(float)")
    return num_samples


def draw(dist, key, num_samples: int) -> jax.Array:
    """``num_samples`` draws of ``dist`` without gradient, from its family's sampler
    (the family is the one place that knows how to draw); numpyro's ``sample`` for a
    distribution with no registered family. ``Independent`` wrappers draw their base."""
    base = unwrap(dist)
    fam = family_of(base)
    if fam is None:
        return jax.lax.stop_gradient(dist.sample(key, (num_samples,)))
    return fam.sample(base, key, num_samples)


def float_dtype(d):
    """The floating dtype the distribution computes in (its parameters' dtype)."""
    arrays = [v for _, _, v in parameter_items(d) if jnp.issubdtype(v.dtype, jnp.floating)]
    return jnp.result_type(*arrays) if arrays else jnp.result_type(float)


def invalid_term(dist, estimator) -> Any:
    """0, or NaN in value and gradient when the parameters (or the estimator's settings)
    are invalid; None when validity is known now to hold (nothing to add)."""
    base = unwrap(dist)
    fam = family_of(base)
    valid = jnp.logical_and(fam.valid(base) if fam is not None else True,
                            estimator.valid(dist))
    known = checks.concrete(valid)
    if known is not None and bool(np.all(known)):
        return None
    arrays = [v for _, _, v in parameter_items(base) if jnp.issubdtype(v.dtype, jnp.inexact)]
    gate = jnp.where(jnp.all(valid), 0.0, jnp.nan)
    total = sum(jnp.sum(jnp.where(jnp.isfinite(a), a, 0)) for a in arrays)
    return gate * total
