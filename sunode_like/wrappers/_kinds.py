"""The two kinds of problem the Ops solve, ODEs and DAEs: what differs.

A kind knows the keywords its Ops accept (`keywords`, from the option declarations), the
free initial states, and how to create the C solver pool from `pool_arguments` (`Pool`).
Option checks and defaults are `pool_arguments`'; everything else (the pool's input checks
and gradient math in ``csrc/sl_pool.c``, the Ops, the numba dispatch) is written once for
both kinds.
"""
import numpy as np

from .._cvodes import AdjointSolver, Solver
from .._dae_problem import DAEProblem
from .._idas import DAEAdjointSolver, DAESolver, c_dae
from .._options import accepted
from .._problem import SympyProblem
from .._solver_base import POOL_STRUCTS, pool_arguments
from .._sundials import ffi, lib
from .._sunode_compat import from_sunode


class Pool:
    """A C solver pool (``ptr``, registered under ``key``) over the checked options and C
    structs of `pool_arguments`, which it keeps (the pool's model points into their arrays)."""

    def __init__(self, kind, problem, options, mode, key, sens_doses=0):
        self.kind, self.problem, self.options, self.mode = kind, problem, options, mode
        self.arguments = pool_arguments(problem, mode, options, sens_doses)
        out = ffi.new("sl_pool **")
        flag = kind.create(self.arguments, out)
        self.ptr = out[0]
        if flag:
            lib.sl_pool_free(self.ptr)
            if flag == lib.SL_MEM_FAIL:
                raise MemoryError("could not allocate the solver pool")
            raise RuntimeError(f"sl_pool_create failed with flag {flag}: the sensitivities do not "
                               f"match the problem (an internal error; please report).")
        lib.sl_registry_set(key, self.ptr)
        self._solver = None
        # Pools live as long as the process: compiled functions find them by key at any time.

    @property
    def solver(self):
        """A Python solver with the pool's options (for `solve_ivp`'s result), built on first
        use: Ops that only run in a graph never build one. It gets the options given and
        those whose Ops' default differs (a default given explicitly can be refused, as
        linear_solver with solver="ERK")."""
        if self._solver is None:
            values = self.arguments.values
            options = {option.name: values[option.name]
                       for option in accepted(self.problem.kind, POOL_STRUCTS[self.mode], ops=True)
                       if option.name in self.options or option.op_default is not None}
            self._solver = self.kind.solvers[self.mode](self.problem, **options)
        return self._solver


class _Kind:
    def options(self, solver_kwargs):
        """The Op's solver options as given (sunode's names translated); `pool_arguments`
        checks them and fills in the defaults when the Op creates its pool."""
        return from_sunode(solver_kwargs or {})

    def keywords(self, mode):
        """The options the Ops of ``mode`` accept."""
        return {option.name for option in accepted(self.kind, POOL_STRUCTS[mode], ops=True)}


class OdeKind(_Kind):
    """dy/dt = f(t, y, p) (`SympyProblem`); every entry of y0 is free."""

    noun, kind = "an ODE", "ode"
    problem_type = SympyProblem
    solvers = {"adjoint": AdjointSolver, "sens": Solver}

    def free_initial_states(self, problem):
        return np.arange(problem.n_states)

    def create(self, arguments, out):
        return lib.sl_pool_create(*arguments[:6], out)


class DaeKind(_Kind):
    """F(t, y, y', p) = 0 (`DAEProblem`) on IDAS; the differential part of y0 is free, its
    algebraic entries are guesses that IDACalcIC replaces."""

    noun, kind = "a DAE", "dae"
    problem_type = DAEProblem
    solvers = {"adjoint": DAEAdjointSolver, "sens": DAESolver}

    def free_initial_states(self, problem):
        return problem.differential_indices

    def create(self, arguments, out):
        # The pool makes y' consistent at output times itself (time derivatives for
        # dL/dtvals): it needs dF/dt and, for F nonlinear in y', Newton steps.
        return lib.sl_pool_create_dae(c_dae(arguments.problem, arguments.model), *arguments[1:6], out)


KINDS = (OdeKind(), DaeKind())


def kind_of(problem):
    """The kind of ``problem`` (TypeError for anything but a SympyProblem or a DAEProblem)."""
    for kind in KINDS:
        if isinstance(problem, kind.problem_type):
            return kind
    raise TypeError(f"`problem` must be a SympyProblem or a DAEProblem; got {type(problem).__name__}.")
