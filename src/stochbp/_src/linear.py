"""Functions that see z only through a linear map: f(z) = g(A z + b).

Declaring this structure lets the Fourier rules skip per-coordinate Taylor passes of f.
Along coordinate j the argument of g moves on the line u + t A[:, j], so

* elementwise g (f = sum_i g(u_i), every generalised linear model):
  d^n f / dz_j^n = sum_i g^(n)(u_i) A_ij^n  -- one univariate Taylor expansion of g
  per entry of u, then N small matrix products with the powers of A;
* general g: a Taylor pass of g along each column of A (no pass through the matmul).

The discrete Fourier rules (Eqs. 17-18) use the same structure differently: replacing
coordinate j of z changes u by a rank-one update (z_j' - z_j) A[:, j], so the d (or d K)
evaluations of f become evaluations of g on u + delta_j A[:, j], with no matmul.

Categorical z (class indices in {0..K-1}) is declared with a three-way A of shape
(m, d, K): it acts on the one-hot encoding, u = sum_j A[:, j, z_j] + b, i.e. A reshaped
to (m, d K) times the flattened one-hot matrix. Such an f also accepts a float array of
shape (d, K) (one-hot rows, or relaxed rows on the simplex for gumbel_softmax, rebar and
relax): u = sum_jk A[:, j, k] y_jk + b.

Extra positional arguments are passed on to g: ``f(z, x) = g(A z + b, x)``; this is how
:func:`stochbp.per_example` hands each example its own data.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from stochbp._src import taylor


class LinearComposite:
    """A callable ``z -> g(A @ z + b)`` (or ``sum(g(A @ z + b))`` when elementwise).

    Build it with :func:`stochbp.linear`; use it wherever an ``f`` is expected.
    """

    def __init__(self, g: Callable, A, b=None, *, elementwise: bool = False):
        A = jnp.asarray(A)
        if A.ndim not in (2, 3):
            raise ValueError("linear(): A must be a matrix (m, d), or (m, d, K) for "
                             "categorical z acting on its one-hot encoding; got A with "
                             f"shape {A.shape}")
        if b is not None:
            b = jnp.asarray(b)
            if b.shape != (A.shape[0],):
                raise ValueError(f"linear(): b must have shape ({A.shape[0]},) to match A; "
                                 f"got b with shape {b.shape}")
        self.g, self.A, self.b, self.elementwise = g, A, b, bool(elementwise)

    @property
    def input_dim(self) -> int:
        return self.A.shape[1]

    @property
    def num_classes(self) -> Optional[int]:
        """K for a categorical (one-hot) A of shape (m, d, K); None for a matrix A."""
        return self.A.shape[2] if self.A.ndim == 3 else None

    def columns(self) -> jax.Array:
        """The rank-one directions: A[:, j] as rows (d, m), or A[:, j, k] as (d, K, m)."""
        return jnp.moveaxis(self.A, 0, -1)

    def preactivation(self, z):
        """u = A z + b; a categorical A takes indices (..., d) or one-hot (..., d, K)."""
        if self.A.ndim == 2:
            u = z @ self.A.T
        elif jnp.issubdtype(jnp.result_type(z), jnp.integer):
            cols = self.columns()  # (d, K, m)
            u = jnp.sum(cols[jnp.arange(self.input_dim), z], axis=-2)
        else:
            u = jnp.einsum("...jk,mjk->...m", z, self.A)
        return u if self.b is None else u + self.b

    def from_preactivation(self, u, *args):
        """f given u = A z + b: g(u, *args), summed when elementwise."""
        out = self.g(u, *args)
        return jnp.sum(out) if self.elementwise else out

    def __call__(self, z, *args):
        shape = jnp.shape(z)
        if self.A.ndim == 2:
            if shape != (self.input_dim,):
                raise ValueError(f"linear(): f expects z of shape ({self.input_dim},); "
                                 f"got z with shape {shape}")
        else:
            d, K = self.A.shape[1:]
            integer = jnp.issubdtype(jnp.result_type(z), jnp.integer)
            if not ((integer and shape == (d,)) or (not integer and shape == (d, K))):
                raise ValueError(f"linear(): with A of shape {self.A.shape}, f expects "
                                 f"class indices of shape ({d},) or one-hot/relaxed rows "
                                 f"of shape ({d}, {K}); got z with shape {shape} and "
                                 f"dtype {jnp.result_type(z)}")
        return self.from_preactivation(self.preactivation(z), *args)

    def mean_derivatives(self, z_samples, order: int) -> jax.Array:
        """Mean over samples of d^n f / dz_j^n, shape (order, d), z_samples (S, d)."""
        if self.A.ndim != 2:
            raise TypeError("linear(): derivatives need real-valued z; a categorical "
                            f"(one-hot) A of shape {self.A.shape} has none")
        u = self.preactivation(z_samples)  # (S, m)
        dtype = u.dtype
        factorials = jnp.asarray([math.factorial(n) for n in range(1, order + 1)], dtype)
        if self.elementwise:
            g = taylor.jet_compatible(self.g, u)
            coeffs = taylor.taylor_coefficients(g, u, jnp.ones_like(u), order)  # (N,S,m)
            gn = jnp.mean(coeffs, axis=1) * factorials[:, None]  # (N, m)
            powers = self.A[None, :, :] ** jnp.arange(1, order + 1)[:, None, None]
            return jnp.einsum("nm,nmd->nd", gn, powers.astype(dtype))
        g = taylor.jet_compatible(self.g, u[0])

        def one(u_s):
            return jax.vmap(lambda a: taylor.taylor_coefficients(g, u_s, a, order),
                            in_axes=1, out_axes=1)(self.A.astype(dtype))

        coeffs = jnp.mean(jax.vmap(one)(u), axis=0)  # (N, d)
        return coeffs * factorials[:, None]


def _flatten_linear(x):
    return (x.A, x.b), (x.g, x.elementwise)


def _unflatten_linear(aux, children):
    obj = object.__new__(LinearComposite)
    obj.A, obj.b = children
    obj.g, obj.elementwise = aux
    return obj


# A pytree: A and b are leaves (so a declared f can cross jax.jit), g is static.
jax.tree_util.register_pytree_node(LinearComposite, _flatten_linear, _unflatten_linear)


def linear(g: Callable, A, b=None, *, elementwise: bool = False) -> LinearComposite:
    """Declare ``f(z) = g(A z + b)``; with ``elementwise=True``, ``f(z) = sum(g(A z + b))``.

    ``A`` is (m, d) for real or binary z of shape (d,), or (m, d, K) for categorical z
    (indices of shape (d,)), acting on the one-hot encoding. Extra arguments of f are
    passed to g, ``f(z, x) = g(A z + b, x)`` (see :func:`stochbp.per_example`).

    Example, the log-likelihood of logistic regression with labels y in {-1, 1}::

        f = stochbp.linear(jax.nn.log_sigmoid, y[:, None] * X, elementwise=True)
    """
    return LinearComposite(g, A, b, elementwise=elementwise)
