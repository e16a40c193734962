"""Mixture gradients with the component index summed out (no implicit term).

For a mixture p(x) = sum_j pi_j q_j(x) with reparameterisable components,

    E[f] = sum_j pi_j E_{q_j}[f],

so the estimator draws every component (n_j >= 1 draws x_jm = mu_j + L_j eps_jm each,
S = sum_j n_j evaluations of f in all) and returns the surrogate sum_j pi_j fbar_j with
fbar_j = mean_m f(x_jm). Its gradient is pi_j d fbar_j for component j's parameters
(the Gaussian reparameterisation gradient, weighted) and
pi_i (fbar_i - sum_j pi_j fbar_j) for the mixing logit i: the derivative of the weights
applied to the per-component means. Graves' implicit rule instead differentiates a
single ancestral draw through the component boundaries, which divides by the mixture
density and is heavy-tailed where components are narrow; here no such term exists.
How the S slots are shared among the components (``allocation``) changes the variance
only, never the mean. Nor does the joint law of the noise eps_j1..eps_jn of one
component (``noise``), as long as each eps_jm alone is N(0, I): then every
f(x_jm) has mean E_j f and so does fbar_j. ``noise="stratified"`` draws them as a Latin
hypercube: coordinate d of draw m is eps_jmd = Phi^{-1}((p_d(m) + v_md) / n_j), with
p_d a random permutation of the strata 0..n_j - 1 (one per coordinate) and v_md
~ U(0, 1); every coordinate of fbar_j is then a stratified mean, which removes the
variance of the additive part of f along each coordinate. ``noise="antithetic"`` uses
pairs (eps, -eps), which cancels the odd part of f - E_j f around mu_j but doubles the
even part's weight. For full covariance x_jm = mu_j + L_j eps_jm with the same eps.
``component_rule`` says how each component's own expectation E_j[f] is differentiated.
``"pathwise"`` differentiates through x_jm, which gives grad f (x_jm) for mu_j and
grad f (x_jm) eps_jm^T for L_j. ``"fourier"`` keeps the first for mu_j and takes the
covariance by the Gaussian Fourier rule (Eq. 15 of the FSB paper, Price's theorem):
dE_j[f] / dSigma_j = E_j[H f] / 2, so dE_j[f] / dsigma_jd = sigma_jd E_j[d^2 f / dx_d^2]
for a diagonal component and dE_j[f] / dL_j = E_j[H f] L_j for full covariance. It needs
f twice differentiable; its variance is that of the second derivatives (none at all
when f is quadratic), and it costs a Taylor pass per coordinate and draw (one pass
when f is proven separable).
The derivation, and the form used for a batch of mixtures, are in
``stochbp._src.mixture`` (``marginal_draws``, ``_noise``, ``RULES``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from stochbp._src import checks, series, smoothness
from stochbp._src.estimators.base import Estimator, register_estimator, unsupported
from stochbp._src.registry import family_of, unwrap

from stochbp._src.mixture import ALLOCATIONS, NOISES, RULES


@register_estimator
class MixtureMarginal(Estimator):
    allocation: str = "proportional"
    common_noise: bool = True
    noise: str = "iid"
    component_rule: str = "pathwise"
    smooth: str = "check"

    @property
    def name(self) -> str:
        rule = ("" if self.component_rule == "pathwise"
                else f", component_rule={self.component_rule!r}")
        if self.smooth != "check":
            rule += f", smooth={self.smooth!r}"
        return (f"mixture_marginal(allocation={self.allocation!r}, noise={self.noise!r}"
                f"{rule})")

    def check(self, dist):
        fam = family_of(dist)
        if fam is None or not fam.has_component_draws():
            raise unsupported("mixture_marginal()", dist,
                              "it is defined for mixtures of reparameterisable components "
                              "(MixtureSameFamily of Normal, Independent(Normal, 1) or "
                              "MultivariateNormal)",
                              "Use stochbp.pathwise() or stochbp.score_function().")

    def min_samples(self, dist):
        """One draw per component: K."""
        return int(unwrap(dist).mixture_size)

    def surrogate(self, f, dist, key, num_samples, state):
        if self.component_rule == "fourier" and self.smooth == "check":
            # the Hessian of f stands for its distributional second derivative
            smoothness.require_smooth(
                self.name, f, jax.eval_shape(lambda k: dist.sample(k), key), 2,
                fix_kink="Use mixture_marginal(component_rule='pathwise').",
                fix_jump="Use stochbp.score_function() (the pathwise rules are biased "
                         "for an f that jumps too).")
        base = unwrap(dist)
        fam = family_of(base)
        x, w, second = fam.component_draws(base, key, num_samples, self.allocation,
                                           self.common_noise, self.noise,
                                           self.component_rule)
        value = jnp.sum(w * jax.vmap(f)(x))
        if second is None:
            return value, state
        # sum_s sg(w_s) (1/2) <sg(H_s), Sigma_s - sg(Sigma_s)>: value 0, gradient the
        # Fourier (Price) rule for every component's covariance
        hess = fam.component_hessians(f, base, x)
        weights = lax.stop_gradient(w).reshape(w.shape + (1,) * (hess.ndim - 1))
        term = 0.5 * series.zero_valued(second, weights * hess)
        return value + term.astype(value.dtype), state


def mixture_marginal(allocation: str = "proportional", *, common_noise: bool = True,
                     noise: str = "iid", component_rule: str = "pathwise",
                     smooth: str = "check") -> MixtureMarginal:
    """Marginalised mixture gradient (see module docstring): ``num_samples`` (>= K)
    evaluations of f, shared among the K components. ``allocation="proportional"``
    gives every component one draw and the rest about in proportion to its weight
    (systematic sampling); ``"uniform"`` gives each component S / K of them (the first
    S mod K one more). ``common_noise=True`` gives the m-th draw of every component the
    same standard normal noise, x_jm = mu_j + L_j eps_m: the per-component means are
    then positively correlated for most f and the weights' gradient, a difference
    fbar_i - sum_j pi_j fbar_j, has lower variance (each fbar_j is unchanged in law,
    so the estimate stays unbiased). ``noise`` sets the law of one component's n_j
    draws: ``"iid"`` (independent normals), ``"stratified"`` (a Latin hypercube per
    component: each coordinate's n_j draws fall one in each of n_j equal-probability
    strata, in a random order per coordinate) or ``"antithetic"`` (pairs eps, -eps).
    Each draw is still exactly N(mu_j, Sigma_j), so all three are unbiased.
    Measured (docs/mixtures.md, f = sum x^2 and a non-additive f, S = 4K):
    ``"stratified"`` lowered the variance against ``"iid"`` for the means (6-9x) and
    the scales (1.4-2.5x) at every size, and for the logits everywhere but K = 2 with
    the proportional allocation (there ``allocation="uniform"`` with it was lowest);
    ``"antithetic"`` lowered the means' and the logits' variance but doubled the
    scales'. ``"stratified"`` with ``allocation="uniform"`` and common noise draws one
    small Latin hypercube per component size (0.8-2.6x the time of ``"iid"`` per
    sample); with the proportional allocation it sorts every slot per coordinate
    (2-20x). With common noise the m-th draws
    of all components share their noise (for ``"stratified"``: the same stratum order
    and offsets). ``component_rule="fourier"`` differentiates each component's scale
    (or scale_tril) through the Hessian of f instead of through the draw (module
    docstring): exact draw by draw for quadratic f, and for other f lower variance
    wherever f's second derivatives vary less than grad f times the noise. It needs a
    twice-differentiable f and a Taylor pass per coordinate and draw: Price's theorem
    holds with the distributional Hessian, so a kink (relu, abs, clip) or a jump of f
    biases it. With ``smooth="check"`` (default) that rule first proves f smooth
    enough from its jaxpr and raises a ValueError naming the offending primitive;
    ``smooth="assume"`` skips the proof (see ``stochbp.fourier``)."""
    allocation = checks.one_of("mixture_marginal()", "allocation", allocation, ALLOCATIONS)
    common_noise = checks.boolean("mixture_marginal()", "common_noise", common_noise)
    noise = checks.one_of("mixture_marginal()", "noise", noise, NOISES)
    component_rule = checks.one_of("mixture_marginal()", "component_rule", component_rule,
                                   RULES)
    smooth = checks.smooth_option("mixture_marginal()", smooth)
    return MixtureMarginal(allocation=allocation, common_noise=common_noise, noise=noise,
                           component_rule=component_rule, smooth=smooth)
