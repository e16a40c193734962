"""Exact pathwise gradients through Gaussian mixtures (Graves 2016).

A mixture with weights pi_j and Gaussian components N(mu_j, Sigma_j) has no location-scale
reparameterisation: the component index is discrete. Graves' construction samples the D
coordinates ancestrally and gives every coordinate the implicit derivative of its
one-dimensional conditional,

    x_d = F_d^{-1}(u_d | x_<d; theta),   dx_d = -dF_d(x_d | x_<d; theta) / f_d(x_d | x_<d)

(his Eq. 6, with the total differential dF_d taken with respect to theta *and* the earlier
coordinates x_<d, so the chain rule runs through the whole sample). Each conditional is
again a K-component mixture of 1-D Gaussians,

    f_d(x_d | x_<d) = sum_j w_dj N(x_d; m_jd, s_jd^2),
    w_dj = pi_j prod_{d' < d} N(x_d'; m_jd', s_jd'^2) / (same summed over j),

and its CDF derivative is analytic (Graves Eq. 22: the integral of d f_d / d w_j up to
x_d is just the component CDF Phi_jd(x_d)):

    dF_d = sum_j w_dj (Phi_jd - F_d) dlog w_dj - sum_j w_dj N_jd (dm_jd + z_jd ds_jd),

with z_jd = (x_d - m_jd) / s_jd. Dividing by f_d gives, with responsibilities
r_dj = w_dj N_jd / f_d and g_dj = w_dj (Phi_jd - F_d) / f_d,

    dx_d = sum_j r_dj (dm_jd + z_jd ds_jd) - sum_j g_dj dlog w_dj.             (*)

The first term is the responsibility-weighted Gaussian reparameterisation gradient; the
second moves probability mass between components. With K = 1, r = 1 and g = 0, so (*) is
exactly the Gaussian reparameterisation dx = dmu + z dsigma, sample for sample.

Diagonal covariance (Graves' case): m_jd = mu_jd, s_jd = sigma_jd and
log w_dj = log pi_j + sum_{d'<d} log N(x_d'; mu_jd', sigma_jd') + const.

Full covariance (the extension Graves leaves open): with Sigma_j = L_j L_j^T and
eps_j = L_j^{-1}(x - mu_j) the conditional of x_d under component j is
N(mu_jd + sum_{d'<d} L_j[d,d'] eps_jd', L_j[d,d]^2), and the log-weight grows by
-eps_jd^2 / 2 - log L_j[d,d] per coordinate. eps_j is built by forward substitution,
one row of L_j per coordinate, and its tangent by differentiating the same row of
L_j eps_j = x - mu_j: O(K D) per coordinate, O(K D^2) per sample, never an O(D^3)
inverse or a per-sample factorisation.

The primal sample is drawn the cheap way (one component index from pi, then
mu_j + L_j eps); this has the same joint law as inverting the conditional CDFs, and (*)
depends on x only. The derivative is a custom JVP, so forward and reverse mode, jit,
vmap and batch shapes all work. It runs as one scan over the D coordinates (the
conditional weights of coordinate d are the responsibilities of coordinate d - 1);
each step is vectorised over all samples, batch elements and components.

Mixing weights enter through numpyro's ``mixing_distribution.logits`` normalised by
log-softmax, exactly as numpyro's ``MixtureSameFamily.log_prob`` does; so for a
``Categorical(probs=...)`` mixture the gradient with respect to ``probs`` is that of the
expectation as a function of probs / sum(probs) (it is orthogonal to probs).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
from jax import lax

from stochbp._src import checks
from stochbp._src.registry import family_of, unwrap

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_OWNER = "MixtureSameFamily"
COMPONENTS = ("Normal", "Independent(Normal, 1)", "MultivariateNormal")


# ---------------------------------------------------------------- the 1-D conditionals
# Internal layout: per coordinate, arrays are (K, M) with the K components first and the
# M = N * S columns (N flattened batch elements times S samples, batch-major) last, so
# every elementwise pass and every sum over components runs over long contiguous rows.
# Parameters are stored per batch element, (..., N), and spread over the columns by
# _columns. (XLA on CPU is several times slower on the same work laid out with a
# size-one batch axis, hence the flat column axis.)
def _columns(p, num):
    """(..., N) per-batch-element values -> (..., 1) or (..., N * num) per column."""
    if p.shape[-1] == 1:
        return p
    full = jnp.broadcast_to(p[..., None], p.shape + (num,))
    return full.reshape(p.shape[:-1] + (p.shape[-1] * num,))


def _normal_tails(z):
    """Phi(z) and 1 - Phi(z), each accurate in its own tail, from a single erfc."""
    beyond = 0.5 * lax.erfc(jnp.abs(z) * (1.0 / math.sqrt(2.0)))
    left = z < 0
    return jnp.where(left, beyond, 1.0 - beyond), jnp.where(left, 1.0 - beyond, beyond)


def _conditional(log_w, w, z, scale):
    """One coordinate's conditional mixture at x_d, given normalised log-weights and
    weights (K, M), standardised values z (K, M) and conditional scales.

    Returns r and g of (*) and the next coordinate's log-weights, which are the
    responsibilities: w_{d+1,j} = w_dj N_jd(x_d) / f_d(x_d) = r_dj."""
    joint = log_w - 0.5 * z * z - jnp.log(scale) - _LOG_SQRT_2PI  # log w_j N_j(x_d)
    top = jnp.max(joint, axis=0, keepdims=True)
    e = jnp.exp(joint - top)
    total = jnp.sum(e, axis=0, keepdims=True)
    log_density = top + jnp.log(total)  # log f_d(x_d | x_<d)
    r = e / total
    lower, upper = _normal_tails(z)
    cdf = jnp.sum(w * lower, axis=0, keepdims=True)
    survival = jnp.sum(w * upper, axis=0, keepdims=True)
    # Phi_j - F = (1 - F) - (1 - Phi_j); use the form without cancellation.
    excess = jnp.where(cdf < 0.5, lower - cdf, survival - upper)
    g = w * excess * jnp.exp(-log_density)
    return r, g, joint - log_density


def _over_coordinates(step, carry, xs):
    """lax.scan over the coordinate axis (the leading axis of every xs).

    Deliberately not unrolled: the loop boundary makes XLA materialise the sample once.
    Unrolled, XLA on CPU fuses the random draw (normal via erfinv) into each of the
    dozens of consumers and recomputes it there, which made gradients 4x slower."""
    _, ys = lax.scan(step, carry, xs)
    return ys


def _initial_weights(log_pi, dlog_pi, num):
    log_w = jnp.broadcast_to(_columns(log_pi, num), (log_pi.shape[0],
                                                     log_pi.shape[1] * num))
    dlog_w = jnp.broadcast_to(_columns(dlog_pi, num), log_w.shape)
    return log_w, jnp.exp(log_w), dlog_w


# ---------------------------------------------------------------- diagonal covariance
@jax.custom_jvp
def _diagonal_implicit(log_pi, loc, scale, x):
    """Identity on the sample x (D, N * S); its JVP is (*) for diagonal components.
    log_pi (K, N); loc, scale (D, K, N)."""
    del log_pi, loc, scale
    return x


@_diagonal_implicit.defjvp
def _diagonal_implicit_jvp(primals, tangents):
    log_pi, loc, scale, x = primals
    dlog_pi, dloc, dscale, _ = tangents
    num = x.shape[-1] // log_pi.shape[-1]

    def step(carry, inputs):
        log_w, w, dlog_w = carry
        x_d = inputs[0]
        loc_d, scale_d, dloc_d, dscale_d = (_columns(a, num) for a in inputs[1:])
        z = (x_d - loc_d) / scale_d
        r, g, log_w_next = _conditional(log_w, w, z, scale_d)
        dx_d = jnp.sum(r * (dloc_d + z * dscale_d) - g * dlog_w, axis=0)
        # d log N_jd(x_d): the earlier coordinate moves the later weights too.
        dlog_w = dlog_w + (z * (dloc_d - dx_d) + (z * z - 1.0) * dscale_d) / scale_d
        return (log_w_next, r, dlog_w), dx_d

    carry = _initial_weights(log_pi, dlog_pi, num)
    return x, _over_coordinates(step, carry, (x, loc, scale, dloc, dscale))


# ---------------------------------------------------------------- full covariance
@jax.custom_jvp
def _full_implicit(log_pi, loc, tril, x):
    """Identity on the sample x (D, N * S); its JVP is (*) for full-covariance
    components. log_pi (K, N); loc (D, K, N); tril (D, K, D, N): row d of each lower
    Cholesky factor L_j."""
    del log_pi, loc, tril
    return x


@_full_implicit.defjvp
def _full_implicit_jvp(primals, tangents):
    log_pi, loc, tril, x = primals
    dlog_pi, dloc, dtril, _ = tangents
    num_dims, columns = x.shape
    num = columns // log_pi.shape[-1]

    def step(carry, inputs):
        # eps, deps (K, D, M): eps_j = L_j^{-1}(x - mu_j), filled up to coordinate d - 1.
        log_w, w, dlog_w, eps, deps = carry
        x_d, e_d = inputs[0], inputs[-1]
        loc_d, dloc_d, row_d, drow_d = (_columns(a, num) for a in inputs[1:-1])
        diag, off = e_d[:, None], (1.0 - e_d)[:, None]
        scale_d = jnp.sum(row_d * diag, axis=1)  # L_j[d, d]
        dscale_d = jnp.sum(drow_d * diag, axis=1)
        # Conditional mean of x_d under component j and its tangent (row d of
        # L_j eps_j = x - mu_j, differentiated); row_d * off keeps L_j[d, d'], d' < d.
        mean = loc_d + jnp.sum(row_d * off * eps, axis=1)
        dmean = dloc_d + jnp.sum((drow_d * eps + row_d * deps) * off, axis=1)
        z = (x_d - mean) / scale_d  # = eps_jd
        r, g, log_w_next = _conditional(log_w, w, z, scale_d)
        dx_d = jnp.sum(r * (dmean + z * dscale_d) - g * dlog_w, axis=0)
        dz = (dx_d - dmean - z * dscale_d) / scale_d
        dlog_w = dlog_w - z * dz - dscale_d / scale_d  # d(-z^2/2 - log L_j[d, d])
        carry = (log_w_next, r, dlog_w, eps + z[:, None, :] * diag,
                 deps + dz[:, None, :] * diag)
        return carry, dx_d

    log_w, w, dlog_w = _initial_weights(log_pi, dlog_pi, num)
    zeros = jnp.zeros((log_pi.shape[0], num_dims, columns), x.dtype)
    eye = jnp.eye(num_dims, dtype=x.dtype)
    carry = (log_w, w, dlog_w, zeros, zeros)
    return x, _over_coordinates(step, carry, (x, loc, dloc, tril, dtril, eye))


# ---------------------------------------------------------------- parameters and checks
def _component_kind(comp) -> str:
    if isinstance(comp, nd.Normal):
        return "univariate"
    if isinstance(comp, nd.Independent) and isinstance(comp.base_dist, nd.Normal) \
            and comp.reinterpreted_batch_ndims == 1:
        return "diagonal"
    if isinstance(comp, nd.MultivariateNormal):
        return "full"
    return ""


def _describe(comp) -> str:
    if isinstance(comp, nd.Independent):
        return (f"Independent({type(comp.base_dist).__name__}, "
                f"{comp.reinterpreted_batch_ndims})")
    return type(comp).__name__


def _broadcast(name: str, value, shape):
    try:
        return jnp.broadcast_to(value, shape)
    except ValueError:
        raise ValueError(f"{_OWNER}: {name} has shape {jnp.shape(value)}, which does not "
                         f"match the mixture's shape {shape} (batch + components + "
                         "event)") from None


def gaussian_parts(d: nd.MixtureSameFamily):
    """(kind, log_pi (*B, K), loc (*B, K, D), scale (*B, K, D) or scale_tril (*B, K, D, D)).

    ``kind`` is "univariate" (D = 1 added), "diagonal" or "full"."""
    comp = d.component_distribution
    kind = _component_kind(comp)
    if not kind:
        raise ValueError(
            f"{_OWNER}: pathwise gradients need Gaussian components "
            f"({', '.join(COMPONENTS)}); "
            f"got component_distribution={_describe(comp)}. Use stochbp.score_function() "
            "for other component families.")
    batch, k = tuple(d.batch_shape), d.mixture_size
    logits = d.mixing_distribution.logits
    log_pi = _broadcast("mixing_distribution.logits", jax.nn.log_softmax(logits, -1),
                        batch + (k,))
    if kind == "univariate":
        shape = batch + (k, 1)
        loc = _broadcast("component_distribution.loc", jnp.asarray(comp.loc)[..., None], shape)
        scale = _broadcast("component_distribution.scale",
                           jnp.asarray(comp.scale)[..., None], shape)
        return kind, log_pi, loc, scale
    if kind == "diagonal":
        base = comp.base_dist
        shape = batch + (k, comp.event_shape[0])
        loc = _broadcast("component_distribution.loc", base.loc, shape)
        scale = _broadcast("component_distribution.scale", base.scale, shape)
        return kind, log_pi, loc, scale
    dim = comp.event_shape[0]
    loc = _broadcast("component_distribution.loc", comp.loc, batch + (k, dim))
    tril = _broadcast("component_distribution.scale_tril", comp.scale_tril,
                      batch + (k, dim, dim))
    return kind, log_pi, loc, jnp.tril(tril)


def log_weights(d: nd.MixtureSameFamily):
    """log pi, the normalised log mixing weights (traceable)."""
    mix = d.mixing_distribution
    if isinstance(mix, nd.CategoricalProbs):
        return jnp.log(mix.probs / jnp.sum(mix.probs, -1, keepdims=True))
    return jax.nn.log_softmax(mix.logits, -1)


# An exact zero weight is refused, for every estimator: the exact gradient with respect
# to it is a one-sided derivative at the boundary of the simplex, which neither the
# implicit rule nor the score function can see (no draw ever comes from that component,
# so both return 0 where the true derivative is E_j[f] - E[f]). Drop the component, or
# give it a small positive weight.
_ZERO_WEIGHT = ("(an exact zero weight is refused: its gradient is a one-sided derivative "
                "that no sample-based estimator sees; drop the component or give it a "
                "small positive weight)")


def _check_weights(mix) -> None:
    if isinstance(mix, nd.CategoricalLogits):
        checks.check_values(_OWNER, "mixing_distribution.logits", mix.logits,
                            np.isfinite, "finite " + _ZERO_WEIGHT)
        return
    probs = mix.probs
    checks.check_values(_OWNER, "mixing_distribution.probs", probs,
                        lambda v: (v > 0) & (v <= 1), "in (0, 1] " + _ZERO_WEIGHT)
    tol = 1e-4 if jnp.result_type(probs) == jnp.float32 else 1e-8
    checks.check_values(_OWNER, "mixing_distribution.probs", probs,
                        lambda v: np.abs(v.sum(-1, keepdims=True) - 1) <= tol,
                        "mixing weights summing to 1 along the last axis")


def _check_cholesky(comp) -> None:
    name = "component_distribution.scale_tril"
    tril = checks.concrete(comp.scale_tril)
    if tril is None:
        return
    diag = np.diagonal(tril, axis1=-2, axis2=-1)
    bad = ~(np.isfinite(diag) & (diag > 0))
    if bad.any():
        raise ValueError(
            f"{_OWNER}: every component covariance must be positive definite, i.e. its "
            f"Cholesky factor {name} must have a positive, finite diagonal; got diagonal "
            f"{checks._short(diag)} (offending values: {checks._short(diag[bad])})")
    upper = np.triu(tril, 1)
    if np.any(upper != 0):
        raise ValueError(f"{_OWNER}: {name} must be lower triangular; got non-zero entries "
                         f"above the diagonal: {checks._short(upper[upper != 0])}")
    checks.finite(_OWNER, name, tril)


def check_mixture(d: nd.MixtureSameFamily) -> None:
    """Named ValueErrors for invalid weights and Gaussian component parameters
    (concrete values only). Other component families are checked by their own family
    rule when stochbp has one."""
    _check_weights(d.mixing_distribution)
    comp = d.component_distribution
    kind = _component_kind(comp)
    if kind in ("univariate", "diagonal"):
        base = comp if kind == "univariate" else comp.base_dist
        checks.finite(_OWNER, "component_distribution.loc", base.loc)
        checks.positive(_OWNER, "component_distribution.scale", base.scale)
    elif kind == "full":
        checks.finite(_OWNER, "component_distribution.loc", comp.loc)
        _check_cholesky(comp)
    else:
        fam = family_of(comp)
        if fam is not None:
            fam.check(unwrap(comp))


# ---------------------------------------------------------------- sampling
def _draw(kind, log_pi, loc, scale, key, num):
    """num ancestral draws per batch element: index j ~ pi, then mu_j + L_j eps."""
    n, k, dim = loc.shape
    k_index, k_noise = jax.random.split(key)
    u = jax.random.uniform(k_index, (num, n), dtype=loc.dtype)
    bounds = jnp.cumsum(jnp.exp(log_pi), axis=-1)[:, :-1]  # (N, K - 1)
    j = jnp.sum(bounds[None] < u[..., None], axis=-1)  # (num, N)
    eps = jax.random.normal(k_noise, (num, n, dim), dtype=loc.dtype)
    rows = jnp.arange(n)[None, :]
    if kind == "full":
        return loc[rows, j] + jnp.einsum("snde,sne->snd", scale[rows, j], eps)
    return loc[rows, j] + scale[rows, j] * eps


def mixture_rsample(dist: nd.Distribution, key, sample_shape: tuple = ()) -> jax.Array:
    """Draw from a Gaussian ``MixtureSameFamily`` with exact implicit pathwise gradients.

    ``dist`` is ``MixtureSameFamily(Categorical, C)`` with C one of ``Normal`` (1-D),
    ``Independent(Normal, 1)`` (diagonal, D dims) or ``MultivariateNormal`` (full
    covariance), any batch shape (an ``Independent`` wrapper around the mixture is
    accepted). Returns samples of shape ``sample_shape + batch_shape + event_shape``
    whose derivative with respect to the mixing logits or probs, the means and the
    scales (or Cholesky factors) is Graves' implicit derivative (*) of the module
    docstring, composed over the coordinates. Use it exactly like ``rsample``:
    ``jnp.mean(jax.vmap(f)(mixture_rsample(q, key, (n,))))``.

    Invalid parameters raise ValueError naming the argument (when their values are
    concrete, i.e. not under jit/vmap).
    """
    base = unwrap(dist) if isinstance(dist, nd.Distribution) else dist
    if not isinstance(base, nd.MixtureSameFamily):
        raise TypeError("mixture_rsample(): dist must be a numpyro MixtureSameFamily; got "
                        f"dist={dist!r}")
    sample_shape = checks.sample_shape("mixture_rsample()", sample_shape)
    check_mixture(base)
    kind, log_pi, loc, scale = gaussian_parts(base)
    batch = tuple(base.batch_shape)
    dtype = jnp.result_type(loc, scale, log_pi)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    x = _rsample(kind, batch, sample_shape, log_pi.astype(dtype), loc.astype(dtype),
                 scale.astype(dtype), key)
    event = () if kind == "univariate" else (loc.shape[-1],)
    return x.reshape(sample_shape + batch + event)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _rsample(kind, batch, sample_shape, log_pi, loc, scale, key):
    """Draws (num, N, D) with the implicit tangents attached. Jitted so that eager
    calls compile once per shape (inside a user's jit it is simply inlined)."""
    k, dim = loc.shape[len(batch)], loc.shape[-1]
    n = int(np.prod(batch, dtype=int))
    num = int(np.prod(sample_shape, dtype=int))
    log_pi = log_pi.reshape(n, k)
    loc = loc.reshape(n, k, dim)
    scale = scale.reshape((n, k, dim, dim) if kind == "full" else (n, k, dim))
    x = lax.stop_gradient(_draw(kind, log_pi, loc, scale, key, num))  # (num, N, D)
    # Internal layout: coordinates first, then components, then N * num columns.
    x = jnp.transpose(x, (2, 1, 0)).reshape(dim, n * num)
    log_pi = log_pi.T  # (K, N)
    loc = jnp.transpose(loc, (2, 1, 0))  # (D, K, N)
    if kind == "full":
        x = _full_implicit(log_pi, loc, jnp.transpose(scale, (2, 1, 3, 0)), x)
    else:
        x = _diagonal_implicit(log_pi, loc, jnp.transpose(scale, (2, 1, 0)), x)
    return jnp.transpose(x.reshape(dim, n, num), (2, 1, 0))  # (num, N, D)


# ---------------------------------------------------------------- marginalised estimator
# The component index is summed out instead of differentiated through:
#
#     E[f] = sum_j pi_j E_j[f],      E_j[f] = E_eps[f(mu_j + L_j eps)],
#
# so with fbar_j the mean of f over n_j >= 1 reparameterised draws from component j the
# surrogate sum_j pi_j fbar_j has the gradient
#
#     d/dtheta_j:  pi_j dfbar_j/dtheta_j        (Gaussian reparameterisation),
#     d/dlogit_i:  sum_j dpi_j/dlogit_i fbar_j = pi_i (fbar_i - sum_j pi_j fbar_j).
#
# Both are unbiased for any allocation (n_1..n_K) that does not look at the draws eps,
# even one computed from pi: conditionally on the allocation, fbar_j is a mean of n_j
# independent draws from component j. The weights' term is unchanged by adding a
# constant to f (sum_j dpi_j = 0), and it has no 1 / density factor: nothing heavy-tailed
# is left. Allocations of S slots (S >= K, so every component is drawn):
#   "uniform":      slot s goes to component s mod K (static counts);
#   "proportional": one slot per component, the other S - K by systematic sampling from
#                   pi (one uniform offset), so n_j is about 1 + (S - K) pi_j.
# Written per slot, the surrogate is sum_s (pi_{j_s} / n_{j_s}) f(x_s). With common
# noise the m-th draw of every component uses the same eps_m (each fbar_j keeps its law;
# the fbar_j become correlated, which lowers the variance of their differences).
#
# A batch of N mixtures (f of the whole sample, every element its own index): every
# batch element allocates its S slots as above and shuffles them by its own random
# permutation, so slot s holds component j_bs with probability n_bj / S, independently
# over b. Then (1/S) sum_s f(x_s) prod_b pi_{b, j_bs} S / n_{b, j_bs} is unbiased
# (importance weights of a product design); with N = 1 it is the surrogate above. The
# weights multiply over b, and the constant-shift invariance of the weights' term holds
# only for N = 1: for batches its variance can grow with N.
ALLOCATIONS = ("proportional", "uniform")


def _allocate(allocation, pi, key, num):
    """Component of every slot, (num, N) int32, and counts per component, (N, K)."""
    n, k = pi.shape
    if allocation == "uniform":
        j = jnp.broadcast_to((jnp.arange(num, dtype=jnp.int32) % k)[:, None], (num, n))
    else:
        j = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32)[:, None], (k, n))
        rest = num - k
        if rest:
            k_offset, key = jax.random.split(key)
            u = (jnp.arange(rest, dtype=pi.dtype)[:, None]
                 + jax.random.uniform(k_offset, (1, n), dtype=pi.dtype)) / rest
            bounds = jnp.cumsum(pi, axis=-1)[:, :-1]  # (N, K - 1)
            extra = jnp.sum(bounds[None] < u[..., None], axis=-1, dtype=jnp.int32)
            j = jnp.concatenate([j, extra], axis=0)
    if n > 1:  # independent random order of the slots per batch element
        order = jnp.argsort(jax.random.uniform(key, (num, n)), axis=0)
        j = jnp.take_along_axis(j, order, axis=0)
    counts = jnp.sum(j[..., None] == jnp.arange(k, dtype=jnp.int32), axis=0,
                     dtype=jnp.int32)
    return j, counts


