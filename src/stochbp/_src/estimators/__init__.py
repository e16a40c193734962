"""Every estimator factory, the protocol and the state types."""
from stochbp._src.estimators.base import EmptyState, Estimator, register_estimator
from stochbp._src.estimators.fourier import fourier, fourier_exponential
from stochbp._src.estimators.grg import grg
from stochbp._src.estimators.pathwise import pathwise
from stochbp._src.estimators.score_function import MovingAverageState, score_function
from stochbp._src.estimators.gumbel_softmax import gumbel_softmax
from stochbp._src.estimators.arm import arm, disarm
from stochbp._src.estimators.arsm import arsm
from stochbp._src.estimators.rao_blackwell import rao_blackwell_topk
from stochbp._src.estimators.unordered_set import unordered_set
from stochbp._src.estimators.relax import ControlInputs, RelaxState, rebar, relax
from stochbp._src.estimators.measure_valued import measure_valued
from stochbp._src.estimators.delta_method import delta_method
from stochbp._src.estimators.mixture_marginal import MixtureMarginal, mixture_marginal

__all__ = ["ControlInputs", "EmptyState", "Estimator", "delta_method", "MovingAverageState", "RelaxState", "arm", "arsm", "disarm",
           "fourier", "fourier_exponential", "grg", "gumbel_softmax", "measure_valued",
           "MixtureMarginal", "mixture_marginal",
           "pathwise", "rao_blackwell_topk", "rebar",
           "register_estimator", "relax", "score_function", "unordered_set"]
