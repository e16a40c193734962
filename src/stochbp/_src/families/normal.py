"""Normal (independent coordinates): Eq. 15 with a diagonal covariance.

log phi(w) = i mu w - sigma^2 w^2 / 2, so the CGF coefficients are c_1 = mu and
c_2 = sigma^2 / 2 and the rule is
    grad E[f] = grad mu * E[f'(z)] + grad(sigma^2) / 2 * E[f''(z)]   (Bonnet / Price),
exact with two derivatives of f.
"""
import numpyro.distributions as nd

from stochbp._src import checks
from stochbp._src.families.base import register
from stochbp._src.families.coordinate import CoordinateFamily, stack_orders


class NormalFamily(CoordinateFamily):
    name = "Normal"
    types = (nd.Normal,)
    max_order = 2
    reparameterized = True

    def check(self, d):
        checks.finite("Normal", "loc", d.loc)
        checks.positive("Normal", "scale", d.scale)

    def coefficients(self, d, order):
        terms = [d.loc, 0.5 * d.scale ** 2][:order]
        return stack_orders(terms, d.batch_shape)

    def cgf(self, d, t):
        return d.loc * t + 0.5 * (d.scale * t) ** 2


register(NormalFamily())
