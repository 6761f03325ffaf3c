"""sunode's module path ``sunode.solver``: the CVODES solvers and `SolverError`."""
from ._cvodes import AdjointSolver as AdjointSolver
from ._cvodes import Solver as Solver
from ._errors import SolverError as SolverError
