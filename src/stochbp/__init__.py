"""stochbp: unbiased, low-variance gradients of E_{z ~ p_theta}[f(z)] in JAX.

    value = stochbp.expectation(f, dist, key, estimator=stochbp.fourier(order=8),
                                num_samples=16)

``value`` is the Monte Carlo mean of f; ``jax.grad`` of it with respect to the
distribution's parameters is the chosen estimator.
"""
from stochbp import diagnostics
from stochbp._src import families as _families  # noqa: F401  (registers the rules)
from stochbp._src.core import expectation, expectation_with_state
from stochbp._src.elbo import location_scale_elbo
from stochbp._src.implicit import implicit_rsample
from stochbp._src.mixture import mixture_rsample
from stochbp._src.estimators import (Estimator, fourier, fourier_exponential, grg,
                                     pathwise, score_function)
from stochbp._src.estimators import RelaxState, arm, disarm, gumbel_softmax, rebar, relax
from stochbp._src.families import registered_families
from stochbp._src.linear import LinearComposite, linear
from stochbp._src.structure import (OneHot, PerExample, RowTerms, one_hot, per_example,
                                    row_terms)
from stochbp._src.taylor import directional_derivatives, jet_compatible

__version__ = "0.1.0"

__all__ = [
    "Estimator", "LinearComposite", "diagnostics", "directional_derivatives",
    "expectation", "expectation_with_state", "fourier", "fourier_exponential", "grg",
    "jet_compatible", "linear", "pathwise", "registered_families", "score_function",
    "OneHot", "PerExample", "RelaxState", "arm", "disarm", "gumbel_softmax", "one_hot",
    "per_example", "rebar", "relax", "RowTerms", "row_terms",
]
__all__ += ["implicit_rsample", "location_scale_elbo", "mixture_rsample"]


def __getattr__(name):
    # stochbp.infer (the numpyro SVI integration) is imported on first use
    if name == "infer":
        import importlib
        return importlib.import_module("stochbp.infer")
    raise AttributeError(f"module 'stochbp' has no attribute {name!r}")
