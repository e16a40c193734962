"""Discrete-latent generative models of the paper's Appendix B, their ELBO and IS bound.

All models describe binary 28x28 images x in {0, 1}^784 with a Bernoulli likelihood
p(x | .) = prod_o Bernoulli(x_o; sigmoid(logit_o)), log p = sum_o x_o l_o - softplus(l_o).
Weights are stored (out, in); "tanh MLP" layers are h = tanh(W h' + b). The
architectures follow Grathwohl et al. (2018) (who follow Tucker et al. 2017 and, for the
categorical models, Jang et al. 2016) as far as the papers describe them; the choices
we had to make ourselves are marked *ours*.

``sbn`` with ``layers=1`` -- linear sigmoid belief network, one stochastic layer of
``latent`` (200) Bernoulli units:
    prior      p(z)     = Bernoulli(sigmoid(a)), a learned (``prior``);
    decoder    p(x | z) = Bernoulli(sigmoid(V z + c));
    encoder    q(z | x) = Bernoulli(sigmoid(W x + b)).
``sbn`` with ``layers=2`` -- two linear stochastic layers of 200 units each:
    p(z2) = Bernoulli(sigmoid(a)), p(z1 | z2) = Bernoulli(sigmoid(V2 z2 + c2)),
    p(x | z1) = Bernoulli(sigmoid(V1 z1 + c1));
    q(z1 | x) = Bernoulli(sigmoid(W1 x + b1)), q(z2 | z1) = Bernoulli(sigmoid(W2 z1 + b2)).
``bernoulli_vae`` -- nonlinear: one stochastic layer of 200 Bernoulli units, and (*ours*,
following the "nonlinear" models of REBAR/RELAX) two deterministic hidden layers of
``hidden`` (200) tanh units on each side:
    q(z | x): x -> tanh 200 -> tanh 200 -> 200 logits;
    p(x | z): z -> tanh 200 -> tanh 200 -> 784 logits; p(z) = Bernoulli(sigmoid(a)),
    a learned (*ours*).
``categorical_linear`` -- one linear layer, ``variables`` d = 20 categorical variables of
``classes`` K = 10 classes, uniform prior p(z) = prod_j 1/K:
    q(z | x) = Categorical(softmax(W x + b)) per variable (W maps 784 -> d K logits);
    p(x | z) = Bernoulli(sigmoid(sum_j A[:, j, z_j] + c)), i.e. a linear map of the
    one-hot encoding (d K = 200 inputs) to 784 logits.
``categorical_vae`` -- the same latent space and prior, with the Bernoulli VAE's two
tanh layers of 200 units on each side (*ours*: the same depth as the Bernoulli VAE):
    q(z | x): x -> tanh 200 -> tanh 200 -> d K logits;
    p(x | z): one-hot z (200) -> tanh 200 -> tanh 200 -> 784 logits.

**The objective.** Per example, ELBO(x) = E_q[log p(x | z) + log p(z) - log q(z | x)].
q and every prior are factorised, so we take the parts that are expectations of
log-densities of factorised distributions analytically, and leave to the gradient
estimator only the part that needs it (*ours*; lower variance for every estimator, and
the same for all of them):

* one stochastic layer: ELBO = E_q[log p(x | z)] - KL(q(z | x) || p(z)), the KL between
  factorised Bernoulli (or categorical, against the uniform prior) distributions in
  closed form. The estimator sees f(z) = log p(x | z), declared as
  ``stochbp.per_example(stochbp.linear(g, A, c), X)`` with A the decoder's first
  (linear) layer, so the Fourier rules re-evaluate only one example's g per changed
  coordinate, on a rank-one update of the first layer's pre-activation.
* two stochastic layers: ELBO = H[q(z1 | x)] + E_{q(z1 | x)}[F(z1)] with
      F(z1) = log p(x | z1) + E_{q(z2 | z1)}[log p(z1 | z2)] - KL(q(z2 | z1) || p(z2)).
  The estimator is applied to the outer expectation over z1 ~ q(z1 | x). F depends on
  z1 only through V1 z1, W2 z1 and z1 itself, so it is declared ``stochbp.linear`` with
  A = [V1; W2; I] (1184 x 200): a bit flip is a rank-one update. The inner expectation
  over z2 is treated in one of two ways (:class:`Inner`), both unbiased for every
  parameter (tested against exact enumeration):

  - *nested* (rebar, relax -- estimators that differentiate F at relaxed z1, so F must
    be smooth in z1): inside F, an inner ``stochbp.expectation`` over
    z2 ~ q(z2 | z1) of log p(z1 | z2) (declared linear in z2, A = V2) with the same
    estimator, one inner sample, and one inner key per example shared by every
    evaluation of F for that example. The inner parameters (W2, b2, V2, c2, a) get
    their gradient from the inner estimator at the drawn z1; RELAX / tuned REBAR keep
    one control-variate state per layer.
  - *layer-wise* (fourier, arm, disarm -- estimators that only evaluate F at binary
    z1): F uses one inner sample z2 = 1[u2 < sigmoid(W2 z1 + b2)] from uniforms u2
    shared by all evaluations of F for the example (common random numbers, so the
    Fourier differences F(z1 with bit j = 1) - F(z1 with bit j = 0) are not swamped by
    inner noise), with the inner parameters held constant; their gradient comes from a
    second ``stochbp.expectation`` over q(z2 | z1) of log p(z1 | z2) (per example,
    linear in z2) at one independent draw z1 ~ q(z1 | x) per example, with the same
    estimator and S.

  **Cost** (per example and outer sample, L = 200). Layer-wise Fourier: F at L + 1 = 201
  points, each a rank-one update of the pre-activations V1 z1 (784) and W2 z1 (200)
  plus a 200 x 200 matvec for V2 z2 (together one (200 n x 200) @ (200 x 200) matrix
  product), 784 + 200 softplus terms and a 200-term KL, then the inner rule's L + 1
  evaluations at one z1: about 201 x 4 x 10^4 multiply-adds and 201 x 1184 softplus
  terms. Without chunk_size the substitutions go through ``stochbp.row_terms``
  (:func:`layerwise_rows`), each product of z1 its own rank-one update; the training
  step on a batch of 96 then takes about half the time of the per_example form with
  the stacked A (``benchmarks/scaling.py``; 190 against 396 ms at a load of 8 on 2
  CPU cores). The nested
  construction would run the inner Fourier rule inside every one of the 201 evaluations
  of F -- 201 x 201 inner evaluations, measured at 6.3 s per batch, 30 times slower,
  which is why Fourier uses the layer-wise form. rebar / relax evaluate F at 3 points,
  each with a 3-point inner estimate, plus the control-variate gradients (about 10 ms).

The test log-likelihood is the importance-sampling bound with M samples from q,
    log p(x) ~ log (1/M) sum_m p(x, z_m) / q(z_m | x),   z_m ~ q(. | x)
(z_m = (z1, z2) ancestrally for two layers); M = 1 is a single-sample ELBO estimate.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd

import stochbp

KINDS = ("sbn", "bernoulli_vae", "categorical_linear", "categorical_vae")
PIXELS = 784


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    kind: str  # one of KINDS
    layers: int = 1  # stochastic layers (sbn only: 1 or 2)
    latent: int = 200  # Bernoulli units per stochastic layer
    hidden: int = 200  # tanh units per deterministic layer (VAEs)
    variables: int = 20  # categorical d
    classes: int = 10  # categorical K
    pixels: int = PIXELS
    # examples per step when the Fourier rules evaluate their substitutions
    # (stochbp.per_example's chunk_size; None: the whole batch at once)
    chunk_size: Optional[int] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"model kind must be one of {KINDS}; got kind={self.kind!r}")
        if self.layers not in (1, 2) or (self.layers == 2 and self.kind != "sbn"):
            raise ValueError(f"layers must be 1 or 2 (2 only for the sbn); got "
                             f"layers={self.layers!r} for {self.kind}")
        for name in ("latent", "hidden", "variables", "pixels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer; got "
                                 f"{name}={getattr(self, name)!r}")
        if int(self.classes) < 2:
            raise ValueError(f"classes must be an integer >= 2; got classes={self.classes!r}")

    @property
    def categorical(self) -> bool:
        return self.kind.startswith("categorical")

    @property
    def nonlinear(self) -> bool:
        return self.kind.endswith("vae")


# ------------------------------------------------------------------ small pieces
def _clamp(dtype) -> float:
    """A logit T beyond which softplus(x) = x + e^-x rounds to x in ``dtype`` (e^-T below
    half an ulp of T, for float64 too) and below which e^T is finite: 40 for
    float32/64 and bfloat16, 10 for float16."""
    return 10.0 if jnp.finfo(dtype).max < 1e5 else 40.0


def _floating(x):
    """x as an array of a floating dtype (integers and bools go to the default float, as
    jax.nn.softplus takes them)."""
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(jnp.result_type(float))


def softplus(x):
    """log(1 + e^x) = log1p(e^m) + max(x - T, 0) with m = min(x, T), T = :func:`_clamp`.

    For x <= T the second term is 0 and the first is the definition; above T, log1p(e^T)
    rounds to T and the sum to x, which is softplus(x) to working precision. One exp, one
    log1p and four cheap operations per element (min, sub, max, add), all inside XLA's
    fused YNNPACK kernels on CPU, where each elementwise operation costs a fraction of an
    exp: 0.5 (x + |x|) + log1p(e^-|x|), the earlier form, takes five cheap ones, and
    ``jax.nn.softplus`` (a compare and a select) leaves the fused kernels and is about 3x
    slower. Accuracy in float32 equals both (2.9 ulp at most against float64; tested).
    The derivative by autodiff is e^m / (1 + e^m) below T and 1 above (min's and max's
    ties split 1/2, 1/2 at x = T): sigma(x) without the cancellation of 1 - (1 - sigma)
    that (x - m) in place of max(x - T, 0) would bring. e^m never overflows, so neither
    does the backward pass. softplus(-inf) = 0, softplus(nan) = nan."""
    x = _floating(x)
    t = _clamp(x.dtype)
    return jnp.log1p(jnp.exp(jnp.minimum(x, t))) + jnp.maximum(x - t, 0)


def log_sigmoid(x):
    """log sigmoid(x) = -softplus(-x) = min(x + T, 0) - log1p(e^-m), m = max(x, -T).

    The same construction as :func:`softplus`, mirrored (five cheap operations, where
    -softplus(-x) would take six)."""
    x = _floating(x)
    t = _clamp(x.dtype)
    return jnp.minimum(x + t, 0) - jnp.log1p(jnp.exp(-jnp.maximum(x, -t)))


def bernoulli_loglik(logits, x):
    """sum_o log Bernoulli(x_o; sigmoid(logits_o)) (x may be relaxed, in [0, 1])."""
    return jnp.sum(x * logits - softplus(logits), axis=-1)


def binary_loglik(logits, x):
    """:func:`bernoulli_loglik` for binary x in {0, 1} (data; never differentiated in x):
    x l - softplus(l) = -softplus((1 - 2x) l), since l - softplus(l) = -softplus(-l).

    One multiplication and a softplus per element instead of a multiplication, a
    subtraction and a softplus; the Fourier rules evaluate it at every substitution of
    every example (201 x 96 x 784 logits per step of the two-layer SBN). Its derivative in
    x is not the Bernoulli log-likelihood's (l), hence data only. x of any dtype (uint8
    pixels, bools) is cast to the logits' dtype first, so 1 - 2x cannot wrap around."""
    logits = _floating(logits)
    x = jnp.asarray(x).astype(logits.dtype)
    return -jnp.sum(softplus((1 - 2 * x) * logits), axis=-1)


