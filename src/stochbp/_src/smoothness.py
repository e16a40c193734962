"""A static check that f is smooth enough for a Fourier rule of order N.

It accepts f only when it can prove, from f's jaxpr, that no derivative of order below
N jumps; whatever it cannot prove is refused (false positives are possible and listed
at the end; ``smooth="assume"`` skips the check).

Theorem 1 reads grad E[f(z)] = sum_n grad c_n E[d^n f / dz^n] with *distributional*
derivatives. If some derivative f^(k) of f jumps (k = 0: f itself jumps, e.g. floor,
sign, where(x > 0, 1, 0); k = 1: a kink, e.g. relu, abs, clip, max(x, c)), then f^(k+1)
holds a Dirac delta at the jump. Taylor mode (``taylor.py``) and Hessian-vector products
return the classical derivative, which exists almost everywhere and misses the delta.
A rule that uses derivatives of order n > k is then biased, silently: for
E[relu(z)], z ~ N(mu, sigma^2), the order-2 term sigma E[relu''] is 0 instead of
sigma phi(mu / sigma) / sigma. A rule of order N is therefore exact only when the jump
order J(f) (the lowest k with a jump in f^(k); infinity for a smooth f) is at least N.

:func:`jump_order` bounds J(f) from below by reading f's jaxpr once (no numerics on z).
Every variable gets an abstract value:

* constant: not a function of z (constants, anything computed from them alone, and
  ``stop_gradient`` of anything: its derivative is zero by definition);
* dependent, with a jump order J: z itself and analytic primitives (arithmetic, exp,
  log, tanh, logistic, lgamma, dot products, reshapes, sums, ...) give the minimum J of
  their operands; ``max``, ``min``, ``abs``, ``clamp``, ``reduce_max``, ``sort``, ...
  give at most 1; ``sign``, ``floor``, ``round``, ``rem``, conversions to integers,
  comparisons, and gathers or slices at z-dependent indices give 0. A primitive with no
  rule here gives 0 (conservative: the check refuses what it cannot prove).

The common smooth functions are proved, not trusted by name:

* predicates that hold almost surely: ``is_finite(v)`` and the NaN test ``v != v`` for a
  v built from z by operations that are finite on finite operands (arithmetic, exp,
  tanh, sums, max, ...; log and sqrt of values >= 0), and ``v == c`` / ``v != c`` for a
  constant c and an analytic v (J = infinity; level sets of a non-constant analytic
  function have measure zero). A guard against a NaN that f can produce
  (where(isnan(log(z)), 0, log(z))) is a jump. A ``select_n`` (``jnp.where``)
  on such a predicate is its a.s. branch. This covers the guards in ``logaddexp``,
  ``xlogy`` and numpyro's log-densities.
* the stable softplus idiom ``max(a, b) + log1p(exp(-|a - b|))`` (also with b = 0 and
  ``clip(a, 0)``) equals log(e^a + e^b), analytic in (a, b): its J is that of a and b.
  This covers ``jax.nn.softplus``, ``log_sigmoid``, ``logaddexp`` and numpyro's
  Bernoulli(logits) log-density (``binary_cross_entropy_with_logits``).
* ``abs(v)`` of a value known to be >= 0 (exp, squares, sums and products of such, ...)
  is v, and so is ``max(v, c)`` for a constant c <= 0 (``logsumexp`` takes the log of |sum exp|); ``max(v, -inf)`` is v; for such an
  analytic v, ``v > c`` with c <= 0 holds a.s. (numpyro's support checks).
* a support guard ``where(inside, log_p, -inf)`` (a case that is a non-finite constant)
  is its finite case, marked as carrying a non-finite value: where the guard flips,
  f and the estimate are not finite, which is visible, not silent -- but only while
  that value reaches f's output through operations that keep it non-finite (add, sub,
  neg, mul, sums, dot products, reshapes and slices, log, sqrt, division of it).
  Any other use (exp, tanh, logistic, max / logsumexp / logaddexp, comparisons,
  is_finite / isnan guards as in nansum and nan_to_num, a where on z) may turn it
  finite and hide the jump (expon.pdf = exp(guarded log-density) jumps at 0): J = 0.
  Such a value is never "total", so NaN / is_finite tests on it are not decided.
* ``select_n(s > c, b, a)`` (``jnp.where(s > c, a, b)``, any comparison) with s a
  z-dependent value, c a concrete constant, and a, b elementwise functions of s alone
  (analytic, or themselves such wheres of s): the jump order is the order of the first
  Taylor coefficient at s = c where a and b differ, each case expanded from its own
  side (found by Taylor mode; a non-finite coefficient counts as a jump there). Each
  order is compared on its own, relative to its own size: coefficients that differ by
  more than 64 ulps of the larger one differ (so 1e12 * where(x > 0, 1e-12, 0) is a
  jump; no absolute tolerance). E.g.
  where(x > 0, x**2, 0) has J = 2: fine for the order-2 rules, refused at order 3 and
  above; ``jax.nn.elu`` (whose inner where keeps expm1 finite) and ``sparse_plus`` have
  J = 2, ``hard_tanh``, ``leaky_relu`` and ``selu`` J = 1. Any other z-dependent
  predicate gives J = 0.

* roots and negative powers: ``sqrt``, ``rsqrt``, ``pow(v, y)`` (y not a non-negative
  integer) and ``c / v`` of a value v >= 0 that can reach 0 are singular there. v is
  tracked as > 0 (exp, logistic, 1 + z**2, ...: analytic, no change), or as reaching
  0 like a sum of k squares of distinct coordinates of z (z**2, |z|, affine images and
  slices of z; summing k of them gives k), or neither (k = 1). Near its zero set
  v^y ~ |u|^(2y) for u in R^k, whose derivatives of order m are O(|u|^(2y - m)):
  locally integrable with no Dirac part at 0 (the flux through a small sphere,
  O(eps^(2y - m + k)), vanishes) iff m < 2y + k, so J = ceil(2y + k) - 1: sqrt(z**2) =
  |z| and ``jnp.linalg.norm(z[:1])`` have J = 1, the norm of k >= 2 distinct
  coordinates J = k (fine for the order-2 rules), (z**2)**1.5 = |z|^3 J = 3. The
  centred sum sum_i (z_i - mean z)^2 of n coordinates (``jnp.var``) is a sum of n - 1
  squares (|P z|^2, P the projection off the constant vector): ``jnp.std`` has
  J = n - 1 (refused for n = 2, where it is the kink |z0 - z1| / 2). Sums of squares
  of anything else (z[0]**2 + z[0]**2, z[0]**2 + z[1]**2) count as k = 1: refused.
  A root of a value not proved > 0 (sqrt(z), sqrt(1 + z), or a value >= 0 whose sign
  the rules lost: sqrt(jnp.pad(z**2, 1))) counts as k = 1 too: refused. Such roots
  are not known to be >= 0 either (so where(sqrt(z) > 0, ...) is a jump) nor "total".

No custom_jvp function is trusted by name: ``relu`` is a ``custom_jvp`` whose primal is
``max(x, 0)``, refused; ``logaddexp`` / ``softplus``, ``xlogy`` and ``xlog1py`` are proved
through their primal by the rules above.

Nested ``jit`` calls, ``custom_jvp`` / ``custom_vjp`` functions (through the primal
computation, which is what Taylor mode differentiates; ``jax.checkpoint``'s
``remat2`` too), ``scan`` (a fixed point over
the carry), ``while_loop`` and ``cond`` are entered (a z-dependent trip count or branch
index gives J = 0). Not detected (known limits): singular points of analytic
primitives other than the roots above (1 / v and log v at a v of unknown sign,
log(z**2) at 0, tan at its poles), analytic values that are constant (x - x == 0 is
taken as a.s. False), and custom_jvp rules: the check reads the primal, while the
Hessians of the full-covariance rules (MVN fourier, full-covariance mixtures) come
from jax.linearize(jax.grad(f)), which uses the custom_jvp rule -- a custom_jvp whose
rule is not the derivative of its primal (a kinked rule for a smooth primal) is not
seen. Known false positives (refused although smooth enough): a kink squared
(max(x, 0)**2 is C1; ``celu``), ``abs`` in a C1 form (``soft_sign``), a where on a
transformed value (Huber's where(|x| < 1, ...); ``jax.scipy.special.ndtr``,
``norm.cdf`` and ``norm.logcdf`` switch branches on |x / sqrt 2|),
``jax.nn.standardize`` (it clips E[x^2] - E[x]^2 at 0),
linear-algebra primitives without a rule (``lu``: solve, inv, slogdet; expm), a
``lax.cond`` on z, and thresholds that are not concrete (a traced constant under jit).
A primitive with no rule is reported as "could not prove f smooth" (not as a jump).
Genuine kinks that are practically never reached are refused too: numpyro's
Bernoulli(probs=...) clamps the probabilities to [tiny, 1 - eps] (use logits=).
``smooth="assume"`` on the estimator skips the check.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from stochbp._src import checks
from stochbp._src.taylor import bind_eqn, inner_jaxpr

__all__ = ["jump_order", "require_smooth"]

INF = math.inf

# Analytic wherever defined: J(out) = min J(operands).
_ANALYTIC_ELEMENTWISE = frozenset({
    "add", "sub", "mul", "div", "neg", "pow", "integer_pow", "square", "sqrt", "rsqrt",
    "cbrt", "exp", "exp2", "log", "log1p", "expm1", "sin", "cos", "tan", "asin", "acos",
    "atan", "atan2", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "logistic",
    "lgamma", "digamma", "polygamma", "igamma", "igammac", "igamma_grad_a",
    "random_gamma_grad", "erf", "erfc", "erf_inv", "bessel_i0e", "bessel_i1e", "copy",
    "copy_p", "reduce_precision", "real", "imag", "conj", "add_any", "zeta",
})
_ANALYTIC_OTHER = frozenset({
    "reduce_sum", "reduce_prod", "dot_general", "broadcast_in_dim", "reshape", "squeeze",
    "expand_dims", "transpose", "rev", "slice", "concatenate", "pad", "cumsum", "cumprod",
    "cumlogsumexp", "triangular_solve", "cholesky", "split", "optimization_barrier",
    "sharding_constraint", "mesh_cast", "reshard", "pvary", "device_put",
    "reduce_and", "reduce_or", "iota", "full_like", "tie_in", "conv_general_dilated",
    "reduce_window_sum", "select_and_scatter_add", "stack",
})
# A kink (jump in the first derivative) where the operands cross.
# Finite (a.s.) on finite operands; log, sqrt, log1p and pow are too on values >= 0.
_TOTAL = frozenset({
    "add", "sub", "mul", "div", "neg", "exp", "exp2", "expm1", "tanh", "logistic", "sin",
    "cos", "atan", "atan2", "sinh", "cosh", "asinh", "square", "integer_pow", "erf", "erfc",
    "copy", "copy_p", "convert_element_type", "reduce_sum", "reduce_prod", "dot_general",
    "broadcast_in_dim", "reshape", "squeeze", "expand_dims", "transpose", "rev", "slice",
    "concatenate", "pad", "cumsum", "cumprod", "cumlogsumexp", "stack", "reduce_precision",
    "add_any",
})
_TOTAL_ON_NONNEG = frozenset({"log", "sqrt", "log1p", "pow"})
# A support guard's non-finite case stays non-finite through these (-inf + c, 0 * inf,
# log(-inf) = nan, ...); any other operation (exp, tanh, max, comparisons, is_finite /
# isnan tests, where) may turn it into a finite value, which hides the jump.
_NONFINITE_KEPT = frozenset({
    "add", "sub", "neg", "mul", "add_any", "reduce_sum", "dot_general", "broadcast_in_dim",
    "reshape", "squeeze", "expand_dims", "transpose", "rev", "slice", "concatenate", "pad",
    "cumsum", "copy", "copy_p", "reduce_precision", "square", "log", "log1p", "sqrt",
    "stack",
})
_NO_RULE = "no smoothness rule for this primitive"
# Elementwise relabelling of the coordinates (affine images of distinct coordinates stay so).
_COORD_KEEP = frozenset({"reshape", "squeeze", "expand_dims", "transpose", "rev", "slice",
                         "copy", "copy_p", "reduce_precision", "convert_element_type"})
_KINK = frozenset({"max", "min", "abs", "clamp", "reduce_max", "reduce_min", "cummax",
                   "cummin", "reduce_window_max", "reduce_window_min"})
# Piecewise constant in z (or integer / boolean valued): the value jumps.
_JUMP = frozenset({"sign", "floor", "ceil", "round", "rem", "nextafter", "argmax",
                   "argmin", "lt", "le", "gt", "ge", "eq", "ne", "and", "or", "not",
                   "xor", "population_count", "clz", "shift_left",
                   "shift_right_logical", "shift_right_arithmetic", "is_finite"})
# Operand positions that are indices: z-dependent indices make the result jump.
_INDEX_OPERANDS = {"gather": (1,), "dynamic_slice": None, "dynamic_update_slice": None,
                   "scatter": (1,), "scatter-add": (1,), "scatter_add": (1,),
                   "scatter-mul": (1,), "scatter_mul": (1,)}
_INDEX_FIRST_DATA = {"dynamic_slice": 1, "dynamic_update_slice": 2}


class Val:
    """Abstract value of one jaxpr variable (see the module docstring)."""

    __slots__ = ("dep", "jump", "why", "nonneg", "known", "expr", "root", "fn", "_thunk",
                 "_value", "aval", "away", "total", "nf", "pos", "zero", "sqc", "coord", "cen")

    def __init__(self, aval, *, dep=False, jump=INF, why=None, nonneg=False, known=None,
                 expr=None, root=None, fn=None, thunk=None):
        self.aval, self.dep, self.jump, self.why = aval, dep, jump, why
        self.nonneg, self.known, self.expr = nonneg, known, expr
        self.root, self.fn, self._thunk, self._value = root, fn, thunk, None
        # {boundary key: (jump, why)}: the jump order away from a where's boundary
        # (a case of a where is used on one side only; see _select_n)
        self.away = None
        # never NaN or infinite (a.s.) for a finite z: z and total operations of such
        # values (the NaN / is_finite guards on them are decided, see _compare)
        self.total = False
        # the why of a support guard where(inside, v, +-inf / nan) that this value
        # carries: it is non-finite where the guard flips (see _NONFINITE_KEPT)
        self.nf = None
        # > 0 everywhere (exp, logistic, 1 + z**2, ...): sqrt, pow and 1 / v analytic
        self.pos = False
        # >= 0 and reaches 0 like a sum of `zero` squares (z**2, |z|, ...); sqc: a sum
        # of squares of distinct coordinates of z (affine images of them), so that
        # summing k of them gives zero = k (jnp.linalg.norm); coord: such an affine
        # image of distinct coordinates of z (z, slices of z, 2 * z + 1, ...)
        self.zero, self.sqc, self.coord = None, False, False
        # provenance of centred sums of squares (jnp.var / jnp.std): ("sum" | "mean",
        # x, n) for the sum / mean of the n coordinates x, ("centred", x, n) for x -
        # mean(x), ("sq", n) for its square (see _centred)
        self.cen = None

    def value(self):
        """The concrete value of a constant (NumPy), or None when it is not known now."""
        if self.dep or self._thunk is None:
            return None
        if self._value is None:
            try:
                with jax.ensure_compile_time_eval():
                    out = self._thunk()
            except Exception:  # noqa: BLE001 - anything unexpected: "not known"
                out = None
            self._value = (False, None) if out is None else (True, checks.concrete(out))
        return self._value[1]


def _keeps_nonfinite(eqn, ins) -> bool:
    """True when a non-finite operand makes the output non-finite (see _NONFINITE_KEPT)."""
    name = eqn.primitive.name
    if name == "convert_element_type":
        return _is_float(eqn.outvars[0].aval)
    if name in _NONFINITE_KEPT:
        return True
    if name == "integer_pow":
        return eqn.params.get("y", 0) > 0
    if name == "div":  # c / inf = 0
        return not (ins[1].dep and ins[1].nf)
    if name in ("gather", "dynamic_slice"):  # data moved, indices constant
        return not any(x.dep and x.nf for x in ins[1:])
    return False


def _pos(v) -> bool:
    if v.dep:
        return v.pos
    x = v.value()
    return x is not None and x.dtype.kind in "fiu" and x.size > 0 and bool(np.all(x > 0))


def _nonzero_const(v) -> bool:
    if v.dep:
        return False
    x = v.value()
    return x is not None and x.dtype.kind in "fiu" and x.size > 0 and bool(np.all(x != 0))


def _scalar_const(v):
    if v.dep:
        return None
    x = v.value()
    if x is None or x.size == 0 or x.dtype.kind not in "fiu" or not (x == x.flat[0]).all():
        return None
    return float(x.flat[0])


def _const(aval, thunk=None, known=None):
    return Val(aval, thunk=thunk, known=known)


def _place(eqn) -> str:
    try:
        from jax._src import source_info_util
        return source_info_util.summarize(eqn.source_info) or ""
    except Exception:  # noqa: BLE001 - private API: the message just loses the place
        return ""


def _source(eqn, context) -> str:
    """`prim` inside <function> at <file:line (user function)>: the place is that of
    the equation or, for one inside a library function, of the innermost call to it
    that has a place in user code."""
    where = _place(eqn)
    for _, call_place in reversed(context):
        if where:
            break
        where = call_place
    names = [label for label, _ in context if label]
    inside = f" inside {names[-1]}" if names else ""
    where = where or "(no line of user code: f is a library function)"
    return f"`{eqn.primitive.name}`{inside} at {where}"


def _dep(aval, jump, why, **kw):
    return Val(aval, dep=True, jump=jump, why=why if jump < INF else None, **kw)


def _weakest(vals):
    """(jump, why) of the least smooth of ``vals`` (constants count as smooth)."""
    best, why = INF, None
    for v in vals:
        if v.dep and v.jump < best:
            best, why = v.jump, v.why
    return best, why


def _is_float(aval) -> bool:
    return jnp.issubdtype(aval.dtype, jnp.inexact)


def _nonneg(v) -> bool:
    if v.dep:
        return v.nonneg
    x = v.value()
    return x is not None and x.dtype.kind in "fiu" and bool(np.all(x >= 0))


def _const_equals(v, target) -> bool:
    if v.dep:
        return False
    x = v.value()
    return x is not None and x.size > 0 and bool(np.all(x == target))


def _const_thunk(eqn, ins, i):
    def thunk():
        vals = [v.value() for v in ins]
        if any(x is None for x in vals):
            return None
        return bind_eqn(eqn, [jnp.asarray(x) for x in vals])[i]
    return thunk


def _call_name(eqn, inner) -> Optional[str]:
    name = eqn.params.get("name")
    if name is None:
        info = getattr(getattr(inner, "jaxpr", inner), "debug_info", None)
        src = getattr(info, "func_src_info", None) or ""
        name = src.split(" at ")[0] or None
    return name


class _Interpreter:
    def __init__(self, need: int):
        self.need = need  # derivatives up to this order are used: jumps below matter
        self.context: list = []

    # ------------------------------------------------------------------ jaxprs
    def run(self, jaxpr, consts, args):
        env: dict = {}

        def read(v):
            if isinstance(v, jcore.Literal):
                val = v.val
                return _const(v.aval, thunk=lambda: val)
            return env[v]

        for v, c in zip(jaxpr.constvars, consts):
            env[v] = c if isinstance(c, Val) else _const(v.aval, thunk=lambda c=c: c)
        for v, a in zip(jaxpr.invars, args):
            env[v] = a
        for eqn in jaxpr.eqns:
            outs = self.apply(eqn, [read(v) for v in eqn.invars])
            for v, o in zip(eqn.outvars, outs):
                env[v] = o
        return [read(v) for v in jaxpr.outvars]

    def run_closed(self, closed, args):
        if isinstance(closed, jcore.ClosedJaxpr):
            return self.run(closed.jaxpr, closed.consts, args)
        return self.run(closed, (), args)

    # ------------------------------------------------------------------ one equation
    def apply(self, eqn, ins):
        name = eqn.primitive.name
        inner = inner_jaxpr(eqn)
        if inner is not None:
            self.context.append((_call_name(eqn, inner), _place(eqn)))
            try:
                return self.run_closed(inner, ins)
            finally:
                self.context.pop()
        outs = eqn.outvars
        if not any(v.dep for v in ins) and name not in ("stop_gradient",):
            return [self._const_or_known(eqn, ins, i) for i in range(len(outs))]
        if name == "stop_gradient":
            return [_const(o.aval) for o in outs]
        carriers = [x for x in ins if x.dep and x.nf]
        if carriers and name != "select_n":
            if not _keeps_nonfinite(eqn, ins):
                why = (f"{_source(eqn, self.context)} (turns the non-finite case of "
                       f"{carriers[0].nf} into a finite value, or tests it: f jumps where "
                       "the guard flips)")
                return [_dep(o.aval, 0, why) for o in outs]
            results = self._dispatch(eqn, ins)
            for r in results:
                if r.dep and r.nf is None and all(r is not x for x in ins):
                    r.nf, r.total = carriers[0].nf, False
            return results
        return self._dispatch(eqn, ins)

    def _dispatch(self, eqn, ins):
        name = eqn.primitive.name
        outs = eqn.outvars
        handler = getattr(self, "_" + name.replace("-", "_"), None)
        if handler is not None:
            return handler(eqn, ins)
        if name in _INDEX_OPERANDS:
            return self._indexed(eqn, ins)
        if name in _ANALYTIC_ELEMENTWISE or name in _ANALYTIC_OTHER:
            return [self._analytic(eqn, ins, o) for o in outs]
        if name in _KINK:
            jump, why = _weakest(ins)
            if min(jump, 1) < jump:
                why = _source(eqn, self.context)
            return [_dep(o.aval, min(jump, 1), why) for o in outs]
        if name in _JUMP:
            why = f"{_source(eqn, self.context)} (piecewise constant: its value jumps)"
            return [_dep(o.aval, 0, why) for o in outs]
        why = f"{_source(eqn, self.context)} ({_NO_RULE})"
        return [_dep(o.aval, 0, why) for o in outs]

    def _const_or_known(self, eqn, ins, i):
        """A constant output, its value computed only if a rule asks for it."""
        return _const(eqn.outvars[i].aval, thunk=_const_thunk(eqn, ins, i))

    # ------------------------------------------------------------------ rules
    def _analytic(self, eqn, ins, out):
        jump, why = _weakest(ins)
        name = eqn.primitive.name
        v = _dep(out.aval, jump, why)
        deps = [x for x in ins if x.dep]
        if (name in _ANALYTIC_ELEMENTWISE or name == "convert_element_type") and \
                _is_float(out.aval):
            roots = {id(x.root) for x in deps}
            shape = tuple(out.aval.shape)
            if len(roots) == 1 and all(x.fn is not None for x in deps) and \
                    tuple(deps[0].root.aval.shape) == shape and \
                    all(tuple(x.aval.shape) == shape for x in deps):
                v.root = deps[0].root
                v.fn = _compose(eqn, ins)
                keys = {k for x in deps if x.away for k in x.away}
                v.away = {k: _weakest_away(deps, k) for k in keys} or None
        if v.fn is None:
            v.root, v.fn = v, _identity
        v.total = all(x.total for x in deps) and (name in _TOTAL or (
            name in _TOTAL_ON_NONNEG and _nonneg(ins[0])))
        # values known to be >= 0 (for abs); sqrt and pow of a negative value are NaN
        if name in ("exp", "exp2", "logistic", "square") or (
                name == "integer_pow" and eqn.params.get("y", 1) % 2 == 0) or (
                name == "mul" and ins[0] is ins[1]):
            v.nonneg = True
        elif name in ("sqrt", "pow"):
            v.nonneg = _nonneg(ins[0])
        elif name in ("add", "mul", "div", "reduce_sum", "reduce_prod", "dot_general",
                      "broadcast_in_dim", "reshape", "squeeze", "expand_dims",
                      "transpose", "slice", "concatenate", "copy", "copy_p", "rev",
                      "cumsum", "cumprod"):
            v.nonneg = all(_nonneg(x) for x in ins)
        _positivity(eqn, ins, v)
        _centred(eqn, ins, v)
        singular = _singular_power(eqn, ins)
        if singular is not None and singular[0] < v.jump:
            k = singular[1]
            v.jump, v.why = singular[0], (
                f"{_source(eqn, self.context)} (a root or negative power of a value >= 0 "
                f"that reaches 0 (like a sum of {k} square{'s' if k > 1 else ''}: "
                f"z**2, |z|, ...): singular there, like sqrt(z**2) = |z|)")
        # provenance for the softplus idiom max(a, b) + log1p(exp(-|a - b|))
        if name == "sub":
            v.expr = ("sub", ins[0], ins[1])
        elif name == "neg" and ins[0].expr and ins[0].expr[0] == "abs":
            v.expr = ("negabs", ins[0].expr[1])
        elif name == "exp" and ins[0].expr and ins[0].expr[0] == "negabs":
            v.expr = ("expnegabs", ins[0].expr[1])
        elif name == "log1p" and ins[0].expr and ins[0].expr[0] == "expnegabs":
            v.expr = ("tail", ins[0].expr[1])
        elif name in ("copy", "copy_p", "reduce_precision"):
            v.expr = ins[0].expr
        elif name == "add":
            smooth = _softplus_idiom(ins[0], ins[1]) or _softplus_idiom(ins[1], ins[0])
            if smooth is not None:
                v.jump, v.why = _weakest(smooth)
                v.root, v.fn = v, _identity
            for x, y in ((ins[0], ins[1]), (ins[1], ins[0])):
                if y.expr and y.expr[0] == "abs" and y.expr[1] is x:
                    v.expr = ("x+|x|", x)  # 2 max(x, 0)
        elif name in ("mul", "div") and len(ins) == 2:
            for x, y in ((ins[0], ins[1]), (ins[1], ins[0])) if name == "mul" else \
                    ((ins[0], ins[1]),):
                half = 0.5 if name == "mul" else 2.0
                if x.expr and x.expr[0] == "x+|x|" and _const_equals(y, half):
                    zero = _const(y.aval, thunk=lambda: np.zeros((), y.aval.dtype))
                    v.expr = ("max", x.expr[1], zero)  # (x + |x|) / 2 = max(x, 0)
        return v

    def _convert_element_type(self, eqn, ins):
        (x,), out = ins, eqn.outvars[0]
        if _is_float(out.aval) and _is_float(x.aval):
            v = self._analytic(eqn, ins, out)
            v.expr, v.nonneg = x.expr, x.nonneg
            return [v]
        if x.known is not None:
            return [_const(out.aval, thunk=lambda: jnp.full(out.aval.shape, x.known,
                                                             out.aval.dtype))]
        why = x.why if x.jump == 0 else (
            f"{_source(eqn, self.context)} (a conversion of z-dependent values to "
            f"{out.aval.dtype}: piecewise constant)")
        return [_dep(out.aval, 0, why)]

    def _abs(self, eqn, ins):
        (x,), out = ins, eqn.outvars[0]
        if _nonneg(x):  # |v| = v for v >= 0
            v = _dep(out.aval, x.jump, x.why, nonneg=True)
            v.root, v.fn, v.total = v, _identity, x.total
            v.pos, v.zero, v.sqc = x.pos, x.zero, x.sqc
            return [v]
        why = _source(eqn, self.context)
        jump = min(x.jump, 1)
        v = _dep(out.aval, jump, x.why if jump == x.jump else why, nonneg=True,
                 expr=("abs", x))
        v.total, v.zero, v.sqc = x.total, 1, x.coord
        return [v]

    def _max(self, eqn, ins):
        return self._max_min(eqn, ins, -np.inf)

    def _min(self, eqn, ins):
        return self._max_min(eqn, ins, np.inf)

    def _max_min(self, eqn, ins, neutral):
        a, b = ins
        out = eqn.outvars[0]
        for x, y in ((a, b), (b, a)):
            if _const_equals(y, neutral):  # max(v, -inf) = v
                return [x]
            if eqn.primitive.name == "max" and _nonneg(x) and not y.dep:
                c = y.value()  # max(v, c) = v for v >= 0 >= c (jnp.var's clip at 0)
                if c is not None and c.size and c.dtype.kind in "fiu" and \
                        bool(np.all(c <= 0)) and tuple(x.aval.shape) == tuple(
                        eqn.outvars[0].aval.shape):
                    return [x]
        jump, why = _weakest(ins)
        if jump > 1:
            why = _source(eqn, self.context)
        v = _dep(out.aval, min(jump, 1), why, expr=(eqn.primitive.name, a, b),
                 nonneg=any(_nonneg(x) for x in ins) and eqn.primitive.name == "max")
        v.total = all(x.total for x in ins if x.dep)
        return [v]

    def _indexed(self, eqn, ins):
        name = eqn.primitive.name
        positions = _INDEX_OPERANDS[name]
        if positions is None:
            positions = tuple(range(_INDEX_FIRST_DATA[name], len(ins)))
        out = eqn.outvars[0]
        if any(ins[i].dep for i in positions):
            return [_dep(out.aval, 0, f"{_source(eqn, self.context)} (an index that "
                         "depends on z: piecewise constant)")]
        data = [x for i, x in enumerate(ins) if i not in positions]
        jump, why = _weakest(data)
        return [_dep(out.aval, jump, why)]

    def _sort(self, eqn, ins):
        num_keys = int(eqn.params.get("num_keys", 1))
        keys_dep = any(x.dep for x in ins[:num_keys])
        outs = []
        for i, (x, o) in enumerate(zip(ins, eqn.outvars)):
            if not keys_dep:
                outs.append(_dep(o.aval, x.jump, x.why) if x.dep else _const(o.aval))
            elif i < num_keys and _is_float(o.aval):
                jump = min(x.jump, 1) if x.dep else 0
                outs.append(_dep(o.aval, jump, f"{_source(eqn, self.context)} (sorted "
                                 "values: a kink where two of them cross)"))
            else:
                outs.append(_dep(o.aval, 0, f"{_source(eqn, self.context)} (values "
                                 "permuted in a z-dependent order: they jump)"))
        return outs

    def _top_k(self, eqn, ins):
        (x,) = ins
        vals, idx = eqn.outvars
        why = f"{_source(eqn, self.context)} (top_k: a kink where two values cross)"
        return [_dep(vals.aval, min(x.jump, 1), why if x.jump > 1 else x.why),
                _dep(idx.aval, 0, why)]

    # ---- predicates
    def _compare(self, eqn, ins):
        name = eqn.primitive.name
        a, b = ins
        out = eqn.outvars[0]
        why = f"{_source(eqn, self.context)} (a comparison of z-dependent values)"
        if name in ("eq", "ne"):
            if a is b and a.total:  # v == v / v != v: the NaN test of a total value
                return [_dep(out.aval, 0, why, known=(name == "eq"))]
            for x, y in ((a, b), (b, a)):
                if x.dep and not y.dep and x.jump == INF and _is_float(x.aval):
                    return [_dep(out.aval, 0, why, known=(name == "ne"))]
            return [_dep(out.aval, 0, why)]
        expr = None  # ("cmp", s, c, the predicate's value where s > c)
        if a.dep and not b.dep:
            expr = ("cmp", a, b, name in ("gt", "ge"))
        elif b.dep and not a.dep:
            expr = ("cmp", b, a, name in ("lt", "le"))
        if expr is not None:
            v, c = expr[1], expr[2].value()
            if v.nonneg and v.jump == INF and c is not None and c.size and \
                    bool(np.all(c <= 0)):
                # an analytic v >= 0 is > 0 a.s.: "v > c" holds a.s. for c <= 0
                return [_dep(out.aval, 0, why, known=expr[3])]
        return [_dep(out.aval, 0, why, expr=expr)]

    _lt = _le = _gt = _ge = _eq = _ne = _compare

    def _is_finite(self, eqn, ins):
        why = (f"{_source(eqn, self.context)} (is_finite of a z-dependent value that may "
               "be NaN or infinite)")
        return [_dep(eqn.outvars[0].aval, 0, why, known=True if ins[0].total else None)]

    def _logic(self, eqn, ins):
        name = eqn.primitive.name
        out = eqn.outvars[0]
        vals = []
        for x in ins:
            if x.known is not None:
                vals.append(bool(x.known))
            elif not x.dep:
                c = x.value()
                vals.append(None if c is None or c.dtype != bool or c.size == 0
                            or not (c.all() or not c.any()) else bool(c.all()))
            else:
                vals.append(None)
        known = None
        if name == "not" and vals[0] is not None:
            known = not vals[0]
        elif name == "and":
            known = False if False in vals else (True if None not in vals else None)
        elif name == "or":
            known = True if True in vals else (False if None not in vals else None)
        elif name == "xor" and None not in vals:
            known = vals[0] != vals[1]
        if known is None and name in ("and", "or") and len(ins) == 2:
            # c and True = c, c or False = c for a constant c of mixed value
            neutral = name == "and"
            for x, y in ((ins[0], ins[1]), (ins[1], ins[0])):
                if not x.dep and y.known is not None and bool(y.known) == neutral:
                    return [x]
        why = f"{_source(eqn, self.context)} (a boolean of z-dependent comparisons)"
        return [_dep(out.aval, 0, why, known=known)]

    _and = _or = _not = _xor = _logic

    def _reduce_and(self, eqn, ins):
        (x,) = ins
        return [_dep(eqn.outvars[0].aval, 0, x.why, known=x.known)]

    _reduce_or = _reduce_and

    def _broadcast_in_dim(self, eqn, ins):
        return self._shape_op(eqn, ins)

    def _shape_op(self, eqn, ins):
        x = ins[0]
        out = eqn.outvars[0]
        if x.known is not None:
            return [_dep(out.aval, 0, x.why, known=x.known)]
        return [self._analytic(eqn, ins, out)]

    _reshape = _squeeze = _expand_dims = _transpose = _shape_op

    # ---- select
    def _select_n(self, eqn, ins):
        pred, *cases = ins
        out = eqn.outvars[0]
        if all(c is cases[0] for c in cases):
            return [cases[0]]
        known = pred.known
        if known is None and not pred.dep:
            c = pred.value()
            if c is not None and c.size and (c == c.flat[0]).all():
                known = c.flat[0]
            else:  # a constant predicate of unknown or mixed value: any case may run
                jump, why = _weakest(cases)
                v = _dep(out.aval, jump, why, nonneg=all(_nonneg(x) for x in cases))
                v.pos = all(_pos(x) for x in cases)
                v.total = all(x.total for x in cases if x.dep)
                v.nf = next((x.nf for x in cases if x.dep and x.nf), None)
                return [v]
        if known is not None:
            return [cases[int(known)]]
        finite = [x for x in cases if not _nonfinite_constant(x)]
        if finite and len(finite) < len(cases) and all(x is finite[0] for x in finite):
            # a support guard, where(inside, log_p, -inf): where the guard flips
            # with positive probability, f is not finite and neither is the estimate,
            # which is visible; elsewhere f is the finite case. Visible only while
            # the non-finite value reaches f's output: the result carries nf, and an
            # operation that may make it finite (exp, tanh, isnan, ...) is a jump.
            g = finite[0]
            v = _dep(out.aval, g.jump, g.why)
            v.root, v.fn, v.away = g.root, g.fn, g.away
            v.nf = g.nf or (f"the support guard {_source(eqn, self.context)} "
                            "(jnp.where(..., +-inf / nan))")
            return [v]
        carriers = [x for x in cases if x.dep and x.nf]
        if carriers:
            why = (f"{_source(eqn, self.context)} (a jnp.where / select on a z-dependent "
                   f"predicate that may hide the non-finite case of {carriers[0].nf}: f "
                   "jumps where the guard flips)")
            return [_dep(out.aval, 0, why)]
        key = _boundary_key(pred)
        jump, why = _weakest(cases) if key is None else _weakest_away(cases, key)
        order = self._boundary_order(pred, cases)
        away = (jump, why)
        if order < jump:
            jump = order
            which = ("the value jumps" if order == 0 else
                     f"the derivative of order {order} jumps")
            why = (f"{_source(eqn, self.context)} (jnp.where / select on a z-dependent "
                   f"predicate: {which} where the predicate flips)")
        v = _dep(out.aval, jump, why)
        v.total = all(x.total for x in cases if x.dep)
        s = pred.expr[1] if key is not None else None
        if s is not None and s.root is s and \
                tuple(out.aval.shape) == tuple(s.aval.shape) and all(
                not x.dep or (x.root is s and x.fn is not None) for x in cases):
            # piecewise in s: evaluable once the side of this boundary is fixed
            above, fns = pred.expr[3], [_case_fn(x, tuple(s.aval.shape)) for x in cases]
            c_val = pred.expr[2].value()
            if all(f is not None for f in fns):
                def fn(p, sides, key=key, above=above, fns=fns, c_val=c_val):
                    if key in sides:  # evaluated on one side of this very boundary
                        return fns[int(sides[key] == above)](p, sides)
                    # elsewhere: the side of this boundary is that of the expansion
                    # point p0 (an open condition; exactly on it: not provable here)
                    p0 = sides["p0"]
                    if np.any(p0 == c_val):
                        raise ValueError("two boundaries meet")
                    truth = np.broadcast_to((p0 > c_val) == above, p0.shape)
                    return jnp.where(truth, fns[1](p, sides), fns[0](p, sides))
                v.root, v.fn, v.away = s, fn, {key: away}
        return [v]

    def _boundary_order(self, pred, cases) -> float:
        """Order of the first Taylor coefficient of case1 - case0 that is non-zero at
        the boundary s = c of pred = (s <op> c); min(that, self.need) when proved, 0
        when the predicate or the cases have another form."""
        if len(cases) != 2 or not pred.expr or pred.expr[0] != "cmp":
            return 0
        _, s, c, _ = pred.expr
        if _boundary_key(pred) is None or s.root is not s or s.jump < INF or \
                not _is_float(s.aval):
            return 0
        if any(x.dep and (x.root is not s or x.fn is None) for x in cases):
            return 0
        c_val = c.value()
        if c_val is None:
            return 0
        shape, dtype = tuple(s.aval.shape), s.aval.dtype
        try:
            with jax.ensure_compile_time_eval():
                p0 = jnp.broadcast_to(jnp.asarray(c_val, dtype), shape)
                fns = [_case_fn(x, shape) for x in cases]
                if any(f is None for f in fns):
                    return 0

                key, above = _boundary_key(pred), pred.expr[3]
                p0_np = np.asarray(p0)
                true_side = {key: above, "p0": p0_np}
                false_side = {key: not above, "p0": p0_np}

                def side(i, sides):
                    return lambda p: jnp.asarray(fns[i](p, sides), dtype)

                from stochbp._src import taylor
                per_case = []
                for i, sides in ((1, true_side), (0, false_side)):
                    g = side(i, sides)
                    cs = [jnp.asarray(g(p0))]
                    if self.need > 1:
                        lowered = taylor.jet_compatible(g, p0)
                        cs += list(taylor.taylor_coefficients(
                            lowered, p0, jnp.ones_like(p0), self.need - 1))
                    per_case.append([checks.concrete(x) for x in cs])
        except Exception:  # noqa: BLE001 - not provable: treat as a jump
            return 0
        if any(x is None for cs in per_case for x in cs):
            return 0
        # each order on its own: the cases' coefficients of order n must agree to a
        # few ulps of their own size (a difference of 1e-12 between 1e-12 and 0 is a
        # jump; no absolute tolerance, no scale shared between orders)
        ulps = 64 * float(np.finfo(np.dtype(dtype)).eps)
        for n, (a, b) in enumerate(zip(*per_case)):
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            # a non-finite coefficient (log at its pole, ...) counts as a jump there
            if not (np.isfinite(a).all() and np.isfinite(b).all()):
                return n
            if np.any(np.abs(a - b) > ulps * np.maximum(np.abs(a), np.abs(b))):
                return n
        return self.need

    # ---- control flow
    def _scan(self, eqn, ins):
        p = eqn.params
        nc, ncarry = p["num_consts"], p["num_carry"]
        consts = ins[:nc]
        carry = [_generalise(x) for x in ins[nc:nc + ncarry]]
        xs = [_generalise(x) for x in ins[nc + ncarry:]]
        outs = None
        for _ in range(32):
            outs = self.run_closed(p["jaxpr"], consts + carry + xs)
            new = [_join(a, b) for a, b in zip(carry, outs[:ncarry])]
            if all(_same(a, b) for a, b in zip(new, carry)):
                break
            carry = new
        else:  # pragma: no cover - the lattice is finite
            carry = [_dep(x.aval, 0, "scan carry") for x in carry]
        return carry + [_generalise(y, o.aval) for y, o in
                        zip(outs[ncarry:], eqn.outvars[ncarry:])]

    def _while(self, eqn, ins):
        p = eqn.params
        cn, bn = p["cond_nconsts"], p["body_nconsts"]
        cconsts, bconsts = ins[:cn], ins[cn:cn + bn]
        carry = [_generalise(x) for x in ins[cn + bn:]]
        for _ in range(32):
            outs = self.run_closed(p["body_jaxpr"], bconsts + carry)
            new = [_join(a, b) for a, b in zip(carry, outs)]
            if all(_same(a, b) for a, b in zip(new, carry)):
                break
            carry = new
        (pred,) = self.run_closed(p["cond_jaxpr"], cconsts + carry)
        if pred.dep and pred.known is None:
            why = (f"{_source(eqn, self.context)} (a while_loop whose trip count depends "
                   "on z)")
            return [_dep(x.aval, 0, why) for x in carry]
        return carry

    def _cond(self, eqn, ins):
        index, *ops = ins
        branches = eqn.params["branches"]
        if index.dep and index.known is None:
            why = (f"{_source(eqn, self.context)} (lax.cond / switch on a z-dependent "
                   "predicate: stochbp cannot match the branches at the boundary)")
            return [_dep(o.aval, 0, why) for o in eqn.outvars]
        results = [self.run_closed(br, ops) for br in branches]
        outs = []
        for i, o in enumerate(eqn.outvars):
            vals = [r[i] for r in results]
            jump, why = _weakest(vals)
            if any(v.dep for v in vals):
                out = _dep(o.aval, jump, why)
                out.nf = next((v.nf for v in vals if v.dep and v.nf), None)
                outs.append(out)
            else:
                outs.append(_const(o.aval))
        return outs


def _nonfinite_constant(x) -> bool:
    if x.dep:
        return False
    val = x.value()
    return val is not None and val.dtype.kind == "f" and val.size > 0 and \
        not np.isfinite(val).any()


def _positivity(eqn, ins, v) -> None:
    """Set v.pos / v.zero / v.sqc / v.coord (see Val) from the operands'."""
    name = eqn.primitive.name
    x = ins[0]
    deps = [u for u in ins if u.dep]
    shape = tuple(eqn.outvars[0].aval.shape)
    if name in _COORD_KEEP:
        v.pos, v.zero, v.sqc, v.coord = x.pos, x.zero, x.sqc, x.coord
    elif name == "broadcast_in_dim":  # may repeat coordinates
        v.pos, v.zero = x.pos, x.zero
    elif name in ("exp", "exp2", "logistic"):
        v.pos = True
    elif name == "square" or (name == "integer_pow" and eqn.params.get("y", 1) % 2 == 0
                              and eqn.params.get("y", 1) > 0) or (
            name == "mul" and ins[0] is ins[1]):
        if x.pos:
            v.pos = True
        else:
            v.zero, v.sqc = 1, x.coord
    elif name in ("add", "add_any", "sub") and len(ins) == 2:
        a, b = ins
        if name != "sub" and ((_pos(a) and _nonneg(b)) or (_pos(b) and _nonneg(a))):
            v.pos = True
        elif name != "sub" and _nonneg(a) and _nonneg(b):
            zs = [u.zero for u in deps]
            if all(zs):
                v.zero = min(zs)
                v.sqc = len(deps) == 1 and deps[0].sqc
        if len(deps) == 1 and deps[0].coord and tuple(deps[0].aval.shape) == shape:
            v.coord = True  # z + c, c - z
    elif name == "neg":
        v.coord = x.coord
    elif name in ("mul", "div") and len(ins) == 2:
        a, b = ins
        if len(deps) == 2:
            v.pos = a.pos and b.pos
            if name == "mul" and _nonneg(a) and _nonneg(b):
                zs = [u.zero for u in deps if not u.pos]
                if all(zs):
                    v.zero = min(zs)
                    v.sqc = len(zs) == 1 and [u for u in deps if not u.pos][0].sqc
        else:
            d = deps[0]
            c = b if d is a else a
            if name == "div" and d is b:
                v.pos = _pos(a) and b.pos
            else:
                if _pos(c):
                    v.pos, v.zero, v.sqc = d.pos, d.zero, d.sqc
                if _nonzero_const(c) and tuple(d.aval.shape) == shape:
                    v.coord = d.coord
    elif name == "reduce_sum":
        v.pos = x.pos
        if x.zero:
            n = int(np.prod([x.aval.shape[i] for i in eqn.params["axes"]] or [1]))
            v.zero, v.sqc = (x.zero * n, True) if x.sqc else (x.zero, False)
    elif name in ("reduce_prod", "cumprod", "cumsum", "dot_general", "concatenate",
                  "sqrt", "pow", "integer_pow", "log1p"):
        v.pos = all(_pos(u) for u in ins) if name != "log1p" else False


