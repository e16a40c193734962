"""Declarations of how f depends on a discrete sample: per-example sums and one-hot input.

**per_example.** In a model trained on a batch, each data point i has its own latent row
Z[i] and the objective is a sum of per-example terms,

    f(Z) = sum_i term(Z[i], data[i]).

Written as one opaque f, the discrete Fourier rules would re-evaluate the whole batch for
every coordinate they change (n d evaluations of an n-example f for Bernoulli, n d K for
categorical). ``stochbp.per_example(term, data)`` declares the sum, so changing a
coordinate of row i re-evaluates only term i: n d (or n d K) evaluations of one term, all
in one vmapped batch. The score-type estimators (arm, disarm, rebar, relax) use the same
declaration to give each row its own learning signal term_i instead of the batch total,
which leaves them unbiased (the other terms are independent of row i's noise and have
zero-mean differences) and removes the other rows' noise from row i's gradient.

**row_terms.** ``stochbp.row_terms(terms)`` declares the same sum with a function that
maps the whole batch Z to its n terms (term i depending on row i only). The Bernoulli and
Categorical Fourier rules then change column j in every row at once and read each row's
change from its own term: d + 1 (or d K + 1) calls of ``terms`` for any n, with matrix
products of Z taken as rank-one updates (``substitution.py``). ``stochbp.infer`` builds
its per-example learning signals this way.

**one_hot.** Relaxations of a categorical variable (gumbel_softmax, rebar, relax) feed f
rows on the probability simplex, shape (d, K), where the exact estimators feed class
indices, shape (d,). ``stochbp.one_hot(h, K)`` declares an f written on one-hot rows:
called with indices it evaluates h(one_hot(z)), called with float rows it evaluates h on
them. A ``stochbp.linear`` with a categorical A of shape (m, d, K) accepts both forms too.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp

from stochbp._src import checks
from stochbp._src.linear import LinearComposite


def _is_int(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.integer) or \
        jnp.issubdtype(jnp.result_type(x), jnp.bool_)


class OneHot:
    """A callable on categorical samples written on their one-hot encoding.

    ``f(z, *args)`` is ``h(one_hot(z, K), *args)`` for integer z of shape (d,), and
    ``h(z, *args)`` for float z of shape (d, K) (one-hot or relaxed rows). Build it with
    :func:`stochbp.one_hot`.
    """

    def __init__(self, h: Callable, num_classes: int):
        if not callable(h):
            raise TypeError(f"one_hot(): h must be callable; got h={h!r}")
        self.h = h
        self.num_classes = checks.integer_at_least("one_hot()", "num_classes", num_classes, 2)

    def __call__(self, z, *args):
        if _is_int(z):
            y = jax.nn.one_hot(z, self.num_classes, dtype=jnp.result_type(float))
        else:
            if jnp.shape(z)[-1:] != (self.num_classes,):
                raise ValueError(f"one_hot(): f expects one-hot rows with last axis "
                                 f"num_classes={self.num_classes}; got z with shape "
                                 f"{jnp.shape(z)}")
            y = z
        return self.h(y, *args)


def strided_map(fn: Callable, xs, chunk: int):
    """fn over the leading axis of the pytree xs (n examples), ``chunk`` examples at a
    time in a sequential loop; the same result as ``jax.vmap(fn)(xs)``.

    When chunk divides n, loop step t takes the examples t, t + m, t + 2m, ... with
    m = n / chunk (xs viewed as (chunk, m, ...) and looped over its second axis). With
    the examples split over devices in contiguous blocks (``jax.sharding``, chunk a
    multiple of the device count), every step then holds an equal share of every
    device's examples, so each device loops over its own examples only; contiguous
    chunks (``lax.map(..., batch_size=chunk)``) would put each step on one device and
    make XLA gather the batch on every device (measured 4.3x slower on 4 CPU devices,
    benchmarks/scaling.py). Otherwise: lax.map's contiguous chunks."""
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if n % chunk:
        return jax.lax.map(fn, xs, batch_size=chunk)
    m = n // chunk
    steps = jax.tree_util.tree_map(
        lambda x: jnp.swapaxes(jnp.reshape(x, (chunk, m) + x.shape[1:]), 0, 1), xs)
    out = jax.lax.map(jax.vmap(fn), steps)  # (m, chunk, ...)
    return jax.tree_util.tree_map(
        lambda y: jnp.reshape(jnp.swapaxes(y, 0, 1), (n,) + y.shape[2:]), out)