def bernoulli_kl(l, a):
    """KL(Bernoulli(sigmoid(l)) || Bernoulli(sigmoid(a))), summed over the last axis.

    With p = sigmoid(l) and log sigmoid(-t) = log sigmoid(t) - t, the definition
    p (log sigmoid(l) - log sigmoid(a)) + (1 - p) (log sigmoid(-l) - log sigmoid(-a))
    collapses to log sigmoid(l) - log sigmoid(a) - sigmoid(-l) (l - a): one softplus and
    one sigmoid per element of l instead of a sigmoid and two softplus (the Fourier
    rule of the two-layer SBN evaluates it at L + 1 substitutions of every example).
    The sum of log sigmoid(a) is taken on a alone (the substitutions change l, not a).
    Sharing e^-l between log sigmoid(l) and sigmoid(-l) = e^-l / (1 + e^-l) would save
    one more exp per element, but its derivative by autodiff cancels two terms of size 1
    and was 5x less accurate in float32 (measured), so sigmoid stays jax.nn's."""
    a = jnp.asarray(a)
    if jnp.shape(a)[-1:] != jnp.shape(l)[-1:]:
        a = jnp.broadcast_to(a, jnp.shape(a)[:-1] + jnp.shape(l)[-1:])
    return (jnp.sum(log_sigmoid(l) - jax.nn.sigmoid(-l) * (l - a), axis=-1)
            - jnp.sum(log_sigmoid(a), axis=-1))


