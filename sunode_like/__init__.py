"""sunode_like: ODE and DAE solves with adjoint gradients, for Bayesian inference."""
from ._cvodes import AdjointSolver as AdjointSolver
from ._solver_base import DoseGradients as DoseGradients
from ._solver_base import Gradients as Gradients
from ._cvodes import Solver as Solver
from ._dae_problem import DAEProblem as DAEProblem
from ._doses import Doses as Doses
from ._idas import DAEAdjointSolver as DAEAdjointSolver
from ._idas import DAESolver as DAESolver
from ._errors import SolverError as SolverError
from ._events import Event as Event
from ._interpolation import Interpolated as Interpolated
from ._problem import SympyProblem as SympyProblem

__version__ = "0.1.0"
