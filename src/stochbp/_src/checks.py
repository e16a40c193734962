"""Argument checks shared by the public entry points.

Every failure names the argument and its value. Parameter *values* can be checked only
when they are concrete: under `jax.grad` they are, under `jax.jit` / `jax.vmap` they are
abstract tracers and the value checks are skipped (shape and type checks still run).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

try:  # private, but the only way to read a value under jax.grad without a host sync error
    from jax._src.core import to_concrete_value as _to_concrete
except ImportError:  # pragma: no cover - future JAX
    _to_concrete = None


def concrete(x: Any):
    """Return ``x`` as a NumPy array if its value is known now, else None."""
    if isinstance(x, (numbers.Number, np.ndarray)):
        return np.asarray(x)
    if isinstance(x, jax.core.Tracer):
        if _to_concrete is None:
            return None
        try:
            val = _to_concrete(x)
        except Exception:  # noqa: BLE001 - any failure means "not concrete"
            return None
        return None if val is None else np.asarray(val)
    try:
        return np.asarray(x)
    except Exception:  # noqa: BLE001
        return None


def _short(v: np.ndarray) -> str:
    if v.size <= 6:
        return np.array2string(v, precision=4) if v.ndim else repr(v.item())
    return f"array of shape {v.shape} (e.g. {np.array2string(v.ravel()[:4], precision=4)}...)"


def check_values(owner: str, name: str, x: Any, ok: Callable[[np.ndarray], np.ndarray],
                 requirement: str) -> None:
    """Raise ValueError if a concrete ``x`` has NaN or fails ``ok`` elementwise."""
    v = concrete(x)
    if v is None:
        return
    if v.dtype.kind in "fc" and np.isnan(v).any():
        raise ValueError(f"{owner}: parameter {name} must not be NaN; got {name}={_short(v)}")
    good = np.asarray(ok(v))
    if not good.all():
        bad = v[~np.broadcast_to(good, v.shape)] if v.ndim else v
        raise ValueError(f"{owner}: parameter {name} must be {requirement}; got {name}="
                         f"{_short(v)} (offending values: {_short(np.asarray(bad))})")


def positive(owner: str, name: str, x: Any) -> None:
    check_values(owner, name, x, lambda v: np.isfinite(v) & (v > 0), "positive and finite")


def finite(owner: str, name: str, x: Any) -> None:
    check_values(owner, name, x, np.isfinite, "finite")


def probabilities(owner: str, name: str, x: Any) -> None:
    check_values(owner, name, x, lambda v: (v >= 0) & (v <= 1), "in [0, 1]")


def _integer_scalar(x):
    """int(x) for a Python, NumPy or concrete 0-d JAX integer; None otherwise."""
    if isinstance(x, (bool, np.bool_)):
        return None
    if isinstance(x, numbers.Integral):
        return int(x)
    dtype = getattr(x, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jnp.integer) and jnp.ndim(x) == 0:
        v = concrete(x)
        return None if v is None else int(v)
    return None


def positive_int(owner: str, name: str, x: Any) -> int:
    """A positive integer (any integer scalar type); ValueError naming ``name``."""
    v = _integer_scalar(x)
    if v is None or v < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer; got {name}={x!r}")
    return v


def optional_positive_int(owner: str, name: str, x: Any):
    return None if x is None else positive_int(owner, name, x)


def integer_at_least(owner: str, name: str, x: Any, low: int) -> int:
    v = _integer_scalar(x)
    if v is None or v < low:
        raise ValueError(f"{owner}: {name} must be an integer >= {low}; got {name}={x!r}")
    return v


def layer_sizes(owner: str, name: str, x) -> tuple:
    """A positive integer or a non-empty sequence of them, as a tuple."""
    values = [x] if _integer_scalar(x) is not None else \
        (list(x) if isinstance(x, (tuple, list)) else [])
    sizes = [_integer_scalar(v) for v in values]
    if not sizes or any(v is None or v < 1 for v in sizes):
        raise ValueError(f"{owner}: {name} must be a positive integer or a non-empty "
                         f"sequence of them (layer sizes); got {name}={x!r}")
    return tuple(sizes)


def positive_number(owner: str, name: str, x) -> float:
    """A positive finite real number (a hyperparameter, not a traced parameter)."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real) \
            or not np.isfinite(x) or x <= 0:
        raise ValueError(f"{owner}: {name} must be a positive finite number; got "
                         f"{name}={x!r}")
    return float(x)