def bernoulli_entropy(l):
    p = jax.nn.sigmoid(l)
    return -jnp.sum(p * log_sigmoid(l) + (1 - p) * log_sigmoid(-l), axis=-1)


def bernoulli_logpmf(z, l):
    return jnp.sum(z * log_sigmoid(l) + (1 - z) * log_sigmoid(-l), axis=-1)


def categorical_kl_uniform(logits):
    """KL(Categorical(softmax(logits)) || uniform), summed over the variables."""
    logp = jax.nn.log_softmax(logits, -1)
    K = logits.shape[-1]
    return jnp.sum(jnp.exp(logp) * logp, axis=(-2, -1)) + logits.shape[-2] * math.log(K)


def check_binary(x, name: str = "x"):
    """A Bernoulli likelihood needs pixels in {0, 1}; checked when x is concrete."""
    try:
        arr = np.asarray(x)
    except (TypeError, jax.errors.TracerArrayConversionError):
        return x
    if arr.ndim != 2 or arr.shape[1] != PIXELS:
        raise ValueError(f"{name} must hold flattened 28x28 images, shape (n, {PIXELS}); "
                         f"got {name} with shape {arr.shape}")
    if not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ValueError(f"{name}: a Bernoulli likelihood needs binary pixels in {{0, 1}}; "
                         f"got values such as {bad.tolist()} (binarize the data first)")
    return x


