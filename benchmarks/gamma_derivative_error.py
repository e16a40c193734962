"""Error of stochbp's implicit gamma derivative dz/dalpha against a float64 reference.

For shapes alpha in 1e-3..1e4 (log-spaced) and quantiles u (1e-6 .. 1 - 1e-6), z is
scipy's gammaincinv(alpha, u) and the reference dz/dalpha a 5-point finite difference
(step 1e-5 alpha) of scipy's float64 inverse (gammainccinv in the upper half), whose own
error is about 1e-10 relative. Prints, per shape and dtype, the largest and the median
relative error of gamma_sampling.standard_gamma_grad and which form of the derivative
served it (series, continued fraction, Temme). Points with z < 1e-30 are left out (the
log-space derivative serves them; tests/test_gamma_sampling.py checks one).

    PYTHONPATH=src python benchmarks/gamma_derivative_error.py
"""
import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from stochbp._src import gamma_sampling as gs

jax.config.update("jax_enable_x64", True)
SHAPES = np.array([1e-3, 1e-2, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 100.0, 1e3, 1e4])
QUANTILES = np.concatenate([[1e-6, 1e-4], np.linspace(0.01, 0.99, 99), [1 - 1e-4, 1 - 1e-6]])


def reference(a, u):
    inv = (lambda b: special.gammaincinv(b, u)) if u < 0.5 else \
        (lambda b: special.gammainccinv(b, 1.0 - u))
    h = 1e-5 * a
    return (-inv(a + 2 * h) + 8 * inv(a + h) - 8 * inv(a - h) + inv(a - 2 * h)) / (12 * h)


def main():
    print("| alpha | form(s) | float32 max | float32 median | float64 max | float64 median |")
    print("|---|---|---|---|---|---|")
    grad = jax.jit(gs.standard_gamma_grad)
    for a in SHAPES:
        z = special.gammaincinv(a, QUANTILES)
        keep = z > 1e-30
        z = z[keep]
        ref = np.array([reference(a, u) for u in QUANTILES[keep]])
        row = []
        for dtype in (jnp.float32, jnp.float64):
            got = np.asarray(grad(jnp.full(z.shape, a, dtype), jnp.asarray(z, dtype)),
                             np.float64)
            rel = np.abs(got - ref) / np.abs(ref)
            row += [rel.max(), np.median(rel)]
        a0_32 = gs._float_consts(jnp.float32)[0]
        a0_64 = gs._float_consts(jnp.float64)[0]
        forms = set()
        for a0 in (a0_32, a0_64):
            if a > a0:
                forms.add("Temme")
            else:
                forms.update(["series" if zz <= a + 1 else "fraction" for zz in z])
        print(f"| {a:g} | {', '.join(sorted(forms))} | " +
              " | ".join(f"{v:.1e}" for v in row) + " |")


if __name__ == "__main__":
    main()