def finite_number(owner: str, name: str, x) -> float:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real) \
            or not np.isfinite(x):
        raise ValueError(f"{owner}: {name} must be a finite number; got {name}={x!r}")
    return float(x)


def boolean(owner: str, name: str, x) -> bool:
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{owner}: {name} must be True or False; got {name}={x!r}")
    return bool(x)


def one_of(owner: str, name: str, x, options: tuple) -> str:
    """A string among ``options`` (the message lists them and shows the value)."""
    if not isinstance(x, str) or x not in options:
        raise ValueError(f"{owner}: {name} must be one of {options}; got {name}={x!r}")
    return x


SMOOTH_OPTIONS = ("check", "assume")


def smooth_option(owner: str, x) -> str:
    """``smooth=`` of the estimators that use derivatives of f of order >= 2:
    "check" (prove f smooth enough first) or "assume" (skip the proof)."""
    return one_of(owner, "smooth", x, SMOOTH_OPTIONS)


def callable_or_none(owner: str, name: str, x, signature: str):
    if x is not None and not callable(x):
        raise TypeError(f"{owner}: {name} must be callable{signature} or None; got "
                        f"{name}={x!r}")
    return x


def sample_shape(owner: str, shape) -> tuple:
    """A tuple (or list) of non-negative integers."""
    values = [_integer_scalar(n) for n in shape] if isinstance(shape, (tuple, list)) \
        else [None]
    if any(v is None or v < 0 for v in values):
        raise ValueError(f"{owner}: sample_shape must be a tuple of non-negative integers; "
                         f"got sample_shape={shape!r}")
    return tuple(values)


def largest_order(dtype) -> int:
    """The largest n for which n! is finite in ``dtype`` (34 in float32, 170 in
    float64): Taylor mode returns f^(n) / n!, so higher orders cannot be represented."""
    log_max = math.log(float(jnp.finfo(dtype).max))
    n = 1
    while math.lgamma(n + 2) < log_max:
        n += 1
    return n


def order_fits(owner: str, order: int, dtype) -> None:
    """Refuse an order whose derivatives n! f^(n)/n! overflow ``dtype``."""
    limit = largest_order(dtype)
    if order > limit:
        raise ValueError(
            f"{owner}: order={order} is beyond what {jnp.dtype(dtype).name} can represent: "
            f"the n-th derivative is n! times a Taylor coefficient and n! overflows for "
            f"n > {limit}. Use order <= {limit}"
            + (" or float64 (jax.config.update('jax_enable_x64', True))"
               if jnp.finfo(dtype).bits < 64 else "") + ".")


def coefficients_finite(owner: str, order: int, coeffs) -> None:
    """Refuse (concrete) series coefficients that overflow their dtype."""
    v = concrete(coeffs)
    if v is None or np.isfinite(v).all():
        return
    finite_orders = np.isfinite(v.reshape(v.shape[0], -1)).all(axis=1)
    ok = int(np.argmin(finite_orders)) if not finite_orders.all() else order
    raise ValueError(
        f"{owner}: with order={order} the cumulant coefficients c_n of these parameter "
        f"values overflow {v.dtype.name} from n = {ok + 1} (c_n grows like the scale "
        f"parameter to the power n); use order <= {ok}"
        + (" or float64" if v.dtype.itemsize < 8 else "") + ".")


def reject_complex(owner: str, name: str, x) -> None:
    dtype = getattr(x, "dtype", None)
    if dtype is None and isinstance(x, complex):
        dtype = np.dtype(complex)
    if dtype is not None and jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"{owner}: parameter {name} must be real; got a complex array "
                        f"{name} of dtype {dtype}")


def is_float_dtype(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)
