"""One module per distribution family; importing this package registers them all."""
from stochbp._src.families import (  # noqa: F401
    bernoulli, beta, categorical, delta, dirichlet, gamma, laplace, mixture,
    multivariate_normal, normal, poisson, weibull)
from stochbp._src.families.base import Family, require_order
from stochbp._src.families.coordinate import CoordinateFamily
from stochbp._src.registry import family_of, register_family, registered_families, unwrap

__all__ = ["CoordinateFamily", "Family", "family_of", "register_family",
           "registered_families", "require_order", "unwrap"]
