"""Bias of the truncated Fourier series rules where the paper's series do not converge.

Cases (float64 throughout):

(a) Beta(alpha, beta) through its gamma representation (Eq. 21), f(z) = z and
    f(z) = (z - 0.3)^2, (alpha, beta) = (2, 3) and (6, 7), orders 1..10.
(b) Dirichlet(alpha), alpha = (2, 3, 4), f(z) = z_0^2 + z_1 (Eq. 22), orders 1..8.
(c) Laplace(mu, b), f(w) = log_sigmoid(a w) with a = 1, mu = 0.5 and
    b = 0.5, 1, 2, 4 (Eq. 19), orders 2, 4, ..., 16.

Columns of every table:

  mean     Monte Carlo mean of stochbp's fourier(order=N) gradient: K independent keys,
           each one stochbp.expectation call with S samples; the same keys at every order.
  stderr   standard deviation of the K per-key estimates / sqrt(K).
  E[rule]  the exact expectation of the truncated rule, i.e. what `mean` estimates,
           computed without sampling (closed form for (a), (b); quadrature for (c)).
  exact    the true gradient (closed form for (a), (b); quadrature for (c)).
  bias     E[rule] - exact: the systematic error of truncating at order N.
  mc-bias  mean - exact, the measured counterpart (its noise is about stderr).

For (a) and (b) the n-th expected derivative is C_n E[S^-n] with S ~ Gamma(sum alpha)
independent of z, so it is infinite once n >= sum(alpha) ("inf" rows), and its
variance is infinite once 2n >= sum(alpha) (flag "var=inf": there stderr is not a
valid error bar and the Monte Carlo mean converges slowly or not at all).

    PYTHONPATH=src python benchmarks/series_bias.py [--keys 20] [--samples 5000] [--json out.json]
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as nd  # noqa: E402
import scipy  # noqa: E402
from jax.scipy.special import gammaln  # noqa: E402
from scipy import integrate  # noqa: E402

# quad warns about roundoff for the high derivatives; laplace_crosscheck() verifies
# those integrals by an independent formula and the script prints the gap.
warnings.filterwarnings("ignore", category=integrate.IntegrationWarning)

import stochbp  # noqa: E402


# --------------------------------------------------------------------------------------
# Monte Carlo: per-key gradients of stochbp's Fourier rule.
# --------------------------------------------------------------------------------------
def mc_gradient(make_dist, params, f, order, keys, num_samples):
    """Per-key fourier(order) gradients w.r.t. the tuple ``params``: array (K, P)."""
    est = stochbp.fourier(order=order)

    def objective(params, key):
        return stochbp.expectation(f, make_dist(*params), key, estimator=est,
                                   num_samples=num_samples)

    grad = jax.jit(jax.grad(objective))
    rows = []
    for key in keys:
        g = grad(params, key)
        rows.append(np.concatenate([np.ravel(np.asarray(t)) for t in g]))
    return np.asarray(rows)


# --------------------------------------------------------------------------------------
# (a), (b): exact expectations for polynomial f of a Dirichlet (Beta = 2 components).
#
# zeta_k ~ Gamma(alpha_k, 1), S = sum zeta, z = zeta / S; S and z are independent.
# To differentiate h = f(z) n times in zeta_k, eliminate z_k = 1 - sum_{i != k} z_i:
# each remaining monomial z^m = prod_{i != k} zeta_i^{m_i} / S^{|m|} depends on zeta_k
# only through S, so d^n/dzeta_k^n z^m = (-1)^n (|m|)_n z^m / S^n ((x)_n the rising
# factorial) and E[d^n h / dzeta_k^n] = C_n E[S^-n] with C_n = sum_m c_m (-1)^n
# (|m|)_n E[z^m], E[S^-n] = Gamma(s - n) / Gamma(s) for n < s = sum alpha, else +inf.
# --------------------------------------------------------------------------------------
Poly = dict  # exponent tuple -> coefficient


def poly_mul(p: Poly, q: Poly) -> Poly:
    out: Poly = {}
    for (e1, c1), (e2, c2) in itertools.product(p.items(), q.items()):
        e = tuple(a + b for a, b in zip(e1, e2))
        out[e] = out.get(e, 0.0) + c1 * c2
    return out


def eliminate(p: Poly, k: int) -> Poly:
    """Substitute z_k = 1 - sum_{i != k} z_i."""
    K = len(next(iter(p)))
    sub: Poly = {tuple(0 for _ in range(K)): 1.0}
    for i in range(K):
        if i != k:
            sub[tuple(int(j == i) for j in range(K))] = -1.0
    out: Poly = {}
    for e, c in p.items():
        term: Poly = {tuple(0 if j == k else e[j] for j in range(K)): c}
        for _ in range(e[k]):
            term = poly_mul(term, sub)
        for e2, c2 in term.items():
            out[e2] = out.get(e2, 0.0) + c2
    return out


def dirichlet_moment(alpha, m):
    """E[prod z_i^{m_i}] for z ~ Dirichlet(alpha) (jax, differentiable in alpha)."""
    alpha = jnp.asarray(alpha)
    m = jnp.asarray(m, alpha.dtype)
    s = jnp.sum(alpha)
    return jnp.exp(gammaln(s) - gammaln(s + jnp.sum(m))
                   + jnp.sum(gammaln(alpha + m) - gammaln(alpha)))


def poly_expectation(p: Poly, alpha):
    return sum(c * dirichlet_moment(alpha, e) for e, c in p.items())


def rising(x: int, n: int) -> float:
    return float(np.prod([x + i for i in range(n)])) if n > 0 else 1.0


def expected_rule_dirichlet(p: Poly, alpha, max_order):
    """E[truncated rule] for orders 1..max_order: array (max_order, K), +-inf allowed."""
    alpha = np.asarray(alpha, float)
    s = alpha.sum()
    out = np.zeros((max_order, len(alpha)))
    for k in range(len(alpha)):
        q = eliminate(p, k)
        finite, divergent = 0.0, None
        for n in range(1, max_order + 1):
            C = sum(c * (-1) ** n * rising(sum(e), n) * float(dirichlet_moment(alpha, e))
                    for e, c in q.items())
            if n < s:
                finite += C * math.exp(math.lgamma(s - n) - math.lgamma(s)) / n
            elif C != 0.0:
                # Given S the rule's conditional mean is sum_n (C_n / n) S^-n; as S -> 0
                # the highest order dominates, so the mean is +-inf with C_N's sign.
                divergent = math.copysign(math.inf, C)
            out[n - 1, k] = finite if divergent is None else divergent
    return out


def exact_grad_dirichlet(p: Poly, alpha):
    return np.asarray(jax.grad(lambda a: poly_expectation(p, a))(jnp.asarray(alpha, float)))


# --------------------------------------------------------------------------------------
# (c): Laplace and log-sigmoid by quadrature.
# d^n/dx^n log_sigmoid(x) = P_n(sigmoid(x)) with P_1(s) = 1 - s and
# P_{n+1}(s) = P_n'(s) s (1 - s), because sigmoid' = s (1 - s).
# --------------------------------------------------------------------------------------
def log_sigmoid_derivative_polys(max_order):
    P = np.polynomial.Polynomial
    polys = [None, P([1.0, -1.0])]
    s1ms = P([0.0, 1.0, -1.0])
    for _ in range(max_order - 1):
        polys.append(polys[-1].deriv() * s1ms)
    return polys


def laplace_quad(g, mu, b):
    """E[g(w)] for w ~ Laplace(mu, b), split at the density's kink."""
    dens = lambda w: np.exp(-abs(w - mu) / b) / (2 * b)  # noqa: E731
    opts = dict(limit=400, epsabs=0.0, epsrel=1e-13)
    lo = integrate.quad(lambda w: g(w) * dens(w), -np.inf, mu, **opts)[0]
    hi = integrate.quad(lambda w: g(w) * dens(w), mu, np.inf, **opts)[0]
    return lo + hi