def _dense(key, n_out, n_in, dtype):
    return {"w": jax.random.normal(key, (n_out, n_in), dtype) / math.sqrt(n_in),
            "b": jnp.zeros((n_out,), dtype)}


def _mlp(layers, h):
    """tanh hidden layers then a linear output layer; h has a leading batch axis."""
    for layer in layers[:-1]:
        h = jnp.tanh(h @ layer["w"].T + layer["b"])
    return h @ layers[-1]["w"].T + layers[-1]["b"]


def init_params(spec: ModelSpec, key, data_mean=None) -> dict:
    """Weights ~ N(0, 1/fan_in), biases 0, except the decoder's output bias: the logits
    of the training pixels' mean (clipped to [1e-3, 1 - 1e-3]) when given."""
    dtype = jnp.result_type(float)
    k = iter(jax.random.split(key, 12))
    L, H, P = spec.latent, spec.hidden, spec.pixels
    dK = spec.variables * spec.classes
    code = dK if spec.categorical else L
    out_bias = jnp.zeros((P,), dtype)
    if data_mean is not None:
        m = jnp.clip(jnp.asarray(data_mean, dtype), 1e-3, 1 - 1e-3)
        out_bias = jnp.log(m) - jnp.log1p(-m)
    if spec.nonlinear:
        params = {"enc": [_dense(next(k), H, P, dtype), _dense(next(k), H, H, dtype),
                          _dense(next(k), code, H, dtype)],
                  "dec_in": _dense(next(k), H, code, dtype),
                  "dec": [_dense(next(k), H, H, dtype), _dense(next(k), P, H, dtype)]}
        params["dec"][-1]["b"] = out_bias
    else:
        params = {"enc": [_dense(next(k), code, P, dtype)],
                  "dec_in": _dense(next(k), P, code, dtype)}
        params["dec_in"]["b"] = out_bias
    if spec.categorical:
        w = params["dec_in"]["w"]
        params["dec_in"]["w"] = w.reshape(w.shape[0], spec.variables, spec.classes)
    else:
        params["prior"] = jnp.zeros((L,), dtype)
    if spec.layers == 2:
        params["enc2"] = _dense(next(k), L, L, dtype)  # z1 -> logits of q(z2 | z1)
        params["dec2"] = _dense(next(k), L, L, dtype)  # z2 -> logits of p(z1 | z2)
    return params