def _centred(eqn, ins, v) -> None:
    """sum_i (x_i - mean(x))^2 over n distinct coordinates x is |P x|^2, P the
    projection off the constant vector: a sum of n - 1 squares (v.zero = n - 1)."""
    name = eqn.primitive.name
    x = ins[0]
    size = int(np.prod(x.aval.shape))
    all_axes = name == "reduce_sum" and len(eqn.params["axes"]) == len(x.aval.shape)
    if all_axes and x.coord:
        v.cen = ("sum", x, size)
    elif all_axes and x.cen and x.cen[0] == "sq" and x.cen[1] == size and size > 1:
        v.zero, v.sqc = size - 1, False
    elif name in ("broadcast_in_dim", "reshape", "squeeze", "expand_dims") and x.cen \
            and x.cen[0] in ("sum", "mean"):
        v.cen = x.cen
    elif name == "div" and x.cen and x.cen[0] == "sum" and \
            _scalar_const(ins[1]) == x.cen[2]:
        v.cen = ("mean",) + x.cen[1:]
    elif name == "sub" and ins[1].dep and ins[1].cen and ins[1].cen[0] == "mean" and \
            ins[1].cen[1] is x:
        v.cen = ("centred", x, ins[1].cen[2])
    elif (name == "square" or (name == "integer_pow" and eqn.params.get("y") == 2) or (
            name == "mul" and ins[0] is ins[1])) and x.cen and x.cen[0] == "centred":
        v.cen = ("sq", x.cen[2])