def laplace_crosscheck(a, mu, b, rule_b):
    """Independent check of E[rule] for the b-gradient, by integrating by parts.

    Twice per step on each side of mu: E[f^(2m)] b^(2m) = E[f] - sum_{k<m} b^(2k)
    f^(2k)(mu), so the m-th term of the b-gradient is (2/b) times the tail of the
    (divergent) series E[f] = sum_k b^(2k) f^(2k)(mu). Returns the max relative gap.
    """
    polys = log_sigmoid_derivative_polys(2 * len(rule_b))
    sig = 0.5 * (1.0 + np.tanh(0.5 * a * mu))
    fk = [-np.logaddexp(0.0, -a * mu)] + [a ** n * polys[n](sig) for n in
                                           range(1, 2 * len(rule_b) + 1)]
    Ef = laplace_quad(lambda w: -np.logaddexp(0.0, -a * w), mu, b)
    terms = [(2 / b) * (Ef - sum(b ** (2 * k) * fk[2 * k] for k in range(m)))
             for m in range(1, len(rule_b) + 1)]
    return float(np.max(np.abs(np.cumsum(terms) - rule_b)
                        / np.maximum(1.0, np.abs(rule_b))))


def laplace_exact(a, mu, b, max_order):
    f = lambda w: -np.logaddexp(0.0, -a * w)  # noqa: E731
    d_mu = laplace_quad(lambda w: f(w) * np.sign(w - mu) / b, mu, b)
    d_b = laplace_quad(lambda w: f(w) * (abs(w - mu) / b ** 2 - 1.0 / b), mu, b)
    polys = log_sigmoid_derivative_polys(max_order)
    sig = lambda x: 0.5 * (1.0 + np.tanh(0.5 * x))  # noqa: E731
    # mean derivatives E[f^(n)], n = 1..max_order
    Ed = [laplace_quad(lambda w, n=n: a ** n * polys[n](sig(a * w)), mu, b)
          for n in range(1, max_order + 1)]
    # rule: d mu -> E[f'] at every order; d b -> sum_m 2 b^(2m-1) E[f^(2m)] (c_2m = b^2m/m)
    rule_b = np.cumsum([2 * b ** (n - 1) * Ed[n - 1] if n % 2 == 0 else 0.0
                        for n in range(1, max_order + 1)])
    rule_mu = np.full(max_order, Ed[0])
    return np.array([d_mu, d_b]), np.stack([rule_mu, rule_b], axis=1)