def encoder_logits(spec: ModelSpec, params, x):
    """Logits of q(z | x) (of q(z1 | x) for two layers): (n, L) or (n, d, K)."""
    logits = _mlp(params["enc"], x)
    if spec.categorical:
        logits = logits.reshape(logits.shape[:-1] + (spec.variables, spec.classes))
    return logits


def posterior(spec: ModelSpec, logits):
    return nd.Categorical(logits=logits) if spec.categorical else nd.Bernoulli(logits=logits)


def _decoder_tail(spec, params):
    """g(u, x) = log p(x | z) given u = the decoder's first-layer pre-activation."""
    if spec.nonlinear:
        return lambda u, x: binary_loglik(_mlp(params["dec"], jnp.tanh(u)[None])[0], x)
    return binary_loglik


# ------------------------------------------------------------------ the estimator's f
@dataclasses.dataclass(frozen=True)
class Inner:
    """How a two-layer SBN treats its inner expectation over z2 ~ q(z2 | z1).

    ``nested=True``: F calls ``stochbp.expectation_with_state`` over z2 with
    ``estimator`` (and ``state``), so F is smooth in relaxed z1 -- needed by estimators
    that differentiate F at relaxed samples (rebar, relax). ``nested=False`` ("layer-wise",
    for estimators that only evaluate F at binary z1: fourier, arm, disarm): F takes a
    single inner sample by thresholding uniform noise shared by all evaluations for one
    example, and the inner gradient comes from a second call over q(z2 | z1) at one
    independent draw z1 ~ q(z1 | x) per example (see the module docstring).
    """

    estimator: Any
    state: Any = None  # RelaxState for rebar(tune=True) / relax, else None
    nested: bool = True


def _inner_f(params, z1):
    """log p(z1 | z2) as a function of z2, declared linear in z2 (A = V2)."""
    return stochbp.linear(lambda v: bernoulli_loglik(v, z1), params["dec2"]["w"],
                          params["dec2"]["b"])


def latent_term(spec: ModelSpec, params, inner: Optional[Inner] = None):
    """One example's part of the objective that the estimator sees, as a function of its
    (outer) latent row; a ``stochbp.linear`` in that row. It takes the example's data:
    x (one layer), (x, inner key) (two layers, nested) or (x, uniform noise u2) (two
    layers, layer-wise)."""
    if spec.layers == 1:
        return stochbp.linear(_decoder_tail(spec, params), params["dec_in"]["w"],
                              params["dec_in"]["b"])
    if inner is None:
        raise ValueError("a two-layer sbn needs inner=Inner(estimator, state, nested) for "
                         "its inner expectation over z2")
    L, P = spec.latent, spec.pixels
    dtype = params["dec_in"]["w"].dtype
    # layer-wise: the inner layer's parameters get their gradient from the second call
    p2 = params if inner.nested else jax.lax.stop_gradient(
        {k: params[k] for k in ("enc2", "dec2", "prior")})
    A = jnp.concatenate([params["dec_in"]["w"], p2["enc2"]["w"], jnp.eye(L, dtype=dtype)])
    b = jnp.concatenate([params["dec_in"]["b"], p2["enc2"]["b"], jnp.zeros((L,), dtype)])

    def g(u, data):
        x, noise = data
        ux, uq, z1 = u[:P], u[P:P + L], u[P + L:]
        if inner.nested:
            inner_value, _ = stochbp.expectation_with_state(
                _inner_f(p2, z1), nd.Bernoulli(logits=uq), noise, inner.state,
                estimator=inner.estimator, num_samples=1)
        else:  # z2 ~ q(z2 | z1) from the example's shared uniforms (common random numbers)
            # 1[u2 < sigmoid(uq)], compared on the logit scale (see layerwise_rows)
            z2 = (jnp.log(noise) - jnp.log1p(-noise) < uq).astype(u.dtype)
            inner_value = _inner_f(p2, z1)(z2)
        return binary_loglik(ux, x) + inner_value - bernoulli_kl(uq, p2["prior"])

    return stochbp.linear(g, A, b)