def _singular_power(eqn, ins):
    """(J, k) for sqrt / rsqrt / pow / 1 / v of a value v >= 0 that can reach 0 like a
    sum of k squares of coordinates (|v|^(2y) near its zero set of codimension k):
    its derivatives of order m are L1 and free of deltas iff m < 2y + k, so
    J = ceil(2y + k) - 1. None when v is > 0, of unknown sign (NaN region, not this
    rule for 1 / v) or the power is a non-negative integer (analytic)."""
    name = eqn.primitive.name
    if name == "sqrt":
        x, y = ins[0], 0.5
    elif name == "rsqrt":
        x, y = ins[0], -0.5
    elif name == "pow":
        x, y = ins[0], _scalar_const(ins[1])
    elif name == "integer_pow":
        x, y = ins[0], float(eqn.params.get("y", 1))
    elif name == "div":
        x, y = ins[1], -1.0
    else:
        return None
    if not x.dep or x.pos:
        return None
    if y is not None and y >= 0 and y == int(y):
        return None
    if not _nonneg(x) and name == "div":
        return None  # a pole of 1 / v at a v of unknown sign: not detected (documented)
    # >= 0 of unknown form, or of unknown sign (perhaps >= 0 although not proved, like
    # sqrt(jnp.pad(z**2, 1))): like one square
    k = x.zero if _nonneg(x) and x.zero else 1
    if y is None:
        return 0, k
    return max(0, math.ceil(2 * y + k) - 1), k


