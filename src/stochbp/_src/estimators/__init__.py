from stochbp._src.estimators.base import Estimator
from stochbp._src.estimators.fourier import fourier, fourier_exponential
from stochbp._src.estimators.grg import grg
from stochbp._src.estimators.pathwise import pathwise
from stochbp._src.estimators.score_function import score_function
from stochbp._src.estimators.gumbel_softmax import gumbel_softmax
from stochbp._src.estimators.arm import arm, disarm
from stochbp._src.estimators.relax import RelaxState, rebar, relax

__all__ = ["Estimator", "fourier", "fourier_exponential", "grg", "pathwise", "score_function"]
__all__ += ["gumbel_softmax", "arm", "disarm", "rebar", "relax", "RelaxState"]