# --------------------------------------------------------------------------------------
# Tables.
# --------------------------------------------------------------------------------------
def fmt(x):
    if not np.isfinite(x):
        return f"{x:>11}"
    return f"{x:>11.4g}" if abs(x) < 1e5 else f"{x:>11.3e}"


def print_table(title, param_names, orders, mc, rule, exact, notes):
    """mc: (len(orders), K, P); rule: (len(orders), P); exact: (P,)."""
    print(f"\n{title}")
    head = (f"{'order':>5} {'param':>6} {'mean':>11} {'stderr':>11} {'E[rule]':>11} "
            f"{'exact':>11} {'bias':>11} {'mc-bias':>11}  note")
    print(head)
    print("-" * len(head))
    print("  (* = order with the smallest |bias| for that parameter)")
    rows = []
    abs_bias = np.abs(rule - exact[None, :])
    best = np.argmin(np.where(np.isfinite(abs_bias), abs_bias, np.inf), axis=0)
    for i, n in enumerate(orders):
        K = mc.shape[1]
        mean = mc[i].mean(axis=0)
        se = mc[i].std(axis=0, ddof=1) / np.sqrt(K)
        for j, pname in enumerate(param_names):
            bias = rule[i, j] - exact[j]
            row = dict(order=n, param=pname, mean=float(mean[j]), stderr=float(se[j]),
                       expected_rule=float(rule[i, j]), exact=float(exact[j]),
                       bias=float(bias), mc_bias=float(mean[j] - exact[j]),
                       note=notes[i], min_abs_bias=bool(best[j] == i))
            rows.append(row)
            mark = "*" if best[j] == i else " "
            print(f"{n:>5} {pname:>6} {fmt(mean[j])} {fmt(se[j])} {fmt(rule[i, j])} "
                  f"{fmt(exact[j])} {fmt(bias)}{mark}{fmt(mean[j] - exact[j])}  "
                  f"{notes[i] if j == 0 else ''}")
    return rows


