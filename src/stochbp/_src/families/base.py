"""What stochbp knows about one distribution family, behind one interface.

A :class:`Family` gathers everything an estimator may need to know about a numpyro
distribution family: how to validate its parameters, its Fourier rule (the paper's
Equations 15-22), its cumulant generating function (Equation 23), whether it has a
pathwise sample or a density, and, for discrete families, its logits and number of
classes. Estimators look the family up with :func:`family_of` and ask it; they never
inspect concrete distribution classes, so adding a family never means editing an
estimator.

Adding a family (the extension API, exported as ``stochbp.Family``,
``stochbp.CoordinateFamily`` and ``stochbp.register_family``)::

    class GumbelFamily(stochbp.CoordinateFamily):
        name, types = "Gumbel", (nd.Gumbel,)
        series, reparameterized = True, True
        def check(self, d):
            stochbp.checks.positive("Gumbel", "scale", d.scale)
        def cgf(self, d, t):                       # log E[exp(t z)], per coordinate
            return d.loc * t + gammaln(1 - d.scale * t)

    stochbp.register_family(GumbelFamily())

``fourier(order=N)`` then uses the CGF's Taylor coefficients (found by Taylor mode),
``score_function`` the distribution's ``log_prob`` and ``pathwise`` its ``rsample``.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from stochbp._src import checks, series
from stochbp._src.registry import (family_of, known_families, parameter_items,  # noqa
                                   register_family, registered_families, unwrap)

Surrogate = jax.Array

# Backwards-compatible name used by the built-in family modules.
register = register_family


class Family:
    """Rules for one distribution family. Subclasses override what they support.

    Class attributes (capabilities estimators ask about):
      name: shown in messages.
      types: the numpyro distribution classes this family answers for.
      series: the Fourier rule is an infinite series and needs ``order``.
      reparameterized: ``pathwise()`` applies (``pathwise_sample``).
      has_density: the distribution has a density with respect to a parameter-free
        measure, so ``score_function()`` applies (False for a Dirac delta).
      has_fourier: the family has a Fourier rule (``fourier``).
      discrete: values are bits or class indices (no derivatives of f exist).
    """

    name: str = "?"
    types: tuple = ()
    series: bool = False
    reparameterized: bool = False
    has_density: bool = True
    has_fourier: bool = True
    discrete: bool = False

    def check(self, d) -> None:
        """Raise ValueError for invalid (concrete) parameter values."""

    def needs_order(self) -> bool:
        """Whether ``fourier()`` needs an ``order`` (Eq. 24's truncation)."""
        return self.series

    def fourier(self, f: Callable, d, key, num_samples: int,
                order: Optional[int]) -> Surrogate:
        raise NotImplementedError(f"{self.name} has no Fourier rule")

    def fourier_derivative_order(self, order: Optional[int]) -> int:
        """The highest derivative of f that ``fourier(order)`` uses (0: none, for
        discrete families). From 2 on, ``fourier()`` first proves f smooth enough
        (``stochbp._src.smoothness``). The default, for a continuous family, is
        ``order`` (2 when None)."""
        if self.discrete:
            return 0
        return 2 if order is None else int(order)

    # ------------------------------------------------------------ cumulants (Eq. 23)
    def cgf(self, d, t) -> jax.Array:
        """Per-coordinate cumulant generating function log E[exp(t z_j)]."""
        raise NotImplementedError(f"{self.name} has no closed-form cumulant generating "
                                  "function in stochbp")

    def cgf_domain_check(self, d, t) -> None:
        """Raise ValueError if t lies outside the CGF's domain (concrete values only)."""

    def cgf_in_domain(self, d, t):
        """Traceable: whether t lies in the CGF's domain (elementwise)."""
        return jnp.ones(jnp.shape(t), bool)

    # ------------------------------------------------------------ validity under jit
    def valid(self, d) -> jax.Array:
        """Traceable: whether every parameter satisfies its numpyro constraint. Used to
        make the surrogate NaN (value and gradient) for invalid parameters where their
        values cannot be checked (under jit / vmap)."""
        return parameters_valid(d)

    def has_cgf(self) -> bool:
        return type(self).cgf is not Family.cgf

    # ------------------------------------------------------------ drawing
    def sample(self, d, key, num_samples: int):
        """``num_samples`` draws (shape (S, *batch_shape, *event_shape)) without gradient.
        Every estimator draws through the family, so a family with a faster sampler
        (the gamma family's) serves all of them."""
        return jax.lax.stop_gradient(d.sample(key, (num_samples,)))

    def pathwise_sample(self, d, key, num_samples: int):
        """Draws that carry the pathwise (reparameterised or implicit) gradient."""
        return d.rsample(key, (num_samples,))

    # ------------------------------------------------------------ mixtures
    def component_draws(self, d, key, num_samples: int, allocation: str,
                        common_noise: bool = False, noise: str = "iid",
                        rule: str = "pathwise"):
        """For mixtures: (x, w, second), num_samples reparameterised draws x from the
        components and weights w (num_samples,) with sum_s w_s f(x_s) an unbiased,
        differentiable estimate of E[f] (the component index summed out); ``noise``
        says how the draws of one component share their noise (iid, antithetic pairs,
        Latin hypercube strata). With ``rule="fourier"`` the scales' gradient is
        carried by ``second`` (each draw's covariance parameter), to be paired with
        half of :meth:`component_hessians`; otherwise ``second`` is None."""
        raise NotImplementedError(f"{self.name} is not a mixture family")

    def component_hessians(self, f, d, draws):
        """For mixtures: the second derivatives of f at ``draws`` that pair with
        ``component_draws``' ``second``."""
        raise NotImplementedError(f"{self.name} is not a mixture family")

    def has_component_draws(self) -> bool:
        return type(self).component_draws is not Family.component_draws

    # ------------------------------------------------------------ discrete, logit space
    def num_classes(self, d) -> Optional[int]:
        """K for categorical coordinates (values 0..K-1), None for binary ones."""
        raise NotImplementedError(f"{self.name} is not a discrete family")

    def has_logits(self) -> bool:
        """Whether the logit-space estimators (arm, rebar, relax, ...) apply."""
        return type(self).logits is not Family.logits

    def logits(self, d) -> jax.Array:
        """Logits as a differentiable function of the parameters, broadcast to
        ``batch_shape`` (binary) or ``batch_shape + (K,)`` (categorical)."""
        raise NotImplementedError(f"{self.name} has no logits")

    def check_logits(self, owner: str, d) -> None:
        """Raise ValueError if the logits are not finite for these (concrete) values."""

    def logit_surrogate(self, d, ghat, f_mean, *, stop: bool = True) -> jax.Array:
        """Zero-valued term whose gradient is ``ghat`` (with respect to the logits)
        chained to the distribution's parameters. ``stop=False`` keeps ghat
        differentiable (used to train control variates)."""
        return series.zero_valued_term(self.logits(d), ghat, stop=stop)

    def score_mean(self, d, weights) -> jax.Array:
        """A zero-valued surrogate whose gradient is sum_j weights_j E[grad log p(z_j)],
        j over the batch (``weights`` broadcast to the batch shape). The expected score
        is zero for a density normalised in its own parameters (the default, which
        returns 0); a family whose parameters are unnormalised (Categorical by probs)
        overrides it so that a score-function baseline b, whose term b * score has mean
        b * E[score], can be compensated exactly."""
        return jnp.zeros((), jnp.result_type(float))

    def class_probabilities(self, d) -> jax.Array:
        """Categorical families: the class probabilities, shape ``batch_shape + (K,)``,
        as a differentiable function of the parameters (for a probs-parameterised
        distribution, the probs themselves)."""
        raise NotImplementedError(f"{self.name} has no class probabilities")

    def from_class_probabilities(self, probs):
        """Categorical families: a distribution of this family with the given class
        probabilities (zeros allowed), e.g. a conditional law on some classes."""
        raise NotImplementedError(f"{self.name} has no class probabilities")

    def has_class_probabilities(self) -> bool:
        return type(self).class_probabilities is not Family.class_probabilities

    # ------------------------------------------------------------ weak derivatives
    def weak_derivatives(self, d, key, num_samples: int, coupled: bool):
        """Measure-valued derivative of each coordinate's density:
        d p(x; theta_j) / d theta_j = c_j (p+_j(x) - p-_j(x)) with p+-_j densities.
        Returns a list of (theta, c, x_plus, x_minus): theta a parameter array broadcast
        to the batch shape, c of the batch shape, and x_plus / x_minus draws of shape
        (num_samples, *batch_shape) from p+ / p- (coupled: sharing their noise)."""
        raise NotImplementedError(f"{self.name} has no weak-derivative decomposition")

    def weak_derivative_scores(self, d, z):
        """Parameters that have no known weak-derivative decomposition (e.g. a gamma or
        Weibull shape): a list of (theta, score), theta broadcast to the batch shape and
        score = d log p(z_j; theta_j) / d theta_j at the draws z, shape
        (num_samples, *batch_shape). ``measure_valued()`` estimates these parameters'
        gradients with the score function. Default: none."""
        return []

    def has_weak_derivatives(self) -> bool:
        return type(self).weak_derivatives is not Family.weak_derivatives

    # ------------------------------------------------------------ gamma-type families
    def gamma_shape_scale(self, d):
        """(shape k, scale mu) for families that are gamma distributions."""
        raise NotImplementedError(f"{self.name} is not a gamma family")

    def is_gamma(self) -> bool:
        return type(self).gamma_shape_scale is not Family.gamma_shape_scale


def parameters_valid(d) -> jax.Array:
    """Every parameter of ``d`` inside its numpyro constraint (traceable)."""
    ok = jnp.asarray(True)
    for _, constraint, value in parameter_items(d):
        try:
            ok = ok & jnp.all(constraint(value))
        except Exception:  # noqa: BLE001 - dependent constraints cannot be checked alone
            continue
    return ok


def require_order(family: Family, order: Optional[int]) -> int:
    if order is None:
        raise ValueError(
            f"fourier(): order is required for {family.name}: its rule is an infinite "
            "series (truncated as in the paper's Eq. 24); pass e.g. stochbp.fourier(order=8)")
    return checks.positive_int("fourier()", "order", order)


__all__ = ["Family", "family_of", "register", "register_family", "registered_families",
           "require_order", "unwrap", "checks"]