class PerExample:
    """f(Z) = sum_i term(Z[i], data[i]) over the leading axis of the sample.

    Build it with :func:`stochbp.per_example`. ``values(Z)`` returns the n terms.
    """

    def __init__(self, term: Callable, data: Any = None, *, chunk_size: Optional[int] = None):
        self.chunk_size = checks.optional_positive_int("per_example()", "chunk_size",
                                                       chunk_size)
        if not callable(term):
            raise TypeError(f"per_example(): term must be callable; got term={term!r}")
        if isinstance(term, PerExample):
            raise TypeError("per_example(): term must be one example's function, not "
                            "another per_example declaration")
        self.term, self.data = term, data
        sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None
                 for leaf in jax.tree_util.tree_leaves(data)}
        if None in sizes or len(sizes) > 1:
            shapes = [jnp.shape(x) for x in jax.tree_util.tree_leaves(data)]
            raise ValueError("per_example(): every array in data must have the same "
                             f"leading (example) axis; got data with shapes {shapes}")
        self.num_examples: Optional[int] = sizes.pop() if sizes else None

    def _check(self, z) -> None:
        shape = tuple(z.shape) if hasattr(z, "shape") else jnp.shape(z)
        if len(shape) == 0:
            raise ValueError("per_example(): the sample needs a leading example axis; got "
                             "a scalar sample")
        if self.num_examples is not None and shape[0] != self.num_examples:
            raise ValueError(f"per_example(): data has {self.num_examples} examples on its "
                             f"leading axis but the sample has {shape[0]} (sample shape "
                             f"{shape}); give the distribution batch_shape "
                             f"({self.num_examples}, ...)")

    def map_rows(self, fn: Callable, z):
        """vmap ``fn(term, z_i, args_i)`` over examples; args_i is () or (data_i,)."""
        self._check(z)
        if self.data is None:
            return jax.vmap(lambda zi: fn(self.term, zi, ()))(z)
        return jax.vmap(lambda zi, xi: fn(self.term, zi, (xi,)))(z, self.data)

    def map_value_and_extra(self, fn: Callable, z):
        """(values, extras) over examples, for ``fn(term, z_i, args_i)`` returning
        (term value, extra). The values keep their gradient (closure gradients); the
        extras (the Fourier rules' substitutions) must only be used under a
        stop-gradient.

        With ``chunk_size`` set, the values are one vmapped pass and the extras go
        through a sequential loop, chunk_size examples at a time (:func:`strided_map`),
        with the stop-gradient inside the loop body so differentiating the caller does
        not linearise the loop."""
        if self.chunk_size is None:
            return self.map_rows(fn, z)
        self._check(z)
        extra = (lambda zi, args: jax.lax.stop_gradient(fn(self.term, zi, args)[1]))
        if self.data is None:
            extras = strided_map(lambda zi: extra(zi, ()), z, self.chunk_size)
        else:
            extras = strided_map(lambda t: extra(t[0], (t[1],)), (z, self.data),
                                 self.chunk_size)
        return self.values(z), extras

    def values(self, z, *, one_hot: bool = False) -> jax.Array:
        """The n per-example terms term(Z[i], data[i])."""
        return self.map_rows(lambda t, zi, args: call(t, zi, args, one_hot=one_hot), z)

    def __call__(self, z):
        return jnp.sum(self.values(z))