def _boundary_key(pred):
    """(id(s), c) for a predicate s <op> c with a concrete c; else None."""
    if not pred.expr or pred.expr[0] != "cmp":
        return None
    c = pred.expr[2].value()
    if c is None:
        return None
    return (id(pred.expr[1]), c.dtype.str, c.shape, c.tobytes())


def _weakest_away(vals, key):
    """Like _weakest, with each value's jump order away from the boundary ``key``."""
    best, why = INF, None
    for v in vals:
        if not v.dep:
            continue
        jump, reason = (v.away or {}).get(key, (v.jump, v.why))
        if jump < best:
            best, why = jump, reason
    return best, why


def _identity(p, sides):
    return p


def _case_fn(x, shape):
    """p -> the value of case x when its root takes the value p (constants: their
    value, broadcast)."""
    if x.dep:
        return x.fn
    val = x.value()
    if val is None:
        return None
    arr = jnp.broadcast_to(jnp.asarray(val), shape)
    return lambda p, sides: arr.astype(p.dtype)


def _compose(eqn, ins):
    """x.fn of the output of an elementwise eqn whose z-dependent operands share a
    root: evaluate the eqn on their fns and the constants' values."""
    parts = []
    for x in ins:
        if x.dep:
            parts.append(x.fn)
        else:
            parts.append(x)

    def fn(p, sides):
        vals = []
        for part in parts:
            if isinstance(part, Val):
                val = part.value()
                if val is None:
                    raise ValueError("constant not known")
                vals.append(jnp.asarray(val))
            else:
                vals.append(part(p, sides))
        return bind_eqn(eqn, vals)[0]
    return fn