NOISES = ("iid", "antithetic", "stratified")
# Noise of the component draws (every option gives each draw exactly N(0, I) noise, so
# each fbar_j keeps its mean and the estimate stays unbiased; they differ only in how the
# n_j draws of one component depend on each other):
#   "iid":        independent standard normals;
#   "antithetic": draws in pairs within a component, (eps, -eps) (ranks 2m and 2m + 1;
#                 with n_j odd the last draw is unpaired);
#   "stratified": Latin hypercube per component: coordinate d of the n_j draws takes the
#                 strata 0..n_j - 1 of (0, 1) in an independent uniformly random order
#                 pi_d, u_md = (pi_d(m) + v_md) / n_j with v_md ~ U(0, 1), and
#                 eps_md = Phi^{-1}(u_md). Each u_md is marginally U(0, 1).
# With common noise the m-th draws of all components share their noise (for
# "stratified": the same order keys and offsets, so components with equal n_j get the
# same design).


def _rank(j, k):
    """Rank (num, N) of every slot among the slots of its component, in slot order."""
    hits = (j[..., None] == jnp.arange(k, dtype=jnp.int32)).astype(jnp.int32)
    return jnp.sum((jnp.cumsum(hits, axis=0) - 1) * hits, axis=-1)


def _inverse_normal(stratum, v, size, dtype):
    """Phi^{-1}((stratum + v) / size), with 1 - u formed without rounding so that no
    stratum maps to +-inf in float32."""
    stratum = stratum.astype(dtype)
    size = jnp.asarray(size).astype(dtype)
    lo = (stratum + v) / size
    hi = ((size - 1 - stratum) + (1 - v)) / size  # 1 - lo, without the rounding to 1
    return jnp.where(lo < 0.5, jax.scipy.special.ndtri(lo), -jax.scipy.special.ndtri(hi))


