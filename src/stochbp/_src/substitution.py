"""Evaluate fn at many one-column substitutions of a matrix z, reusing linear first layers.

The Bernoulli and Categorical Fourier rules with a ``row_terms`` f evaluate
fn(z_s) for S substitutions z_s = z + c_s e_{j_s}^T (column j_s of every row moved by
the row's coefficient c_s[i]). Vectorising fn over s recomputes every matrix product
that consumes z: S (n x d) @ (d x m) products, where the rank-one structure of the
change gives each of them as

    z_s @ W = z @ W + c_s W[j_s, :]^T   (an outer product: O(n m) instead of O(n d m)).

:func:`column_substitutions` traces fn once and interprets its jaxpr with z held in
that factored form (z, and for each s the new column j_s). A ``dot_general`` that
contracts z's column axis against an array that does not depend on z takes the rank-one
update; elementwise operations (with arrays of z's shape or scalars) are applied to z
and to the S new columns, so they cost O(n d + S n) instead of O(S n d); a row sum or
full sum subtracts the old column and adds the new one; calls of jitted functions are
entered. Every other operation on the factored form first materialises the S
substituted matrices (as plain vectorisation would) and continues vectorised over s.
The result equals ``jax.vmap(fn)`` over the substituted matrices up to floating-point
rounding.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.extend import core as jcore


class _Sparse:
    """value_s = base with column col[s] replaced by patch[s] (base (n, d), patch (S, n))."""

    def __init__(self, base, col, patch):
        self.base, self.col, self.patch = base, col, patch

    def column(self):
        return self.base[:, self.col].T  # (S, n): the replaced columns' old values

    def dense(self):
        hot = jax.nn.one_hot(self.col, self.base.shape[1], dtype=bool)  # (S, d)
        return jnp.where(hot[:, None, :], self.patch[:, :, None], self.base[None])


class _Batched:
    def __init__(self, value):
        self.value = value


def _dense(x):
    if isinstance(x, _Sparse):
        return _Batched(x.dense())
    return x


def _bind(eqn, vals):
    params = eqn.primitive.get_bind_params(eqn.params)  # as jax's own eval_jaxpr
    out = eqn.primitive.bind(*vals, **params)
    return out if eqn.primitive.multiple_results else [out]


def _apply(eqn, invals):
    invals = [_dense(v) for v in invals]
    batched = [isinstance(v, _Batched) for v in invals]
    raw = [v.value if isinstance(v, _Batched) else v for v in invals]
    if not any(batched):
        return _bind(eqn, raw)
    axes = tuple(0 if b else None for b in batched)
    outs = jax.vmap(lambda *a: tuple(_bind(eqn, list(a))), in_axes=axes)(*raw)
    return [_Batched(o) for o in outs]


def _dot(eqn, lhs: _Sparse, rhs):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    if tuple(lb) or tuple(rb) or tuple(lc) != (1,) or len(rc) != 1:
        return None
    out_type = eqn.params.get("preferred_element_type") or jnp.result_type(lhs.base, rhs)
    base = jax.lax.dot_general(lhs.base, rhs, (((1,), tuple(rc)), ((), ())),
                               preferred_element_type=out_type)  # (n, m...)
    rows = jnp.moveaxis(jnp.take(rhs, lhs.col, axis=rc[0]), rc[0], 0)  # (S, m...)
    coef = (lhs.patch - lhs.column()).astype(out_type)  # (S, n): new minus old
    upd = coef.reshape(coef.shape + (1,) * (rows.ndim - 1)) * rows[:, None]
    return [_Batched(base[None] + upd.astype(out_type))]


_UNARY = {"neg", "exp", "exp2", "log", "log1p", "expm1", "abs", "tanh", "logistic", "sign",
          "sqrt", "rsqrt", "integer_pow", "sin", "cos", "square", "floor", "ceil", "round",
          "is_finite", "not", "convert_element_type", "stop_gradient", "lgamma", "digamma"}
_NARY = {"add", "sub", "mul", "div", "max", "min", "pow", "ne", "eq", "lt", "le", "gt", "ge",
         "and", "or", "select_n", "rem", "atan2", "add_any"}


def _elementwise(eqn, invals):
    """Elementwise ops keep the patched form: apply to the base and to the patches."""
    sparse = [v for v in invals if isinstance(v, _Sparse)]
    first = sparse[0]
    if any(v.col is not first.col for v in sparse):
        return None
    shape = first.base.shape
    bases, patches = [], []
    for v in invals:
        if isinstance(v, _Sparse):
            bases.append(v.base)
            patches.append(v.patch)
        elif isinstance(v, _Batched):
            return None
        elif jnp.shape(v) == ():
            bases.append(v)
            patches.append(v)
        elif jnp.shape(v) == shape:
            bases.append(v)
            patches.append(jnp.asarray(v)[:, first.col].T)
        else:
            return None
    base = _bind(eqn, bases)
    patch = _bind(eqn, patches)
    if any(jnp.shape(b) != shape for b in base):
        return None
    return [_Sparse(b, first.col, p) for b, p in zip(base, patch)]


def _reduce_sum(eqn, v: _Sparse):
    axes = tuple(sorted(eqn.params["axes"]))
    if axes == (1,):
        return [_Batched(jnp.sum(v.base, 1)[None] - v.column() + v.patch)]
    if axes == (0, 1):
        return [_Batched(jnp.sum(v.base) - jnp.sum(v.column(), 1) + jnp.sum(v.patch, 1))]
    return None


def _eval(jaxpr, consts, args):
    env = {}

    def read(v):
        if isinstance(v, jcore.Literal):
            return v.val
        return env[v]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = c
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        outs = None
        if any(isinstance(v, _Sparse) for v in invals):
            name = eqn.primitive.name
            if name == "dot_general" and isinstance(invals[0], _Sparse) and \
                    not isinstance(invals[1], (_Sparse, _Batched)):
                outs = _dot(eqn, invals[0], invals[1])
            elif name in _UNARY or name in _NARY:
                outs = _elementwise(eqn, invals)
            elif name == "reduce_sum" and isinstance(invals[0], _Sparse):
                outs = _reduce_sum(eqn, invals[0])
            elif name in ("pjit", "jit") and "jaxpr" in eqn.params:
                closed = eqn.params["jaxpr"]
                outs = _eval(closed.jaxpr, closed.consts, invals)
        if outs is None:
            outs = _apply(eqn, invals)
        for v, o in zip(eqn.outvars, outs):
            if not isinstance(v, jcore.DropVar):
                env[v] = o
    return [read(v) for v in jaxpr.outvars]


def column_substitutions(fn: Callable, z, cols, coef):
    """Stack over s of fn(z + coef[s][:, None] * onehot(cols[s])) for a matrix z (n, d).

    ``cols`` (S,) are column indices, ``coef`` (S, n) the per-row changes (new value
    minus old). Matrix products of z with arrays independent of z use the rank-one
    update; the result equals vmapping fn over the S substituted matrices.
    """
    z = jnp.asarray(z)
    if z.ndim != 2:
        raise ValueError(f"column_substitutions(): z must be a matrix (n, d); got shape "
                         f"{z.shape}")
    closed = jax.make_jaxpr(fn)(z)
    patch = z[:, cols].T + jnp.asarray(coef).astype(z.dtype)  # (S, n): the new columns
    outs = _eval(closed.jaxpr, closed.consts, [_Sparse(z, cols, patch)])
    num = jnp.shape(cols)[0]
    result = []
    for o in outs:
        o = _dense(o)
        if isinstance(o, _Batched):
            result.append(o.value)
        else:
            result.append(jnp.broadcast_to(o, (num,) + jnp.shape(o)))
    return result[0] if len(result) == 1 else tuple(result)
