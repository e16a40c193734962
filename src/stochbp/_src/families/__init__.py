"""One module per distribution family; importing this package registers them all."""
from stochbp._src.families import (  # noqa: F401
    bernoulli, beta, categorical, delta, dirichlet, gamma, laplace, multivariate_normal,
    normal)
from stochbp._src.families import mixture  # noqa: F401,E402  (Gaussian mixtures)
from stochbp._src.families.base import Family, family_of, registered_families, unwrap

__all__ = ["Family", "family_of", "registered_families", "unwrap"]
