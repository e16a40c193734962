"""Argument checks shared by the public entry points.

Every failure names the argument and its value. Parameter *values* can be checked only
when they are concrete: under `jax.grad` they are, under `jax.jit` / `jax.vmap` they are
abstract tracers and the value checks are skipped (shape and type checks still run).
"""
from __future__ import annotations

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


def positive_int(owner: str, name: str, x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer; got {name}={x!r}")
    return int(x)


def is_float_dtype(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)