def _softplus_idiom(p, q):
    """(a, b) when p = max(a, b) and q = log1p(exp(-|a - b|)) (the sum is
    log(e^a + e^b), analytic); else None."""
    if not (p.expr and q.expr and p.expr[0] == "max" and q.expr[0] == "tail"):
        return None
    _, a, b = p.expr
    d = q.expr[1]
    if d.expr and d.expr[0] == "sub" and {id(d.expr[1]), id(d.expr[2])} == {id(a), id(b)}:
        return [a, b]
    for x, y in ((a, b), (b, a)):
        if d is x and _const_equals(y, 0):
            return [x]
    return None


def _generalise(x, aval=None):
    aval = x.aval if aval is None else aval
    if not x.dep:
        return _const(aval)
    v = _dep(aval, x.jump, x.why, nonneg=x.nonneg)
    v.root, v.fn, v.nf = v, _identity, x.nf
    return v


def _join(a, b):
    if not a.dep and not b.dep:
        return _const(a.aval)
    jump, why = _weakest([a, b])
    v = _dep(a.aval, jump, why, nonneg=_nonneg(a) and _nonneg(b))
    v.root, v.fn = v, _identity
    v.nf = (a.nf if a.dep else None) or (b.nf if b.dep else None)
    return v


def _same(a, b) -> bool:
    return a.dep == b.dep and a.jump == b.jump and (a.nf is None) == (b.nf is None)


