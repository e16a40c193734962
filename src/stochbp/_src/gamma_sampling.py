"""Gamma variates for vectorised hardware, with their implicit derivative.

Sampling (:func:`standard_gamma`): Marsaglia and Tsang's rejection method for shape
b >= 1 writes a proposal as G = dd * v with dd = b - 1/3, v = (1 + c x)^3,
c = 1 / sqrt(9 dd) and x standard normal, and accepts it when v > 0 and
    log u < x^2 / 2 + dd - dd v + dd log v,        u uniform on (0, 1).
Every proposal is accepted with probability >= 0.95 (the worst case is b = 1), so
instead of a loop per variate we draw ``PROPOSALS`` proposals for every entry at once
and keep the first accepted one (the value of the first success in a sequence of
independent trials has exactly the target law, whichever fixed order is used). The
entries whose proposals were all rejected (chance <= 0.05^PROPOSALS each) get fresh
proposals in a ``lax.while_loop``, one entry per group of GROUP consecutive entries per
round (found through a uint32 mask per group), until none is left, so the sampler stays
exact however unlucky the draw. Shapes a < 1 use the boost
Gamma(a) = Gamma(a + 1) U^(1/a), computed in log space: log z = log G + log(U) / a,
then z = exp(log z). Random words: Threefry-2x32 keyed by two words drawn from the
user's key, of the counters (position, round), both words of each block used, so a key
determines the result (also under vmap); uniforms are the midpoints of the 2^-23
(float32) or 2^-52 (float64) grid, never 0 or 1, and normals are sqrt(2) erfinv of
such uniforms on (-1, 1). docs/gamma_sampling.md says why it is laid out this way
(what XLA's CPU backend fuses, what it recomputes) and what the alternatives cost.

Underflow: where the true variate lies below the dtype's smallest normal number
(``finfo.tiny``; 1.2e-38 in float32) the result is ``tiny``, as ``jax.random.gamma``
does, so log z is finite. At a = 1e-3 this happens with probability
P(z < tiny) = tiny^a / Gamma(a + 1) ~ 0.92 in float32 (~0.49 in float64, where
tiny = 2.2e-308): a float32 Gamma(1e-3) variable is mostly below what float32 can
hold, whichever sampler is used.

Implicit derivative (:func:`standard_gamma_grad`): for z ~ Gamma(a, 1) drawn by
inverting the CDF P(a, z) (the regularised lower incomplete gamma function), holding
the uniform fixed gives dz/da = -(dP/da)(a, z) / p(z; a) with p the density. Three
forms, each free of the density (it cancels analytically):

* a <= A0 and z <= a + 1, the power series P = z^a e^-z / Gamma(a+1) (1 + U),
  U = sum_{n>=1} z^n / ((a+1)...(a+n)), gives
      dz/da = -(z / a) [(log z - psi(a + 1)) (1 + U) + dU/da];
  the n = 0 term is written with psi(a + 1) = psi(a) + 1/a so nothing of size 1/a^2
  cancels at small a.
* a <= A0 and z > a + 1, the continued fraction of the upper function
  Q = z^a e^-z / Gamma(a) T, T = 1/(z+1-a- 1(1-a)/(z+3-a- 2(2-a)/(z+5-a- ...))),
  evaluated from a fixed depth backwards, gives dz/da = z [T (log z - psi(a)) + dT/da]
  (dT/da by the derivative of the same recursion, carried along it step by step).
* a > A0, Temme's uniform expansion Q = erfc(eta sqrt(a/2)) / 2 + e^(-a eta^2/2)
  / sqrt(2 pi a) sum_k C_k(eta) a^-k with lambda = z/a, t = lambda - 1 and
  eta^2 / 2 = t - log(1 + t), sign(eta) = sign(t). Writing z p(z) =
  e^(-a eta^2/2) sqrt(a / 2 pi) / Gamma*(a) (Stirling: Gamma*(a) = Gamma(a) /
  (sqrt(2 pi / a) a^a e^-a)) the exponentials cancel and
      dz/da = lambda Gamma*(a) [t/eta - eta/2 + (t - eta^2/2) B - B / (2a) + dB/da],
  B = sum_k C_k(eta) a^-k, d/da at fixed z (da eta = -t / (a eta)). C_k are Taylor
  polynomials in eta for |eta| <= 1 and their closed forms beyond (both derived from
  the recursion C_k = (1/eta) C_{k-1}' + (-1)^k g_k / t, g_k Stirling's coefficients).

The measured error of each form against a float64 / mpmath reference is in
docs/gamma_sampling.md.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import digamma

PROPOSALS = 2  # Marsaglia-Tsang proposals drawn at once per variate
GROUP = 32  # fallback: entries per group, one bit each in a uint32 mask
FULL_UNROLL = 32  # dz/da recursions up to this length are written out in full
UNROLL = 8  # partial unrolling of the longer (float64) ones (compile time)


# ----------------------------------------------------------------------------- bits
def _uint_dtype(dtype):
    return jnp.uint64 if jnp.dtype(dtype).itemsize == 8 else jnp.uint32


def _mantissa_bits(dtype):
    return 52 if jnp.dtype(dtype).itemsize == 8 else 23


def _open_uniform(bits, dtype, signed=False):
    """Midpoints of the 2^-m grid: in (0, 1), or in (-1, 1) if ``signed``."""
    m = _mantissa_bits(dtype)
    shift = bits.dtype.itemsize * 8 - m
    grid = (bits >> shift).astype(dtype) + 0.5
    if signed:
        return grid * (2.0 ** (1 - m)) - 1.0
    return grid * (2.0 ** -m)


def _seed_words(key):
    """Two uint32 words keying the Threefry-2x32 hash, derived from the user's key (any
    PRNG implementation, typed or raw)."""
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    words = jax.random.bits(key, (2,), jnp.uint32)
    return words[0], words[1]


def _threefry2x32(k1, k2, x1, x2):
    """The Threefry-2x32 hash with 20 rounds (Salmon et al. 2011, the generator behind
    ``jax.random``), written out in full so that XLA fuses it with what consumes the
    words (JAX's CPU lowering loops over the rounds, writing the words to memory five
    times); equal bit for bit to ``jax.extend.random.threefry2x32_p``."""
    ks = (k1, k2, k1 ^ k2 ^ jnp.uint32(0x1BD11BDA))
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x1 = x1 + x2
            x2 = (x2 << jnp.uint32(r)) | (x2 >> jnp.uint32(32 - r))
            x2 = x1 ^ x2
        x1 = x1 + ks[(i + 1) % 3]
        x2 = x2 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    return x1, x2


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _blocks(seed, stream, rows, shape):
    """Threefry-2x32 of the counters (j, stream) for j = 0 .. rows * size - 1: two
    arrays of (rows, *shape) independent uint32 words. Every output word is used
    (jax.random.bits with a 32-bit dtype keeps the XOR of the two words of a block,
    half the bits). Built in ``shape`` itself, not flattened, so that XLA's loops over
    it stay vectorised when the shapes are broadcast into it."""
    full = (rows,) + tuple(shape)
    count = jnp.zeros(full, jnp.uint32)
    stride = 1
    for axis in range(len(full) - 1, -1, -1):
        count = count + lax.broadcasted_iota(jnp.uint32, full, axis) * jnp.uint32(stride)
        stride *= full[axis]
    second = jnp.broadcast_to(jnp.asarray(stream, jnp.uint32), full)
    return _threefry2x32(seed[0], seed[1], count, second)


def _words(seed, stream, shape, dtype):
    """Random words for variates of ``shape``: normals' and uniforms' words
    (PROPOSALS, *shape) each, and the boost's uniform (shape) in ``dtype``. float32: one block per proposal, the
    boost's 23 bits from the 9 low bits the proposals' uniforms leave unused in
    three words (one more block when fewer than three are available); float64: two
    blocks per proposal (a 64-bit word for the normal, one for the uniform), one for
    the boost."""
    p = PROPOSALS
    if jnp.dtype(dtype).itemsize == 8:
        hi, lo = _blocks(seed, stream, 2 * p + 1, shape)
        w = (hi.astype(jnp.uint64) << 32) | lo.astype(jnp.uint64)
        return w[:p], w[p:2 * p], _open_uniform(w[2 * p], dtype)
    xs, us = _blocks(seed, stream, max(p, 2), shape)
    low = jnp.uint32(0x1FF)
    spare = ((xs[0] & low) << 14) | ((us[0] & low) << 5) | (xs[1] & jnp.uint32(31))
    boost = (spare.astype(dtype) + 0.5) * (2.0 ** -23)
    return xs[:p], us[:p], boost


def _log1p_tail(y, dtype):
    """r(y) = log(1 + y) - y + y^2/2 - y^3/3 for y > -1, without cancellation near 0
    (the series -sum_{n>=4} (-y)^n / n for |y| < 1/4)."""
    terms = 22 if jnp.dtype(dtype).itemsize == 8 else 10
    near = jnp.abs(y) < 0.25
    yn = jnp.where(near, y, 0.0)
    poly = _horner([-((-1.0) ** n) / n for n in range(4, 4 + terms)], yn) * yn ** 4
    yf = jnp.where(near, 0.5, y)
    direct = jnp.log1p(yf) - yf * (1.0 - yf * (0.5 - yf / 3.0))
    return jnp.where(near, poly, direct)


def _marsaglia_tsang(xw, uw, b, dtype):
    """First accepted of the Marsaglia-Tsang proposals made from words xw, uw
    (PROPOSALS, n) for shapes b >= 1 (n,), and whether one was accepted.

    With y = c x and dd c^2 = 1/9 the test log u < x^2/2 + dd - dd v + dd log v
    (v = (1 + y)^3) is log u < 3 dd r(y), r(y) = log(1+y) - y + y^2/2 - y^3/3: the
    terms of size dd cancel analytically, so large shapes keep their accuracy."""
    dd = b - 1.0 / 3.0
    c = lax.rsqrt(9.0 * dd)
    out, found = None, None
    for i in range(xw.shape[0] - 1, -1, -1):  # walk back so the earliest success wins
        x = jnp.sqrt(jnp.asarray(2.0, dtype)) * lax.erf_inv(_open_uniform(xw[i], dtype, True))
        log_u = jnp.log(_open_uniform(uw[i], dtype))
        y = c * x
        positive = y > -1.0
        y = jnp.where(positive, y, 0.0)
        v = 1.0 + y
        ok = positive & (log_u < 3.0 * dd * _log1p_tail(y, dtype))
        val = dd * (v * v * v)
        out = val if out is None else jnp.where(ok, val, out)
        found = ok if found is None else ok | found
    return out, found


def _finish(g, a, small, boost, log_space, dtype):
    """The variate (or its log) from G ~ Gamma(b) and the boost's uniform: for a < 1,
    log z = log G + log(U) / a; z is clamped below at finfo.tiny."""
    tiny = jnp.finfo(dtype).tiny
    boost_log = jnp.log(boost) / jnp.where(small, a, 1.0)
    if log_space:
        return jnp.log(g) + jnp.where(small, boost_log, 0.0)
    return jnp.maximum(jnp.where(small, jnp.exp(jnp.log(g) + boost_log), g), tiny)


def _draw(key, a, dtype, log_space):
    """Gamma(a, 1) variates (or their logs) for a flat array of shapes a (n,)."""
    bad = ~((a > 0) & (a < jnp.inf))  # invalid shapes (<= 0, NaN, inf) give NaN
    small = a < 1
    b = jnp.where(bad, 1.0, jnp.where(small, a + 1.0, a))
    seed = _seed_words(key)
    xw, uw, boost = _words(seed, 0, a.shape, dtype)
    g, found = _marsaglia_tsang(xw, uw, b, dtype)
    # One output, NaN where no proposal was accepted (or the shape is invalid): with a
    # second output XLA would split the pass in two and hash the words twice.
    out = jnp.where(found & ~bad, _finish(g, a, small, boost, log_space, dtype), jnp.nan)
    n = a.shape[0]

    # Fallback: the entries are cut into groups of GROUP consecutive ones; a uint32 mask
    # per group marks those still without an accepted proposal. Each round takes the
    # lowest marked entry of every group (a gather of n / GROUP shapes), gives it fresh
    # proposals (and a fresh boost uniform: the first one is independent of whether the
    # first proposals were accepted), writes the accepted ones back (a scatter) and
    # clears their bits, until no bit is left. Each round costs O(n / GROUP), not O(n).
    groups = -(-n // GROUP)
    pad = groups * GROUP - n
    failed = jnp.pad(jnp.isnan(out) & ~bad, (0, pad)).reshape(groups, GROUP)
    slot_bit = jnp.left_shift(jnp.uint32(1), lax.iota(jnp.uint32, GROUP))
    masks = jnp.sum(jnp.where(failed, slot_bit, jnp.uint32(0)), axis=1, dtype=jnp.uint32)
    a_pad = jnp.pad(a, (0, pad), constant_values=1.0)
    first = lax.iota(jnp.int32, groups) * GROUP

    def cond(carry):
        return jnp.any(carry[1] != 0)

    def body(carry):
        out, masks, stream = carry
        lowest = masks & (~masks + jnp.uint32(1))  # lowest set bit (0 where none)
        slot = lax.population_count(lowest - jnp.uint32(1)).astype(jnp.int32)
        idx = first + jnp.minimum(slot, GROUP - 1)
        sub_a = a_pad[idx]
        sub_small = sub_a < 1
        sub_b = jnp.where(sub_small, sub_a + 1.0, sub_a)
        xw, uw, boost = _words(seed, stream, (groups,), dtype)
        val, ok = _marsaglia_tsang(xw, uw, sub_b, dtype)
        # One output again (NaN: rejected), written to memory before its three users
        # (else XLA recomputes the hash and the proposals in each of them).
        val = _materialise(jnp.where(ok, _finish(val, sub_a, sub_small, boost, log_space,
                                                 dtype), jnp.nan))
        hit = ~jnp.isnan(val) & (lowest != 0)
        out = out.at[jnp.where(hit, idx, n)].set(val, mode="drop")
        return out, jnp.where(hit, masks & ~lowest, masks), stream + jnp.uint32(1)

    out, _, _ = lax.while_loop(cond, body, (jnp.pad(out, (0, pad)), masks, jnp.uint32(1)))
    return out[:n]


def _materialise(x):
    """x itself, written to memory. A conditional on a value known only at run time
    (both branches give x) keeps XLA from fusing what produced x into what consumes
    it (``lax.optimization_barrier`` does not survive XLA's CPU pipeline). Used where
    fusing costs: a broadcast fused into the flat loops of the sampler makes XLA's CPU
    backend compute every index by division (10-30x slower than reading a flat array),
    and a fallback round's values, fused into each of their three users, would be
    hashed and proposed three times."""
    return lax.cond(jnp.isnan(x[0]), lambda y: y * 1, lambda y: y, x)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _sample(key, alpha, shape, dtype, log_space):
    """Jitted (inlined under an outer jit): called op by op, the sampler would dispatch
    each of its few hundred operations and its loop separately (seconds per call)."""
    a = jnp.broadcast_to(alpha, shape).astype(dtype).reshape(-1)
    if a.size == 0:
        return jnp.zeros(shape, dtype)
    if jnp.size(alpha) < a.size:
        a = _materialise(a)
    if a.size * (2 * PROPOSALS + 1) >= 2 ** 32:
        raise ValueError(f"at most {2 ** 32 // (2 * PROPOSALS + 1) - 1} variates per "
                         f"call; got shape {shape}")
    return _draw(key, a, dtype, log_space).reshape(shape)


# ----------------------------------------------------------------------------- dz/da
def _float_consts(dtype):
    """(A0, series terms, continued-fraction depth) for a dtype."""
    if jnp.dtype(dtype).itemsize == 8:
        return 40.0, 72, 64
    return 10.0, 28, 28


# Taylor coefficients (in eta, ascending) of Temme's C_0..C_4, derived with sympy from
# C_0 = 1/t - 1/eta and C_k = (1/eta) C_{k-1}' + (-1)^k g_k / t.
_TEMME_TAYLOR = np.array([
    [-0.3333333333333333, 0.08333333333333333, -0.014814814814814815,
     0.0011574074074074073, 0.0003527336860670194, -0.0001787551440329218,
     3.919263178522438e-05, -2.185448510679992e-06, -1.85406221071516e-06,
     8.296711340953087e-07, -1.7665952736826078e-07, 6.707853543401498e-09,
     1.0261809784240309e-08, -4.382036018453353e-09, 9.14769958223679e-10,
     -2.5514193994946248e-11, -5.830772132550426e-11, 2.4361948020667415e-11],
    [-0.001851851851851852, -0.003472222222222222, 0.0026455026455026454,
     -0.0009902263374485596, 0.00020576131687242798, -4.018775720164609e-07,
     -1.8098550334489977e-05, 7.64916091608111e-06, -1.6120900894563446e-06,
     4.647127802807434e-09, 1.378633446915721e-07, -5.752545603517705e-08,
     1.1951628599778148e-08, -1.7543241719747647e-11, -1.0091543710600413e-09,
     4.162792991842583e-10, -8.56390702649298e-11, 6.067215101604758e-14],
    [0.004133597883597883, -0.0026813271604938273, 0.0007716049382716049,
     2.0093878600823047e-06, -0.0001073665322636516, 5.2923448829120125e-05,
     -1.2760635188618728e-05, 3.423578734096138e-08, 1.3721957309062934e-06,
     -6.298992138380055e-07, 1.4280614206064242e-07, -2.0477098421990866e-10,
     -1.409252991086752e-08, 6.228974084922022e-09, -1.3670488396617114e-09,
     9.428356159014678e-13, 1.2872252400089318e-10, -5.5645956134363323e-11],
    [0.0006494341563786008, 0.00022947209362139917, -0.0004691894943952557,
     0.00026772063206283885, -7.561801671883977e-05, -2.396505113867297e-07,
     1.1082654115347302e-05, -5.6749528269915965e-06, 1.4230900732435883e-06,
     -2.7861080291528143e-11, -1.6958404091930278e-07, 8.099464905388083e-08,
     -1.9111168485973655e-08, 2.3928620439808118e-12, 2.0620131815488797e-09,
     -9.460496661855133e-10, 2.1541049775774907e-10, -1.388823336813903e-14],
    [-0.0008618882909167117, 0.0007840392217200666, -0.0002990724803031902,
     -1.4638452578843418e-06, 6.641498215465122e-05, -3.968365047179435e-05,
     1.1375726970678419e-05, 2.507497226237533e-10, -1.6954149536558305e-06,
     8.907507532205309e-07, -2.292934834000805e-07, 2.956794137544049e-11,
     2.8865829742708783e-08, -1.4189739437803219e-08, 3.4463580499464896e-09,
     -2.3024517174528067e-13, -3.9409233028046403e-10, 1.86023389685045e-10],
])


def _temme_closed(k, eta, t):
    """Closed forms of C_k(eta) (t = lambda - 1), accurate away from eta = 0."""
    it = 1.0 / t
    ie = 1.0 / eta
    if k == 0:
        return it - ie
    if k == 1:
        return -it / 12 - it ** 2 - it ** 3 + ie ** 3
    if k == 2:
        return it / 288 + it ** 2 / 12 + 25 * it ** 3 / 12 + 5 * it ** 4 + 3 * it ** 5 \
            - 3 * ie ** 5
    if k == 3:
        return (139 * it / 51840 - it ** 2 / 288 - 49 * it ** 3 / 288 - 77 * it ** 4 / 12
                - 105 * it ** 5 / 4 - 35 * it ** 6 - 15 * it ** 7 + 15 * ie ** 7)
    return (-571 * it / 2488320 - 139 * it ** 2 / 51840 + 221 * it ** 3 / 51840
            + 149 * it ** 4 / 288 + 2513 * it ** 5 / 96 + 1883 * it ** 6 / 12
            + 1365 * it ** 7 / 4 + 315 * it ** 8 + 105 * it ** 9 - 105 * ie ** 9)


def _horner(coeffs, x):
    out = jnp.zeros_like(x) + coeffs[-1]
    for c in coeffs[-2::-1]:
        out = out * x + c
    return out


def _eta_of_t(t):
    """eta with eta^2/2 = t - log1p(t), sign of t; a series near t = 0 (no cancellation),
    and (eta, t/eta)."""
    near = jnp.abs(t) < 0.25
    tn = jnp.where(near, t, 0.0)
    # (t - log1p t) / t^2 = sum_n (-t)^n / (n + 2)
    h = _horner([(-1.0) ** n / (n + 2) for n in range(28)], tn)
    eta_near = tn * jnp.sqrt(2.0 * h)
    ratio_near = lax.rsqrt(2.0 * h)
    tf = jnp.where(near, 1.0, t)
    eta_far = jnp.sign(tf) * jnp.sqrt(2.0 * (tf - jnp.log1p(tf)))
    eta = jnp.where(near, eta_near, eta_far)
    ratio = jnp.where(near, ratio_near, tf / eta_far)
    return eta, ratio


def _log_gamma_star(a):
    """log Gamma*(a) by Stirling's series (a >= 10)."""
    r = 1.0 / a
    r2 = r * r
    return r * (1 / 12 + r2 * (-1 / 360 + r2 * (1 / 1260 + r2 * (-1 / 1680 + r2 / 1188))))


def _grad_temme(a, log_z, order):
    z = jnp.exp(log_z)
    def b_of(a_):
        t_ = z / a_ - 1.0
        eta_, _ = _eta_of_t(t_)
        small = jnp.abs(eta_) <= 1.0
        es = jnp.where(small, eta_, 0.0)
        ef = jnp.where(small, 1.0, eta_)
        tf = jnp.where(small, 1.0, t_)
        total = jnp.zeros_like(a_)
        for k in range(order + 1):
            ck = jnp.where(small, _horner([float(c) for c in _TEMME_TAYLOR[k]], es),
                           _temme_closed(k, ef, tf))
            total = total + ck * a_ ** (-k)
        return total

    t = z / a - 1.0
    eta, ratio = _eta_of_t(t)
    b, db = jax.jvp(b_of, (a,), (jnp.ones_like(a),))
    h = ratio - 0.5 * eta + (t - 0.5 * eta * eta) * b - b / (2.0 * a) + db
    return jnp.exp(_log_gamma_star(a)) * h / a


def _steps(first, last, step, carry, full):
    """carry = step(n, carry) for n = first, first + 1, ..., last: written out in full
    (XLA fuses the whole recursion into one pass over the entries, arithmetic-bound) or,
    for the long float64 recursions, a loop unrolled UNROLL times (compiles faster;
    each iteration reads and writes the carried arrays)."""
    if full:
        for n in range(first, last + 1):
            carry = step(n, carry)
        return carry
    return lax.fori_loop(first, last + 1, step, carry, unroll=UNROLL)


def _grad_series(a, psi1, log_z, terms):
    """Power-series form; a and psi1 = psi(a + 1) may have fewer entries than log_z
    (they broadcast against it): whatever depends on a alone, the 1/(a + n) included,
    is computed once per shape."""
    z = jnp.exp(log_z)  # may underflow to 0: then U = dU = 0, the exact limit

    def step(n, carry):
        u, du, s, ds = carry
        inv = 1.0 / (a + n)
        zi = z * inv
        u = u * zi
        du = du * zi - u * inv
        return u, du, s + u, ds + du

    zero = jnp.zeros_like(z)
    _, _, s, ds = _steps(1, terms, step, (zero + 1.0, zero, zero, zero),
                         terms <= FULL_UNROLL)
    return -((log_z - psi1) * (1.0 + s) + ds) / a


def _grad_fraction(a, psi, log_z, depth):
    """Continued-fraction form, evaluated backwards with its derivative in a carried
    alongside (f_n = n (n - a) / D_n, D_n = z + 2n + 1 - a - f_{n+1}, so
    df_n/da = -(n + f_n dD_n/da) / D_n with dD_n/da = -1 - df_{n+1}/da); a and
    psi = psi(a) broadcast against log_z."""
    z = jnp.exp(log_z)

    def step(i, carry):
        f, df = carry
        n = depth + 1 - i  # i = 1..depth: n = depth..1
        r = 1.0 / (z + (2.0 * n + 1.0 - a) - f)
        dden = -1.0 - df
        f = (n * (n - a)) * r
        return f, -(n + f * dden) * r

    zero = jnp.zeros_like(z)
    f, df = _steps(1, depth, step, (zero, zero), depth <= FULL_UNROLL)
    t = 1.0 / (z + (1.0 - a) - f)
    dt = t * t * (1.0 + df)
    return t * (log_z - psi) + dt


def _skip_unless(mask, fn, *args):
    """fn(*args) where any entry needs it, else zeros (one select per entry)."""
    shape = mask.shape
    return lax.cond(jnp.any(mask), lambda: jnp.broadcast_to(fn(*args), shape),
                    lambda: jnp.zeros(shape, args[-1].dtype))


@jax.jit
def standard_gamma_log_grad(alpha, log_z):
    """d log z / d alpha of a Gamma(alpha, 1) variate z = exp(log_z) drawn by inversion
    (the implicit reparameterisation of the module docstring, divided by z); alpha
    broadcasts against log_z (quantities of alpha alone are computed once per entry of
    alpha), both of a floating dtype. Exact limits where z underflows."""
    dtype = jnp.result_type(alpha, log_z)
    a0, terms, depth = _float_consts(dtype)
    a = jnp.asarray(alpha, dtype)
    shape = jnp.broadcast_shapes(a.shape, jnp.shape(log_z))
    log_z = jnp.broadcast_to(jnp.asarray(log_z, dtype), shape)
    big_a = a > a0
    a_small = jnp.where(big_a, 1.0, a)
    psi1 = digamma(a_small + 1.0)  # psi(a + 1) and psi(a), once per shape
    psi = psi1 - 1.0 / a_small
    big = jnp.broadcast_to(big_a, shape)
    lower = ~big & (log_z <= jnp.log(a_small + 1.0))
    upper = ~big & ~lower
    l_lower = jnp.where(lower, log_z, -1.0)
    l_upper = jnp.where(upper, log_z, jnp.log(a_small + 2.0))
    a_big = jnp.broadcast_to(jnp.where(big_a, a, 2.0 * a0), shape)
    l_big = jnp.where(big, log_z, jnp.log(a_big))
    order = 4 if jnp.dtype(dtype).itemsize == 8 else 3
    g_lower = _skip_unless(lower, functools.partial(_grad_series, terms=terms),
                           a_small, psi1, l_lower)
    g_upper = _skip_unless(upper, functools.partial(_grad_fraction, depth=depth),
                           a_small, psi, l_upper)
    g_big = _skip_unless(big, functools.partial(_grad_temme, order=order), a_big, l_big)
    return jnp.where(big, g_big, jnp.where(lower, g_lower, g_upper))


def standard_gamma_grad(alpha, z):
    """dz/dalpha of Gamma(alpha, 1) variates z (alpha broadcasts against z)."""
    z = jnp.asarray(z)
    return z * standard_gamma_log_grad(alpha, jnp.log(z))


# ----------------------------------------------------------------------------- public
@jax.custom_jvp
def _with_implicit_grad(alpha, z):
    return z


@_with_implicit_grad.defjvp
def _with_implicit_grad_jvp(primals, tangents):
    alpha, z = primals
    t_alpha, _ = tangents
    return z, standard_gamma_grad(alpha, z) * t_alpha


@jax.custom_jvp
def _with_implicit_log_grad(alpha, log_z):
    return log_z


@_with_implicit_log_grad.defjvp
def _with_implicit_log_grad_jvp(primals, tangents):
    alpha, log_z = primals
    t_alpha, _ = tangents
    return log_z, standard_gamma_log_grad(alpha, log_z) * t_alpha


def _prepare(alpha, shape, dtype):
    alpha = jnp.asarray(alpha)
    if dtype is None:
        dtype = alpha.dtype if jnp.issubdtype(alpha.dtype, jnp.floating) \
            else jnp.result_type(float)
    alpha = alpha.astype(dtype)
    shape = tuple(alpha.shape if shape is None else shape)
    if jnp.broadcast_shapes(alpha.shape, shape) != shape:
        raise ValueError(f"alpha of shape {alpha.shape} does not broadcast to shape "
                         f"{shape}")
    return alpha, shape, dtype


def standard_gamma_log(key, alpha, shape=None, dtype=None):
    """log of Gamma(alpha, 1) variates, never underflowing (see :func:`standard_gamma`);
    differentiable in alpha (d log z / d alpha by the implicit reparameterisation)."""
    alpha, shape, dtype = _prepare(alpha, shape, dtype)
    log_z = _sample(key, lax.stop_gradient(alpha), shape, dtype, True)
    return _with_implicit_log_grad(alpha, log_z)


def standard_gamma(key, alpha, shape=None, dtype=None):
    """Gamma(alpha, 1) variates of ``shape`` (default: alpha's shape; alpha broadcasts
    against it), exact in distribution up to the clamp at ``finfo.tiny`` (module
    docstring), deterministic for a key, differentiable in alpha through the implicit
    reparameterisation dz/dalpha = -(dP/dalpha) / p."""
    alpha, shape, dtype = _prepare(alpha, shape, dtype)
    z = _sample(key, lax.stop_gradient(alpha), shape, dtype, False)
    return _with_implicit_grad(alpha, z)


__all__ = ["standard_gamma", "standard_gamma_log", "standard_gamma_grad",
           "standard_gamma_log_grad"]