def _offsets(key, shape, dtype):
    """U(0, 1) offsets strictly inside (0, 1): a uniform on the grid i / 2^p moved by half
    a step."""
    return jax.random.uniform(key, shape, dtype=dtype) + jnp.asarray(jnp.finfo(dtype).eps / 2,
                                                                     dtype)


def _stratified_equal_sizes(j, rank, key, num, n, dim, dtype, k):
    """``"stratified"`` with common noise when the counts are known before tracing (the
    uniform allocation: n0 = num // K draws per component, one more for the first
    num % K). Each size m gets one Latin hypercube of m draws, shared by the components
    of that size: the stratum of rank r in coordinate d is the rank of key_rd among the
    m keys of that coordinate (a uniformly random permutation) plus a random cyclic shift
    mod m (which keeps every stratum exactly uniform if keys tie). Two small sorts of
    (m, N, dim) keys replace the general path's sort of every slot and its count per
    component; the law of the draws is the one of the general path."""
    k_order, k_shift, k_offset = jax.random.split(key, 3)
    keys = jax.random.bits(k_order, (num, n, dim), jnp.uint32)
    v = _offsets(k_offset, (num, n, dim), dtype)
    shift = jax.random.bits(k_shift, (1, n, dim), jnp.uint32)
    n0, extra = divmod(num, k)
    cols = jnp.arange(n)[None, :, None]
    dims = jnp.arange(dim)[None, None, :]
    eps = None
    for size in sorted({n0, n0 + 1} if extra else {n0}):
        strata = jnp.argsort(jnp.argsort(keys[:size], axis=0), axis=0)
        strata = ((strata.astype(jnp.uint32) + shift % size) % size).astype(jnp.int32)
        design = _inverse_normal(strata, v[:size], size, dtype)  # (size, N, dim)
        r = jnp.minimum(rank, size - 1)[..., None]
        this = design[r, cols, dims]
        eps = this if eps is None else jnp.where((j < extra)[..., None], this, eps)
    return eps