def gamma_notes(orders, s):
    notes = []
    for n in orders:
        if n >= s:
            notes.append(f"n>=sum(alpha)={s:g}: E infinite")
        elif 2 * n >= s:
            notes.append("var=inf")
        else:
            notes.append("")
    return notes


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # "inf", "-inf", "nan"
    return obj


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=20, help="independent keys K per order")
    p.add_argument("--samples", type=int, default=5000, help="samples S per key")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.keys < 2 or args.samples < 1:
        p.error("need --keys >= 2 and --samples >= 1")
    t_start = time.perf_counter()
    keys = list(jax.random.split(jax.random.key(args.seed), args.keys))
    print(f"jax {jax.__version__}, numpyro {numpyro.__version__}, scipy {scipy.__version__}, "
          f"python {platform.python_version()}, x64={jax.config.jax_enable_x64}")
    print(f"Monte Carlo: K = {args.keys} keys x S = {args.samples} samples per order "
          f"(same keys at every order)")
    results = {"settings": {"keys": args.keys, "samples": args.samples, "seed": args.seed},
               "versions": {"jax": jax.__version__, "numpyro": numpyro.__version__,
                            "scipy": scipy.__version__}, "cases": []}

    # (a) Beta: f(z) = z  ->  poly {z0: 1}; f(z) = (z - 0.3)^2 -> z0^2 - 0.6 z0 + 0.09.
    beta_fs = [("z", lambda z: z, {(1, 0): 1.0}),
               ("(z-0.3)^2", lambda z: (z - 0.3) ** 2,
                {(2, 0): 1.0, (1, 0): -0.6, (0, 0): 0.09})]
    orders = list(range(1, 11))
    for (al, be), (fname, f, poly) in itertools.product([(2.0, 3.0), (6.0, 7.0)], beta_fs):
        params = (jnp.asarray(al), jnp.asarray(be))
        mc = np.stack([mc_gradient(nd.Beta, params, f, n, keys, args.samples)
                       for n in orders])
        rule = expected_rule_dirichlet(poly, [al, be], max(orders))
        exact = exact_grad_dirichlet(poly, [al, be])
        title = (f"(a) Beta({al:g}, {be:g}), f(z) = {fname}; gradient w.r.t. "
                 f"(alpha, beta); alpha+beta = {al + be:g}")
        rows = print_table(title, ["alpha", "beta"], orders, mc, rule, exact,
                           gamma_notes(orders, al + be))
        results["cases"].append({"case": "beta", "alpha": al, "beta": be, "f": fname,
                                 "rows": rows})

    # (b) Dirichlet(2, 3, 4), f(z) = z0^2 + z1.
    alpha = [2.0, 3.0, 4.0]
    poly = {(2, 0, 0): 1.0, (0, 1, 0): 1.0}
    f = lambda z: z[0] ** 2 + z[1]  # noqa: E731
    orders = list(range(1, 9))
    mc = np.stack([mc_gradient(lambda c: nd.Dirichlet(c), (jnp.asarray(alpha),), f, n,
                               keys, args.samples) for n in orders])
    rule = expected_rule_dirichlet(poly, alpha, max(orders))
    exact = exact_grad_dirichlet(poly, alpha)
    rows = print_table("(b) Dirichlet(2, 3, 4), f(z) = z0^2 + z1; gradient w.r.t. alpha; "
                       "sum(alpha) = 9", ["a0", "a1", "a2"], orders, mc, rule, exact,
                       gamma_notes(orders, sum(alpha)))
    results["cases"].append({"case": "dirichlet", "alpha": alpha, "f": "z0^2 + z1",
                             "rows": rows})

    # (c) Laplace(mu, b), f(w) = log_sigmoid(a w).
    a, mu = 1.0, 0.5
    orders = list(range(2, 17, 2))
    radius = math.hypot(math.pi, a * mu) / a
    for b in (0.5, 1.0, 2.0, 4.0):
        f = lambda w: jax.nn.log_sigmoid(a * w)  # noqa: E731
        params = (jnp.asarray(mu), jnp.asarray(b))
        mc = np.stack([mc_gradient(nd.Laplace, params, f, n, keys, args.samples)
                       for n in orders])
        exact, rule_all = laplace_exact(a, mu, b, max(orders))
        rule = rule_all[np.asarray(orders) - 1]
        gap = laplace_crosscheck(a, mu, b, rule_all[1::2, 1])
        title = (f"(c) Laplace(mu={mu:g}, b={b:g}), f(w) = log_sigmoid({a:g} w); "
                 f"b*a = {b * a:g} ({'<' if b * a < math.pi else '>='} pi); Taylor radius "
                 f"of f at mu = {radius:.3f}")
        # Only b's coefficients c_2m = b^2m / m are truncated: the mu-gradient uses
        # c_1 = mu alone and is exact at every order, so it gets one summary line.
        rows = print_table(title, ["b"], orders, mc[:, :, 1:], rule[:, 1:], exact[1:],
                           [""] * len(orders))
        mu_mean, mu_se = mc[:, :, 0].mean(axis=1), mc[:, :, 0].std(axis=1, ddof=1)
        mu_se = mu_se / np.sqrt(mc.shape[1])
        mu_bias = float(np.max(np.abs(rule[:, 0] - exact[0])))
        print(f"    mu-gradient (exact at every order): mean {mu_mean[-1]:.5g} +- "
              f"{mu_se[-1]:.2g}, exact {exact[0]:.5g}, max |bias| over orders "
              f"{mu_bias:.1e}")
        print(f"    E[rule] for b: quadrature vs integration by parts, max relative "
              f"gap {gap:.1e}")
        results["cases"].append({
            "case": "laplace", "a": a, "mu": mu, "b": b, "f": "log_sigmoid(a w)",
            "rows": rows, "mu_gradient": {
                "mean": mu_mean.tolist(), "stderr": mu_se.tolist(),
                "exact": float(exact[0]), "max_abs_bias": mu_bias},
            "crosscheck_rel_gap": gap})

    total = time.perf_counter() - t_start
    print(f"\nTotal runtime {total:.1f} s")
    results["total_runtime_s"] = total
    if args.json:
        with open(args.json, "w") as fh:  # strict JSON: infinities become strings
            json.dump(_json_safe(results), fh, indent=2, allow_nan=False)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
