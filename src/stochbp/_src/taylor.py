"""Taylor-mode derivatives of a user's f, and the workaround for JAX's jet gaps.

The Fourier rules need, for every latent coordinate j and every n <= N, the pure
derivative d^n f / dz_j^n at each sample. Along the line t -> f(z + t e_j) these are
n! times the Taylor coefficients of a univariate function, which Taylor mode
(`jax.experimental.jet`) propagates in O(N^2) work per primitive, where nesting `jvp`
N times costs O(2^N).

`jet` in JAX 0.10.2 cannot trace some common programs (jax-ml/jax#30352 and missing
rules). :func:`jet_compatible` re-expresses a function so that `jet` can:

* ``custom_jvp`` / ``custom_vjp`` calls (``jax.nn.log_sigmoid``, ``softplus``, ``relu``,
  ``logaddexp``, ...) are replaced by the primal computation they wrap, which is
  made of primitives that do have rules. Taylor mode needs only that primal.
* nested ``jit`` calls are inlined;
* ``scan`` is unrolled (its length is static) and ``cond`` becomes a ``select_n`` over
  every branch (the branch index carries no derivative);
* ``lgamma``, ``digamma`` and ``polygamma`` get Taylor rules (registered once, only if
  JAX has none), from their derivatives psi^(k) via Faa di Bruno's formula, and so does
  ``triangular_solve`` (one more solve per coefficient; ``MultivariateNormal.log_prob``);
  jet's ``max`` / ``min`` rules get their operands broadcast to one shape first.

``while_loop`` has no fixed length and is refused with a clear error.

Taylor mode gives classical derivatives, which exist almost everywhere for piecewise
smooth code: at a kink of the primal (``max``, ``abs``) it follows one side. That is
harmless where the kinks cancel (softplus's primal is max(x, 0) + log1p(exp(-|x|)),
analytic) and for first derivatives of a continuous f, but not for a rule of order
N >= 2 when f itself has a jump in a derivative of order below N (relu, abs, clip,
floor, where(x > 0, 1, 0)): Theorem 1 then needs the distributional derivative, whose
Dirac delta at the kink carries a gradient term the classical one misses, although the
kink itself has probability zero. The rules that use these derivatives therefore first
prove f smooth enough (:mod:`stochbp._src.smoothness`).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import jet as _jet
from jax.extend import core as jcore

__all__ = ["jet_compatible", "taylor_coefficients", "directional_derivatives",
           "map_coordinates"]

_CUSTOM_CALLS = {"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"}
_NESTED_CALLS = {"jit", "pjit", "closed_call", "core_call", "remat", "remat2", "checkpoint"}


# --------------------------------------------------------------------------------------
# Missing Taylor rules: lgamma, digamma, polygamma.
# --------------------------------------------------------------------------------------
def _compose_series(derivs: Sequence[Any], u: Sequence[Any]) -> list:
    """Taylor coefficients of g(x(t)) from g's derivatives at x(0).

    ``u`` holds the non-factorial coefficients u_1..u_N of x(t) - x(0); ``derivs[k]`` is
    g^{(k+1)}(x(0)). Coefficient n of the output is sum_k g^{(k)}/k! [t^n](x(t)-x0)^k.
    """
    order = len(u)
    out = [0.0] * order
    power = list(u)  # coefficients of (x - x0)^1, index i <-> t^{i+1}
    for k in range(1, order + 1):
        scale = derivs[k - 1] / math.factorial(k)
        for n in range(k, order + 1):
            out[n - 1] = out[n - 1] + scale * power[n - 1]
        if k < order:  # multiply by (x - x0) once more
            nxt = [0.0] * order
            for n in range(k + 1, order + 1):
                nxt[n - 1] = sum(power[i - 1] * u[n - i - 1] for i in range(k, n))
            power = nxt
    return out


def _series_terms(series):
    return [jnp.zeros(()) if type(t) is _jet.ZeroTerm else t for t in series]


def _psi_rule(first_order: int):
    """Rule for x -> psi^(first_order - 1)(x), lgamma being first_order = 0."""

    def rule(primals_in, series_in, **params):
        (x,), (series,) = primals_in, series_in
        primal = lax.lgamma(x) if first_order == 0 else _polygamma(first_order - 1, x)
        derivs = [_polygamma(first_order + k, x) for k in range(len(series))]
        return primal, _compose_series(derivs, _series_terms(series))

    return rule


def _polygamma(m: int, x):
    if m == -1:
        return lax.lgamma(x)
    if m == 0:
        return lax.digamma(x)
    return lax.polygamma(jnp.asarray(m, x.dtype), x)


def _polygamma_rule(primals_in, series_in, **params):
    (m, x), (_, series) = primals_in, series_in
    if not isinstance(m, (int, float)) and not hasattr(m, "shape"):
        raise NotImplementedError("polygamma order must be concrete")
    m_int = int(jnp.max(m)) if not isinstance(m, jax.core.Tracer) else None
    if m_int is None:
        raise NotImplementedError("polygamma in Taylor mode needs a concrete order")
    primal = lax.polygamma(m, x)
    derivs = [_polygamma(m_int + 1 + k, x) for k in range(len(series))]
    return primal, _compose_series(derivs, _series_terms(series))


def _triangular_solve_rule(primals_in, series_in, *, left_side, lower, transpose_a,
                           conjugate_a, unit_diagonal):
    """Taylor rule for X = op(A)^{-1} B (left_side) or B op(A)^{-1}, A triangular.

    With Taylor coefficients A(t) = sum_i A_i t^i, B(t) = sum_i B_i t^i, matching powers
    of t in op(A) X = B gives op(A_0) X_k = B_k - sum_{i=1..k} op(A_i) X_{k-i}: each
    coefficient is one more triangular solve with the primal A_0. op(A_i) uses only the
    triangle that the primitive reads (and, with a unit diagonal, its strict part).
    Inside jet the series are Taylor coefficients (jet scales by factorials only at its
    boundary). MultivariateNormal.log_prob reaches this primitive."""
    (a, b), (series_a, series_b) = primals_in, series_in

    def solve(rhs):
        return lax.linalg.triangular_solve(
            a, rhs, left_side=left_side, lower=lower, transpose_a=transpose_a,
            conjugate_a=conjugate_a, unit_diagonal=unit_diagonal)

    def used(m):
        m = jnp.tril(m, -int(unit_diagonal)) if lower else jnp.triu(m, int(unit_diagonal))
        m = jnp.conj(m) if conjugate_a else m
        return jnp.swapaxes(m, -1, -2) if transpose_a else m

    coef_a = [used(t) for t in series_a]
    xs = [solve(b)]
    for k in range(1, len(series_b) + 1):
        rhs = series_b[k - 1]
        for i in range(1, k + 1):
            rhs = rhs - (coef_a[i - 1] @ xs[k - i] if left_side else xs[k - i] @ coef_a[i - 1])
        xs.append(solve(rhs))
    return xs[0], xs[1:]


def _broadcasting(rule):
    """``rule`` with its operands broadcast to one shape first. lax.max / lax.min accept
    operands whose shapes differ by size-1 axes (numpyro's Beta.log_prob has one), while
    jet's rules for them select between the unbroadcast primals and fail."""
    def wrapped(primals_in, series_in, **params):
        shape = jnp.broadcast_shapes(*(jnp.shape(p) for p in primals_in))
        primals_in = [jnp.broadcast_to(p, shape) for p in primals_in]
        series_in = [[jnp.broadcast_to(t, shape) for t in terms] for terms in series_in]
        return rule(primals_in, series_in, **params)
    wrapped.stochbp_broadcasting = True
    return wrapped


def _register_missing_rules() -> None:
    rules = _jet.jet_rules
    for prim in (lax.max_p, lax.min_p):
        if prim in rules and not getattr(rules[prim], "stochbp_broadcasting", False):
            rules[prim] = _broadcasting(rules[prim])
    for prim, rule in ((lax.lgamma_p, _psi_rule(0)), (lax.digamma_p, _psi_rule(1)),
                       (lax.polygamma_p, _polygamma_rule),
                       (lax.linalg.triangular_solve_p, _triangular_solve_rule)):
        rules.setdefault(prim, rule)


_register_missing_rules()


# --------------------------------------------------------------------------------------
# Lowering interpreter.
# --------------------------------------------------------------------------------------
def inner_jaxpr(eqn):
    """The jaxpr a call equation wraps: a custom_jvp / custom_vjp function's primal
    computation or a nested jit's body; None for any other equation. Shared by the
    lowering below and the jaxpr readers in ``separable`` and ``smoothness``."""
    name = eqn.primitive.name
    if name in _CUSTOM_CALLS:
        return eqn.params.get("call_jaxpr", eqn.params.get("fun_jaxpr"))
    if name in _NESTED_CALLS and "jaxpr" in eqn.params:
        return eqn.params["jaxpr"]
    return None


def bind_eqn(eqn, vals) -> list:
    """Apply an equation's primitive to ``vals`` with its parameters; always a list."""
    params = eqn.primitive.get_bind_params(eqn.params)
    with eqn.ctx.manager:
        outs = eqn.primitive.bind(*vals, **params)
    return list(outs) if eqn.primitive.multiple_results else [outs]


def _eval_lowered(jaxpr, consts, *args):
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, x in zip(jaxpr.constvars, consts):
        env[v] = x
    for v, x in zip(jaxpr.invars, args):
        env[v] = x
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        inner = inner_jaxpr(eqn)
        if inner is not None:
            outs = _eval_closed(inner, invals)
        elif name == "scan":
            outs = _unrolled_scan(invals, **eqn.params)
        elif name == "cond":
            outs = _select_cond(invals, eqn.params["branches"])
        elif name == "while":
            raise NotImplementedError(
                "f uses a while_loop, which has no Taylor-mode rule: its trip count is not "
                "static. Write the loop with jax.lax.scan (or fori_loop with static bounds)."
            )
        else:
            outs = bind_eqn(eqn, invals)
        for v, x in zip(eqn.outvars, outs):
            env[v] = x
    return [read(v) for v in jaxpr.outvars]


def _eval_closed(closed, invals):
    if isinstance(closed, jcore.ClosedJaxpr):
        return _eval_lowered(closed.jaxpr, closed.consts, *invals)
    return _eval_lowered(closed, (), *invals)


def _unrolled_scan(invals, *, jaxpr, num_consts, num_carry, length, reverse, **_):
    consts = invals[:num_consts]
    carry = list(invals[num_consts:num_consts + num_carry])
    xs = invals[num_consts + num_carry:]
    ys = []
    steps = range(length - 1, -1, -1) if reverse else range(length)
    for i in steps:
        outs = _eval_closed(jaxpr, [*consts, *carry, *(x[i] for x in xs)])
        carry, y = list(outs[:num_carry]), outs[num_carry:]
        ys.append(y)
    if reverse:
        ys.reverse()
    n_ys = len(jaxpr.jaxpr.outvars) - num_carry
    stacked = [jnp.stack([y[k] for y in ys]) for k in range(n_ys)] if ys else [
        jnp.zeros((0,) + tuple(v.aval.shape), v.aval.dtype)
        for v in jaxpr.jaxpr.outvars[num_carry:]
    ]
    return [*carry, *stacked]


def _select_cond(invals, branches):
    index, *ops = invals
    results = [_eval_closed(br, ops) for br in branches]
    if len(branches) == 1:
        return results[0]
    index = jnp.clip(index, 0, len(branches) - 1)
    return [lax.select_n(jnp.broadcast_to(index, r[0].shape) if jnp.ndim(r[0]) else index, *r)
            for r in zip(*results)]


def jet_compatible(fun: Callable, *example_args) -> Callable:
    """Return a function equal to ``fun`` that ``jax.experimental.jet`` can trace.

    ``fun`` is traced once at the shapes of ``example_args``; the returned function
    takes arguments of those shapes and dtypes.
    """
    closed = jax.make_jaxpr(fun)(*example_args)
    out_tree = jax.tree_util.tree_structure(jax.eval_shape(fun, *example_args))

    def lowered(*args):
        outs = _eval_lowered(closed.jaxpr, closed.consts, *args)
        return jax.tree_util.tree_unflatten(out_tree, outs)

    return lowered


# --------------------------------------------------------------------------------------
# Derivatives used by the Fourier rules.
# --------------------------------------------------------------------------------------
def taylor_coefficients(fun: Callable, x, direction, order: int) -> jax.Array:
    """Coefficients T_1..T_N of t -> fun(x + t * direction), T_n = (d/dt)^n fun / n!.

    ``fun`` must already be jet-compatible. Returns an array of shape (order, *out).
    """
    series = [direction] + [_jet.zero_term] * (order - 1)
    _, out = _jet.jet(fun, (x,), (series,), factorial_scaled=False)
    out = [jnp.zeros_like(jnp.asarray(fun(x))) if type(t) is _jet.ZeroTerm else t
           for t in out]
    return jnp.stack([jnp.asarray(t) for t in out])


# Elements (of one intermediate array) allowed per step when the coordinate directions
# are processed together. Vectorising all m directions at once keeps m copies of every
# intermediate of f, i.e. memory m^2 for an f whose intermediates have size m (Normal
# fourier at m = 10^7 would need petabytes). Above this bound the directions go through
# a sequential loop in chunks, so memory stays proportional to m.
DIRECTION_BLOCK_ELEMENTS = 2 ** 21


def map_coordinates(fn: Callable, m: int, elements_per_direction: int) -> Any:
    """Stack ``fn(j)`` over the coordinate indices j = 0..m-1 along a new leading axis.

    ``fn`` is traced once and applied to a batch of indices; when a batch of all m would
    hold more than :data:`DIRECTION_BLOCK_ELEMENTS` elements (each direction costing
    ``elements_per_direction``), the indices are processed in chunks of that size by a
    sequential ``lax.map``. The result does not depend on the chunking.
    """
    chunk = max(1, DIRECTION_BLOCK_ELEMENTS // max(1, int(elements_per_direction)))
    indices = jnp.arange(m)
    if chunk >= m:
        return jax.vmap(fn)(indices)
    return lax.map(fn, indices, batch_size=chunk)


def unit_vector(j, m: int, dtype) -> jax.Array:
    """e_j in R^m (under a batch of indices, rows of the identity without forming it)."""
    return (jnp.arange(m) == j).astype(dtype)


def directional_derivatives(fun: Callable, z, order: int) -> jax.Array:
    """Pure partial derivatives d^n fun / dz_j^n at a flat point z, for n = 1..order.

    ``fun`` maps a vector of shape (m,) to a scalar. Returns shape (order, m). Each
    coordinate is one Taylor-mode pass along its unit vector e_j, n! [t^n] fun(z + t e_j);
    the passes are vectorised, in chunks when m is large (see :func:`map_coordinates`),
    so memory grows as m times the chunk, never as m^2. When ``fun`` is proven separable,
    fun(z) = sum_j g_j(z_j) + C (:func:`stochbp._src.separable.separable_part`), one pass
    of v(z) = (g_j(z_j))_j along the all-ones direction gives every coordinate:
    n! [t^n] v_j(z + t 1).
    """
    from stochbp._src import separable  # separable imports this module

    z = jnp.asarray(z)
    m = z.shape[0]
    factorials = jnp.asarray([math.factorial(n) for n in range(1, order + 1)], z.dtype)
    part = separable.separable_part(fun, z)
    if part is not None:
        coeffs = taylor_coefficients(part, z, jnp.ones_like(z), order)  # (order, m)
        return coeffs.astype(z.dtype) * factorials[:, None]
    lowered = jet_compatible(fun, z)
    coeffs = map_coordinates(
        lambda j: taylor_coefficients(lowered, z, unit_vector(j, m, z.dtype), order),
        m, m * order)  # (m, order)
    return coeffs.T * factorials[:, None]