class RowTerms:
    """f(Z) = sum_i terms(Z)[i], where terms(Z)[i] depends on row Z[i] only.

    Build it with :func:`stochbp.row_terms`. Unlike :class:`PerExample`, ``terms`` maps
    the whole sample (leading axis n) to the vector of n terms in one call, so a rule
    that changes coordinate j may change it in every row at once: term i then reads
    row i's change and nothing else. ``values(Z)`` returns the n terms.
    """

    def __init__(self, terms: Callable):
        if not callable(terms):
            raise TypeError(f"row_terms(): terms must be callable; got terms={terms!r}")
        if isinstance(terms, (RowTerms, PerExample)):
            raise TypeError("row_terms(): terms must be a plain function of the sample, "
                            f"not another declaration; got terms={terms!r}")
        self.terms = terms

    def values(self, z, *, one_hot: bool = False) -> jax.Array:
        if one_hot:
            raise TypeError("row_terms(): relaxations feed categorical f one-hot rows, "
                            "which a row_terms declaration does not accept")
        if jnp.ndim(z) == 0:
            raise ValueError("row_terms(): the sample needs a leading row axis; got a "
                             "scalar sample")
        out = self.terms(z)
        if jnp.shape(out) != jnp.shape(z)[:1]:
            raise ValueError(f"row_terms(): terms must return one value per row, shape "
                             f"{tuple(jnp.shape(z)[:1])}; got shape {jnp.shape(out)}")
        return out

    def __call__(self, z):
        return jnp.sum(self.values(z))


def row_terms(terms: Callable) -> RowTerms:
    """Declare f(Z) = sum_i terms(Z)[i] with term i a function of row Z[i] only.

    ``terms`` maps a whole sample (leading axis: the n rows) to the n terms. The
    Bernoulli and Categorical Fourier rules then change coordinate j (and class k) in
    all rows at once and read each row's change from its own term: d + 1 (Bernoulli)
    or d K + 1 (Categorical) calls of ``terms`` for any n, instead of n d calls of a
    whole-batch f. arm, disarm, rebar and relax use terms(Z)[i] as row i's learning
    signal. The results equal those of ``per_example`` with the same terms.
    stochbp cannot verify the declaration: if term i depends on other rows, results are
    wrong.
    """
    return RowTerms(terms)


# ------------------------------------------------------------------ pytrees
# The declarations are pytrees: their arrays (a linear map's A and b, per-example data)
# are leaves, their functions static, so a declared f can be passed through jax.jit.
def _flatten_one_hot(x):
    return (), (x.h, x.num_classes)


def _unflatten_one_hot(aux, _children):
    obj = object.__new__(OneHot)
    obj.h, obj.num_classes = aux
    return obj


def _flatten_per_example(x):
    declared = isinstance(x.term, (LinearComposite, OneHot))
    children = (x.term if declared else None, x.data)
    return children, (None if declared else x.term, x.chunk_size, x.num_examples)


def _unflatten_per_example(aux, children):
    obj = object.__new__(PerExample)
    static_term, obj.chunk_size, obj.num_examples = aux
    traced_term, obj.data = children
    obj.term = static_term if static_term is not None else traced_term
    return obj


jax.tree_util.register_pytree_node(OneHot, _flatten_one_hot, _unflatten_one_hot)
jax.tree_util.register_pytree_node(PerExample, _flatten_per_example,
                                   _unflatten_per_example)
jax.tree_util.register_pytree_node(RowTerms, lambda x: ((), x.terms),
                                   lambda terms, _: RowTerms(terms))