def _noise(noise, common, j, counts, key, num, n, dim, dtype, uniform=False):
    """Standard normal noise (num, N, dim) for the slots (component j, counts per
    component) under the ``noise`` option described above (``uniform``: the uniform
    allocation, whose counts are static)."""
    k = counts.shape[-1]
    rows = jnp.arange(n)[None, :]
    rank = _rank(j, k)
    if noise == "stratified" and common and uniform:
        return _stratified_equal_sizes(j, rank, key, num, n, dim, dtype, k)
    start = (jnp.cumsum(counts, axis=-1) - counts)[rows, j]  # first sorted position
    if noise == "iid":
        eps = jax.random.normal(key, (num, n, dim), dtype=dtype)
        return eps[rank, rows] if common else eps
    if noise == "antithetic":
        base = jax.random.normal(key, (num, n, dim), dtype=dtype)
        sign = (1 - 2 * (rank % 2)).astype(dtype)[..., None]
        if common:  # pair m of every component shares base[m]
            return base[rank // 2, rows] * sign
        grouped = jnp.argsort(j, axis=0, stable=True)  # slots of component 0 first, ...
        first = grouped[start + 2 * (rank // 2), rows]  # the pair's first slot
        return base[first, rows] * sign
    # "stratified". Noise index i = the rank (common noise) or the slot. One sort per
    # coordinate orders the indices by random keys; the stratum of an index is its place
    # among its component's indices in that order (a cumulative count), moved by a
    # random cyclic shift c (uniform on 0..n_j - 1), which makes every stratum exactly
    # uniform whatever the sort does with tied keys.
    k_order, k_shift, k_offset = jax.random.split(key, 3)
    cols = jnp.arange(n)[None, :, None]
    dims = jnp.arange(dim)[None, None, :]
    idx = (rank if common else jnp.broadcast_to(jnp.arange(num)[:, None], (num, n)))[..., None]
    order = jnp.argsort(jax.random.bits(k_order, (num, n, dim), jnp.uint32), axis=0)
    pos = jnp.zeros_like(order).at[order, cols, dims].set(
        jnp.broadcast_to(jnp.arange(num, dtype=order.dtype)[:, None, None], order.shape))
    comps = jnp.arange(k, dtype=jnp.int32)[:, None, None, None]
    if common:  # component c holds the ranks 0..n_c - 1
        member = order[None] < counts.T[:, None, :, None]
    else:
        member = j[order, cols] == comps
    before = jnp.cumsum(member, axis=1, dtype=jnp.int32)  # (K, num, N, dim)
    size_int = counts[rows, j][..., None]  # (num, N, 1)
    stratum = before[j[..., None], pos[idx, cols, dims], cols, dims] - 1
    shift = jax.random.bits(k_shift, (k, n, dim), jnp.uint32)
    shift = shift[0][None] if common else shift[j, rows]  # shared, or per component
    stratum = (stratum + (shift % size_int.astype(jnp.uint32)).astype(jnp.int32)) % size_int
    v = _offsets(k_offset, (num, n, dim), dtype)[idx, cols, dims]
    return _inverse_normal(stratum, v, size_int, dtype)


RULES = ("pathwise", "fourier")
# Gradient of one component's expectation E_j[f] = E[f(mu_j + L_j eps)], eps ~ N(0, I):
#   "pathwise": through the draw, d/dmu_j = E[grad f], d/dL_j = E[grad f eps^T];
#   "fourier":  the location through the draw as above, the covariance by the Gaussian
#               Fourier rule (Eq. 15; Price's theorem): dE_j[f] / dSigma_j = E[H f] / 2,
#               H f the Hessian of f at the draw. For a diagonal component that is
#               dE_j[f] / dsigma_jd = sigma_jd E[d^2 f / dx_d^2]; for full covariance
#               dE_j[f] / dL_j = E[H f] L_j. Its variance is that of the second
#               derivatives, zero where f is quadratic, instead of that of grad f eps^T.


def marginal_draws(dist: nd.MixtureSameFamily, key, num_samples: int,
                   allocation: str = "proportional", common_noise: bool = False,
                   noise: str = "iid", rule: str = "pathwise"):
    """(x, w, second): num_samples component draws x (num_samples + batch + event) and
    weights w (num_samples,) such that sum_s w_s f(x_s) is the marginalised surrogate
    of the comment above (w depends on the mixing weights, x on the component
    parameters). Needs num_samples >= K. With ``rule="pathwise"`` x carries the whole
    reparameterisation gradient and ``second`` is None. With ``rule="fourier"`` x
    carries the location's gradient only (the scale enters through stop_gradient) and
    ``second`` is every slot's covariance parameter, differentiable: sigma^2 of its
    component (num_samples + batch + event) for Normal and diagonal components,
    L L^T (num_samples + batch + (D, D)) for full covariance; the caller pairs it with
    half the Hessian of f at the draw (``RULES`` above)."""
    checks.one_of("mixture_marginal()", "allocation", allocation, ALLOCATIONS)
    checks.one_of("mixture_marginal()", "noise", noise, NOISES)
    checks.one_of("mixture_marginal()", "component_rule", rule, RULES)
    check_mixture(dist)
    kind, log_pi, loc, scale = gaussian_parts(dist)
    k = dist.mixture_size
    if num_samples < k:
        raise ValueError(
            f"mixture_marginal(): num_samples must be at least the number of mixture "
            f"components K = {k} (every component is drawn at least once); got "
            f"num_samples={num_samples}. Use stochbp.pathwise() (Graves' rule) for fewer "
            "samples than components.")
    batch = tuple(dist.batch_shape)
    dtype = jnp.result_type(loc, scale, log_pi)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    x, w, second = _marginal(kind, batch, num_samples, allocation, bool(common_noise),
                             noise, rule, log_pi.astype(dtype), loc.astype(dtype),
                             scale.astype(dtype), key)
    event = () if kind == "univariate" else (loc.shape[-1],)
    x = x.reshape((num_samples,) + batch + event)
    if second is not None:
        second = second.reshape(x.shape + ((loc.shape[-1],) if kind == "full" else ()))
    return x, w, second


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5, 6))
def _marginal(kind, batch, num, allocation, common_noise, noise, rule, log_pi, loc, scale,
              key):
    k, dim = loc.shape[len(batch)], loc.shape[-1]
    n = int(np.prod(batch, dtype=int))
    log_pi = log_pi.reshape(n, k)
    loc = loc.reshape(n, k, dim)
    scale = scale.reshape((n, k, dim, dim) if kind == "full" else (n, k, dim))
    k_alloc, k_noise = jax.random.split(key)
    j, counts = _allocate(allocation, lax.stop_gradient(jnp.exp(log_pi)), k_alloc, num)
    eps = _noise(noise, common_noise, j, counts, k_noise, num, n, dim, loc.dtype,
                 uniform=allocation == "uniform")
    rows = jnp.arange(n)[None, :]
    scale_s = scale[rows, j]  # every slot's scale (num, N, D) or scale_tril (num, N, D, D)
    second = None
    if rule == "fourier":  # the scale's gradient comes from the Hessian term instead
        second = (jnp.einsum("snde,snfe->sndf", scale_s, scale_s) if kind == "full"
                  else jnp.square(scale_s))
        scale_s = lax.stop_gradient(scale_s)
    if kind == "full":
        x = loc[rows, j] + jnp.einsum("snde,sne->snd", scale_s, eps)
    else:
        x = loc[rows, j] + scale_s * eps
    # log of prod_b pi_{b, j_bs} S / n_{b, j_bs}, then / S
    log_ratio = log_pi[rows, j] + math.log(num) - jnp.log(counts[rows, j].astype(loc.dtype))
    w = jnp.exp(jnp.sum(log_ratio, axis=1)) / num
    return x, w, second
