"""Structural proof that f: R^m -> R is separable, and its per-coordinate parts.

f is separable when f(z) = sum_j g_j(z_j) + C: every mixed partial derivative is
identically zero. Then d^n f / dz_j^n = g_j^(n)(z_j), and since g_j depends on z_j only,

    d^n f / dz_j^n (z) = n! [t^n] v_j(z + t 1),   v(z) = (g_1(z_1), ..., g_m(z_m)),

i.e. ONE Taylor-mode pass of the vector v along the all-ones direction gives the pure
derivatives of every coordinate at once, exactly, where the general route needs one pass
of f along each unit vector e_j (m passes).

:func:`separable_part` reads f's jaxpr (no numerics) and tags every variable with a kind:

* constant: does not depend on z (constants, literals, and anything computed from them
  alone, by any primitive);
* elementwise: an array with m elements whose element i (in row-major order, the order
  of z) depends on z_i only: z itself; an elementwise primitive (arithmetic, exp, log,
  pow, lgamma, comparisons, select_n, ...) of elementwise and constant operands, the
  elementwise ones having the output's shape; an order-preserving reshape, squeeze or
  unit-dimension broadcast of one;
* separable sum: a scalar c * sum_j g_j(z_j) + C, kept as the pair (vector of the
  terms c g_j(z_j), constant C): reduce_sum over all axes of an elementwise array; an
  inner product (1-D dot_general) of two m-vectors, elementwise or constant; sums and
  differences of separable sums and scalar constants; a separable sum times or
  divided by a scalar constant; its conversion to another float dtype.

``jit``/``pjit`` calls are entered; ``custom_jvp``/``custom_vjp`` calls are entered
through the primal computation they wrap (the derivatives the Fourier rules use are
those of that primal, exactly as in :func:`taylor.jet_compatible`). Anything else that
touches z (matrix products, slicing, gather, cumsum, sort, scan, a nonlinear function of a
sum, a product of two sums, ...) means "not proven", and the caller falls back to the
general route. A "no" is never wrong, only slow; a "yes" is a proof.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

from stochbp._src.taylor import bind_eqn, inner_jaxpr

__all__ = ["separable_part", "is_separable", "why_not_separable"]

_CONST, _ELEM, _SUM = "constant", "elementwise", "separable sum"

# Primitives whose output element i depends only on element i of each operand (all of
# the output's shape, or constants broadcast against it).
ELEMENTWISE = frozenset({
    "add", "sub", "mul", "div", "neg", "rem", "pow", "integer_pow", "square", "sqrt",
    "rsqrt", "cbrt", "exp", "exp2", "log", "log1p", "expm1", "sin", "cos", "tan", "asin",
    "acos", "atan", "atan2", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh",
    "logistic", "lgamma", "digamma", "polygamma", "igamma", "igammac", "erf", "erfc",
    "erf_inv", "bessel_i0e", "bessel_i1e", "abs", "sign", "floor", "ceil", "round",
    "is_finite", "max", "min", "clamp", "select_n", "convert_element_type", "copy",
    "copy_p", "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not", "xor",
    "nextafter", "reduce_precision",
})


class NotSeparable(Exception):
    """Raised while reading a jaxpr that the rules above cannot prove separable."""


def _interpret(jaxpr, consts, args, m):
    """Evaluate ``jaxpr`` on (kind, value) pairs; a separable sum's value is (vec, C)."""
    env: dict = {}

    def read(v):
        return (_CONST, v.val) if isinstance(v, jcore.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = (_CONST, c)
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for eqn in jaxpr.eqns:
        outs = _apply(eqn, [read(v) for v in eqn.invars], m)
        for v, o in zip(eqn.outvars, outs):
            env[v] = o
    return [read(v) for v in jaxpr.outvars]


def _interpret_closed(closed, args, m):
    if isinstance(closed, jcore.ClosedJaxpr):
        return _interpret(closed.jaxpr, closed.consts, args, m)
    return _interpret(closed, (), args, m)


def _size(shape) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


def _apply(eqn, ins, m):
    name = eqn.primitive.name
    kinds = [k for k, _ in ins]
    vals = [x for _, x in ins]
    inner = inner_jaxpr(eqn)
    if inner is not None:
        return _interpret_closed(inner, ins, m)
    if all(k == _CONST for k in kinds):
        return [(_CONST, o) for o in bind_eqn(eqn, vals)]
    if _SUM in kinds:
        return [(_SUM, _sum_rule(name, eqn, ins))]
    # From here on some operand is elementwise and none is a separable sum.
    if len(eqn.outvars) != 1:
        raise NotSeparable(name)
    if name == "dot_general" and len(ins) == 2:
        return [(_SUM, _inner_product(eqn, ins, m))]
    if name == "reduce_sum" and len(ins) == 1:
        axes = sorted(int(a) for a in eqn.params["axes"])
        if axes != list(range(len(eqn.invars[0].aval.shape))):
            raise NotSeparable("reduce_sum over part of the axes")
        x = vals[0]
        return [(_SUM, (x.reshape(-1), jnp.zeros((), x.dtype)))]
    out_shape = tuple(eqn.outvars[0].aval.shape)
    if _size(out_shape) != m:
        raise NotSeparable(f"{name}: output of size {_size(out_shape)} != {m}")
    if name in ELEMENTWISE:
        for v, k in zip(eqn.invars, kinds):
            if k == _ELEM and tuple(v.aval.shape) != out_shape:
                raise NotSeparable(f"{name}: operand shape {v.aval.shape} != {out_shape}")
        return [(_ELEM, bind_eqn(eqn, vals)[0])]
    if len(ins) != 1:
        raise NotSeparable(name)
    in_shape = tuple(eqn.invars[0].aval.shape)
    if name == "reshape" and eqn.params.get("dimensions") is None:
        ok = True  # row-major reshape keeps the element order
    elif name == "squeeze":
        ok = True
    elif name == "broadcast_in_dim":
        dims = tuple(eqn.params["broadcast_dimensions"])
        ok = all(a < b for a, b in zip(dims, dims[1:]))  # only unit axes added
    elif name == "transpose":
        perm = tuple(eqn.params["permutation"])
        ok = perm == tuple(range(len(perm)))
    else:
        ok = False
    if not ok:
        raise NotSeparable(name)
    return [(_ELEM, bind_eqn(eqn, vals)[0])]


def _inner_product(eqn, ins, m):
    """a . b of two flat vectors with m entries (elementwise or constant, at least one
    elementwise) is sum_i a_i b_i, a separable sum with terms a_i b_i."""
    (contract, batch) = eqn.params["dimension_numbers"]
    shapes = [tuple(v.aval.shape) for v in eqn.invars]
    if not (shapes[0] == shapes[1] == (m,) and tuple(map(tuple, contract)) == ((0,), (0,))
            and tuple(map(tuple, batch)) == ((), ())):
        raise NotSeparable("dot_general other than an inner product of two m-vectors")
    a, b = ins[0][1], ins[1][1]
    dtype = eqn.outvars[0].aval.dtype
    vec = (a.astype(dtype) * b.astype(dtype))
    return vec, jnp.zeros((), dtype)


def _scalar_const(k, v, x):
    return k == _CONST and tuple(v.aval.shape) == ()


def _sum_rule(name, eqn, ins):
    """Linear operations on separable sums (scalars); anything else is refused."""
    kinds = [k for k, _ in ins]
    if any(k == _ELEM for k in kinds) or len(eqn.outvars) != 1 or eqn.outvars[0].aval.shape:
        raise NotSeparable(f"{name} of a separable sum")
    consts_ok = all(_scalar_const(k, v, x) for (k, x), v in zip(ins, eqn.invars)
                    if k == _CONST)
    if not consts_ok:
        raise NotSeparable(f"{name}: non-scalar constant with a separable sum")

    def parts(i):
        k, x = ins[i]
        if k == _SUM:
            return x
        return None, x

    if name in ("add", "sub") and len(ins) == 2:
        (va, ca), (vb, cb) = parts(0), parts(1)
        sign = 1.0 if name == "add" else -1.0
        if va is None:
            vec = sign * vb
        elif vb is None:
            vec = va
        else:
            vec = va + sign * vb
        return vec, (ca + cb if name == "add" else ca - cb)
    if name == "neg":
        vec, c = parts(0)
        return -vec, -c
    if name == "mul" and len(ins) == 2 and kinds.count(_SUM) == 1:
        s, k = (0, 1) if kinds[0] == _SUM else (1, 0)
        (vec, c), scale = parts(s), ins[k][1]
        return vec * scale, c * scale
    if name == "div" and kinds == [_SUM, _CONST]:
        (vec, c), scale = parts(0), ins[1][1]
        return vec / scale, c / scale
    if name in ("convert_element_type", "copy", "copy_p") and len(ins) == 1:
        vec, c = parts(0)
        new = eqn.outvars[0].aval.dtype
        if not (jnp.issubdtype(new, jnp.floating) and jnp.issubdtype(vec.dtype, jnp.floating)):
            raise NotSeparable(f"{name} of a separable sum to {new}")
        return vec.astype(new), c.astype(new)
    raise NotSeparable(f"{name} of a separable sum")


def separable_part(fun: Callable, z) -> Optional[Callable]:
    """The per-coordinate terms v of a separable ``fun``, or None when not proven.

    ``z`` is an example point of shape (m,). When the jaxpr of ``fun`` at z is proven
    separable, returns v: R^m -> R^m with fun(z) = sum_j v_j(z) + C and v_j depending
    on z_j only, built from the same primitives as ``fun`` (jet-traceable wherever
    ``fun`` is); otherwise None.
    """
    part, _ = _prove(fun, z)
    return part


def why_not_separable(fun: Callable, z) -> Optional[str]:
    """None when ``fun`` is proven separable, else the first step the proof refused."""
    return _prove(fun, z)[1]


def _prove(fun: Callable, z):
    """(v or None, reason refused or None)."""
    z = jnp.asarray(z)
    if z.ndim != 1:
        return None, "z is not a flat vector"
    m = z.shape[0]
    closed = jax.make_jaxpr(fun)(z)
    if len(closed.jaxpr.outvars) != 1 or closed.jaxpr.outvars[0].aval.shape != ():
        return None, "output is not one scalar"

    def part(x):
        (kind, val), = _interpret(closed.jaxpr, closed.consts, [(_ELEM, x)], m)
        if kind == _SUM:
            return val[0]
        if kind == _CONST:
            return jnp.zeros_like(x)
        if m == 1:  # elementwise scalar of a single coordinate
            return jnp.reshape(val, (1,))
        raise NotSeparable("output")

    try:
        jax.eval_shape(part, z)
    except NotSeparable as err:
        return None, str(err)
    return part, None


def is_separable(fun: Callable, z) -> bool:
    """Whether :func:`separable_part` proves ``fun`` separable at points shaped like z."""
    return separable_part(fun, z) is not None