def jump_order(f: Callable, example, need: int = 2):
    """(J, why): a lower bound on the jump order of f along its input, and the first
    primitive responsible (None when J is infinite). ``example`` is an array or a
    ``jax.ShapeDtypeStruct`` shaped like f's input; ``need`` is the rule's order (the
    boundary test of ``jnp.where`` looks at Taylor coefficients below it)."""
    closed = jax.make_jaxpr(f)(example)
    interp = _Interpreter(need)
    (invar,) = closed.jaxpr.invars
    z = _dep(invar.aval, INF, None)
    z.root, z.fn, z.total, z.coord = z, _identity, True, True
    outs = interp.run(closed.jaxpr, closed.consts, [z])
    return _weakest(outs)


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def require_smooth(owner: str, f: Callable, example, order: int, fix_kink: str,
                   fix_jump: str) -> None:
    """Raise ValueError, before any work, when f may have a jump in a derivative of
    order below ``order``: the rule's derivatives of order ``order`` and below would
    then miss the Dirac deltas of the distributional derivative, and the gradient
    would be biased. ``fix_kink`` / ``fix_jump`` name the estimators to use instead
    when f is continuous / when f itself jumps. Rules of order 1 are not checked."""
    if order < 2:
        return
    jump, why = jump_order(f, example, order)
    if jump >= order:
        return
    if _NO_RULE in (why or ""):
        raise ValueError(
            f"{owner}: stochbp could not prove f smooth at {why}, and a rule that uses "
            f"derivatives of f up to order {order} is silently biased if f has a kink or "
            "a jump (Theorem 1 needs distributional derivatives). If you know f is "
            f"smooth there, pass smooth='assume' to skip this check. Otherwise: {fix_jump}")
    what = "f itself jumps" if jump == 0 else (
        f"the {_ordinal(int(jump))} derivative of f jumps" if jump > 1 else
        "f has a kink (its 1st derivative jumps)")
    raise ValueError(
        f"{owner}: f is not smooth enough for a rule that uses derivatives of f up to "
        f"order {order}: {what} at {why}. Theorem 1 needs distributional derivatives, "
        f"which hold a Dirac delta there that Taylor mode does not see, so the gradient "
        f"would be silently biased. {fix_jump if jump == 0 else fix_kink} If f never "
        "reaches that point (or you accept the bias), pass smooth='assume' to skip "
        "this check.")