def batch_f(spec: ModelSpec, params, x, inner_key=None, inner: Optional[Inner] = None):
    """f(Z) = sum_i term(Z[i], data_i), a ``stochbp.per_example`` over the batch."""
    if spec.layers == 1:
        return stochbp.per_example(latent_term(spec, params), x, chunk_size=spec.chunk_size)
    if inner is not None and not inner.nested:
        noise = jax.random.uniform(inner_key, (x.shape[0], spec.latent), x.dtype)
        if spec.chunk_size is None:
            return layerwise_rows(spec, params, x, noise)
    else:
        noise = jax.random.split(inner_key, x.shape[0])
    return stochbp.per_example(latent_term(spec, params, inner), (x, noise),
                               chunk_size=spec.chunk_size)


def layerwise_rows(spec: ModelSpec, params, x, noise):
    """The layer-wise two-layer F of every example as one ``stochbp.row_terms``.

    The same per-example terms as ``per_example(latent_term(spec, params, inner), (x,
    noise))`` with a layer-wise ``inner``, written on the whole batch Z1 (n, L):

        F_i = log p(x_i | z1_i) + log p(z1_i | z2_i) - KL(q(z2 | z1_i) || p(z2)),
        z2_i = 1[logit(u2_i) < W2 z1_i + b2]  (= 1[u2_i < sigmoid(W2 z1_i + b2)]).

    Declared this way, the Bernoulli Fourier rule flips column j of every row at once
    (L + 1 calls of the terms for the whole batch) and ``substitution.py`` turns each of
    the three products of Z1 (V1, W2, and the identity) into its own rank-one update,
    where ``stochbp.linear`` with A = [V1; W2; I] updates the stacked 1184-vector and g
    slices it (measured slower on CPU: XLA fuses each slice with the whole stacked
    update). The logits of the uniforms are taken once per example, so the substituted
    evaluations compare instead of taking a sigmoid."""
    p2 = jax.lax.stop_gradient({k: params[k] for k in ("enc2", "dec2", "prior")})
    threshold = jnp.log(noise) - jnp.log1p(-noise)

    def terms(z1):
        ux = z1 @ params["dec_in"]["w"].T + params["dec_in"]["b"]
        uq = z1 @ p2["enc2"]["w"].T + p2["enc2"]["b"]
        z2 = (threshold < uq).astype(z1.dtype)
        v = z2 @ p2["dec2"]["w"].T + p2["dec2"]["b"]
        return binary_loglik(ux, x) + bernoulli_loglik(v, z1) - bernoulli_kl(uq, p2["prior"])

    return stochbp.row_terms(terms)


def inner_problem(spec: ModelSpec, params, z1):
    """The inner expectation over z2 ~ q(z2 | z1) for a batch of binary z1 (n, L):
    (f2, logits2), f2 = sum_i log p(z1_i | z2_i) declared per example and linear in z2."""
    l2 = z1 @ params["enc2"]["w"].T + params["enc2"]["b"]
    f2 = stochbp.per_example(stochbp.linear(bernoulli_loglik, params["dec2"]["w"],
                                            params["dec2"]["b"]), z1)
    return f2, l2


def analytic_part(spec: ModelSpec, params, logits):
    """The closed-form part of each example's ELBO: -KL(q || p(z)) for one layer (against
    the uniform prior for categorical z), H[q(z1 | x)] for two layers. Shape (n,)."""
    if spec.categorical:
        return -categorical_kl_uniform(logits)
    if spec.layers == 2:
        return bernoulli_entropy(logits)
    return -bernoulli_kl(logits, params["prior"])


