"""Functions that see z only through a linear map: f(z) = g(A z + b).

Declaring this structure lets the Fourier rules skip per-coordinate Taylor passes of f.
Along coordinate j the argument of g moves on the line u + t A[:, j], so

* elementwise g (f = sum_i g(u_i), every generalised linear model):
  d^n f / dz_j^n = sum_i g^(n)(u_i) A_ij^n  -- one univariate Taylor expansion of g
  per entry of u, then N small matrix products with the powers of A;
* general g: a Taylor pass of g along each column of A (no pass through the matmul).
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
        if A.ndim != 2:
            raise ValueError(f"linear(): A must be a matrix; got A with shape {A.shape}")
        if b is not None:
            b = jnp.asarray(b)
            if b.shape != (A.shape[0],):
                raise ValueError(f"linear(): b must have shape ({A.shape[0]},) to match A; "
                                 f"got b with shape {b.shape}")
        self.g, self.A, self.b, self.elementwise = g, A, b, bool(elementwise)

    @property
    def input_dim(self) -> int:
        return self.A.shape[1]

    def preactivation(self, z):
        u = z @ self.A.T
        return u if self.b is None else u + self.b

    def __call__(self, z):
        if jnp.shape(z) != (self.input_dim,):
            raise ValueError(f"linear(): f expects z of shape ({self.input_dim},); "
                             f"got z with shape {jnp.shape(z)}")
        u = self.preactivation(z)
        return jnp.sum(self.g(u)) if self.elementwise else self.g(u)

    def mean_derivatives(self, z_samples, order: int) -> jax.Array:
        """Mean over samples of d^n f / dz_j^n, shape (order, d), z_samples (S, d)."""
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


def linear(g: Callable, A, b=None, *, elementwise: bool = False) -> LinearComposite:
    """Declare ``f(z) = g(A z + b)``; with ``elementwise=True``, ``f(z) = sum(g(A z + b))``.

    Example, the log-likelihood of logistic regression with labels y in {-1, 1}::

        f = stochbp.linear(jax.nn.log_sigmoid, y[:, None] * X, elementwise=True)
    """
    return LinearComposite(g, A, b, elementwise=elementwise)
