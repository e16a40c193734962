"""stochbp: unbiased, low-variance gradients of E_{z ~ p_theta}[f(z)] in JAX.

    value = stochbp.expectation(f, dist, key, estimator=stochbp.fourier(order=8),
                                num_samples=16)

``value`` is the Monte Carlo mean of f; ``jax.grad`` of it with respect to the
distribution's parameters is the chosen estimator.

Extending it: a new distribution family is a :class:`Family` (or
:class:`CoordinateFamily`, from a cumulant generating function) registered with
:func:`register_family`; a new estimator is an :class:`Estimator` subclass decorated
with :func:`register_estimator`. Both are documented in the README ("Extending
stochbp").
"""
from stochbp import diagnostics
from stochbp._src import checks
from stochbp._src import families as _families  # noqa: F401  (registers the rules)
from stochbp._src.core import expectation, expectation_with_state, variance_gradient
from stochbp._src.elbo import location_scale_elbo
from stochbp._src.estimators import (ControlInputs, EmptyState, Estimator,
                                     MovingAverageState, RelaxState,
                                     arm, arsm, delta_method, disarm, fourier,
                                     fourier_exponential, grg, gumbel_softmax,
                                     measure_valued, mixture_marginal, pathwise,
                                     rao_blackwell_topk, rebar, register_estimator, relax,
                                     score_function, unordered_set)
from stochbp._src.families import (CoordinateFamily, Family, family_of, register_family,
                                   registered_families)
from stochbp._src.implicit import implicit_rsample
from stochbp._src.linear import LinearComposite, linear
from stochbp._src.mixture import mixture_rsample
from stochbp._src.structure import (OneHot, PerExample, RowTerms, one_hot, per_example,
                                    row_terms)
from stochbp._src.taylor import directional_derivatives, jet_compatible

__version__ = "0.1.0"

__all__ = [
    # entry points
    "expectation", "expectation_with_state", "variance_gradient", "diagnostics",
    # estimators
    "arm", "arsm", "delta_method", "disarm", "fourier", "fourier_exponential", "grg",
    "gumbel_softmax", "measure_valued", "mixture_marginal", "pathwise",
    "rao_blackwell_topk", "rebar", "relax", "score_function", "unordered_set",
    # protocol, states and extension API
    "ControlInputs", "CoordinateFamily", "EmptyState", "Estimator", "Family", "MovingAverageState",
    "RelaxState", "checks", "family_of", "register_estimator", "register_family",
    "registered_families",
    # declarations of f's structure
    "LinearComposite", "OneHot", "PerExample", "RowTerms", "linear", "one_hot",
    "per_example", "row_terms",
    # samplers and helpers
    "directional_derivatives", "implicit_rsample", "jet_compatible",
    "location_scale_elbo", "mixture_rsample",
]


def __getattr__(name):
    # stochbp.infer (the numpyro SVI integration) is imported on first use
    if name == "infer":
        import importlib
        return importlib.import_module("stochbp.infer")
    raise AttributeError(f"module 'stochbp' has no attribute {name!r}")