def surrogate_elbo(spec: ModelSpec, params, x, key, *, estimator, num_samples: int = 1,
                   state=None, inner: Optional[Inner] = None):
    """(mean over the batch of the ELBO surrogate, state).

    Its value is a Monte Carlo estimate of the batch's mean ELBO (at relaxed samples for
    gumbel_softmax); its gradient with respect to the encoder parameters is
    ``estimator``'s, and with respect to the decoder and prior parameters ordinary
    backpropagation at the drawn samples."""
    check_binary(x)
    k_outer, k_inner, k_z1, k_layer2 = jax.random.split(key, 4)
    logits = encoder_logits(spec, params, x)
    f = batch_f(spec, params, x, k_inner, inner)
    value, state = stochbp.expectation_with_state(f, posterior(spec, logits), k_outer, state,
                                                  estimator=estimator,
                                                  num_samples=num_samples)
    value = value + jnp.sum(analytic_part(spec, params, logits))
    if spec.layers == 2 and not inner.nested:
        # gradient of the inner layer (enc2, dec2, prior) at one draw z1 ~ q(z1 | x)
        z1 = jax.lax.stop_gradient(posterior(spec, logits).sample(k_z1)).astype(logits.dtype)
        f2, l2 = inner_problem(spec, params, z1)
        e2, _ = stochbp.expectation_with_state(f2, nd.Bernoulli(logits=l2), k_layer2,
                                               inner.state, estimator=inner.estimator,
                                               num_samples=num_samples)
        e2 = e2 - jnp.sum(bernoulli_kl(l2, params["prior"]))
        value = value + (e2 - jax.lax.stop_gradient(e2))  # gradient only
    return value / x.shape[0], state


# ------------------------------------------------------------------ evaluation
def log_weights(spec: ModelSpec, params, x, key, num: int):
    """log p(x, z_m) - log q(z_m | x) for M = ``num`` draws z_m ~ q; shape (n, M)."""
    check_binary(x)
    logits = encoder_logits(spec, params, x)
    k1, k2 = jax.random.split(key)
    q = posterior(spec, logits)
    z = q.sample(k1, (num,))  # (M, n, L) or (M, n, d)
    if spec.categorical:
        logq = jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits, -1)[None],
                                           z[..., None], -1)[..., 0], -1)
        logprior = -spec.variables * math.log(spec.classes)
        zin = jax.nn.one_hot(z, spec.classes, dtype=logits.dtype)
        u = jnp.einsum("mnjk,pjk->mnp", zin, params["dec_in"]["w"]) + params["dec_in"]["b"]
    else:
        z = z.astype(logits.dtype)
        logq = bernoulli_logpmf(z, logits)
        if spec.layers == 2:
            l2 = z @ params["enc2"]["w"].T + params["enc2"]["b"]
            z2 = nd.Bernoulli(logits=l2).sample(k2).astype(logits.dtype)
            logq = logq + bernoulli_logpmf(z2, l2)
            v = z2 @ params["dec2"]["w"].T + params["dec2"]["b"]
            logprior = bernoulli_logpmf(z, v) + bernoulli_logpmf(z2, params["prior"])
        else:
            logprior = bernoulli_logpmf(z, params["prior"])
        u = z @ params["dec_in"]["w"].T + params["dec_in"]["b"]
    if spec.nonlinear:
        out = _mlp(params["dec"], jnp.tanh(u))
    else:
        out = u
    loglik = binary_loglik(out, x[None])
    return jnp.transpose(loglik + logprior - logq)  # (n, M)


def log_mean_exp(a, axis=-1):
    return jax.scipy.special.logsumexp(a, axis=axis) - math.log(a.shape[axis])


def is_loglik(spec: ModelSpec, params, x, key, num: int = 200):
    """Importance-sampling estimate of log p(x) per example, M = ``num`` samples from q."""
    return log_mean_exp(log_weights(spec, params, x, key, num))


def elbo_estimate(spec: ModelSpec, params, x, key):
    """Single-sample ELBO per example (log p(x, z) - log q(z | x), z ~ q): unbiased."""
    return log_weights(spec, params, x, key, 1)[:, 0]


def chunked(fn, x, key, chunk: int):
    """fn(x_chunk, key_chunk) -> (chunk,) over x in chunks of ``chunk`` rows (the last one
    padded), jitted-friendly; returns (n,)."""
    n = x.shape[0]
    chunk = max(1, min(chunk, n))
    pad = (-n) % chunk
    xs = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)])
    xs = xs.reshape((-1, chunk) + x.shape[1:])
    keys = jax.random.split(key, xs.shape[0])
    out = jax.lax.map(lambda a: fn(a[0], a[1]), (xs, keys))
    return out.reshape(-1)[:n]