def per_example(term: Callable, data: Any = None, *,
                chunk_size: Optional[int] = None) -> PerExample:
    """Declare f(Z) = sum_i term(Z[i], data[i]) (or term(Z[i]) when data is None).

    Args:
      term: one example's function: maps one row Z[i] (the sample without its leading
        axis, e.g. shape (d,)) and that example's data to a scalar. It may itself be a
        ``stochbp.linear(g, A, b)`` (then ``g(u, data_i)`` receives the data) or a
        ``stochbp.one_hot(h, K)``.
      data: a pytree of arrays whose leading axis indexes the n examples, or None.
      chunk_size: None (default) evaluates the Fourier rules' substitutions for all n
        examples at once (n d or n d K evaluations of term in one vmapped batch).
        An integer evaluates them chunk_size examples at a time in a sequential loop:
        memory then grows with chunk_size instead of n, and on CPU it can also be
        faster when term holds a matmul whose batched intermediates outgrow the cache
        (``benchmarks/discrete.py``: 1.6x faster on the categorical VAE with chunk_size=8;
        slower on the one-layer linear model, so measure). Results agree up to
        floating-point rounding. When chunk_size divides n, a loop step takes every
        (n / chunk_size)-th example, so with the examples split over devices
        (``jax.sharding``; chunk_size a multiple of the device count) each device
        loops over its own examples.

    The distribution's batch shape must start with n: e.g. ``nd.Categorical(logits=L)``
    with L of shape (n, d, K). The Fourier rules then change coordinates one example at
    a time (n d or n d K evaluations of term instead of as many of the whole-batch f),
    and arm, disarm, rebar and relax use term_i as row i's learning signal.
    stochbp cannot verify the declaration: if term i depends on other rows, results are
    wrong.
    """
    return PerExample(term, data, chunk_size=chunk_size)


def one_hot(h: Callable, num_classes: int) -> OneHot:
    """Declare a categorical f written on one-hot rows: f(z) = h(one_hot(z, num_classes)).

    ``h`` maps a float array of shape (..., d, num_classes) (and any extra arguments) to a
    scalar. The exact estimators call it on one-hot rows; gumbel_softmax, rebar and relax
    call it on relaxed rows on the simplex, so h must be written for continuous input.
    """
    return OneHot(h, num_classes)


# ------------------------------------------------------------------ helpers for estimators
def accepts_one_hot(term: Callable) -> bool:
    return isinstance(term, OneHot) or (isinstance(term, LinearComposite)
                                        and term.num_classes is not None)


def require_one_hot(owner: str, f: Callable) -> None:
    """Relaxations feed a categorical f one-hot rows; f must be declared to accept them."""
    if not accepts_one_hot(innermost(f)):
        raise TypeError(
            f"{owner} feeds a categorical f relaxed one-hot rows of shape (d, K), not "
            "class indices: declare f = stochbp.one_hot(h, num_classes=K) with h written "
            "on one-hot rows, or use stochbp.linear(g, A, b) with A of shape (m, d, K) "
            f"(optionally inside stochbp.per_example); got f={f!r}")


def call(term: Callable, z, args: Tuple = (), *, one_hot: bool = False):
    """term(z, *args); with one_hot=True, z holds (relaxed) one-hot rows (..., d, K)."""
    if one_hot:
        require_one_hot("this estimator", term)
    return term(z, *args)


def has_rows(f: Callable) -> bool:
    """f declares per-row terms (per_example or row_terms)."""
    return isinstance(f, (PerExample, RowTerms))


def innermost(f: Callable) -> Callable:
    return f.term if isinstance(f, PerExample) else f


def row_values(f: Callable, z, *, one_hot: bool = False) -> jax.Array:
    """Per-example terms (n,) for a per_example f, else f(z) as a scalar."""
    if isinstance(f, (PerExample, RowTerms)):
        return f.values(z, one_hot=one_hot)
    return call(f, z, (), one_hot=one_hot)


def expand_rows(values, ndim: int) -> jax.Array:
    """Broadcast per-row values (n,) or a scalar against an array with ndim axes."""
    values = jnp.asarray(values)
    if values.ndim == 0:
        return values
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def check_num_classes(owner: str, f: Callable, num_classes: int) -> None:
    """A one-hot or categorical-linear f must agree with the distribution's K."""
    term = innermost(f)
    declared = term.num_classes if isinstance(term, (OneHot, LinearComposite)) else None
    if declared is not None and declared != num_classes:
        what = "num_classes" if isinstance(term, OneHot) else "A.shape[2]"
        raise ValueError(f"{owner}: f declares {what}={declared} but the Categorical has "
                         f"{num_classes} classes")


def check_rows(f: Callable, batch_shape) -> None:
    """per_example needs the batch shape to start with the example axis."""
    if isinstance(f, PerExample):
        f._check(jax.ShapeDtypeStruct(tuple(batch_shape), jnp.int32))
