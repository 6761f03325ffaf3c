"""The two kinds of problem the Ops solve, ODEs on CVODES and DAEs on IDAS: what differs.

A kind is the one place of the Ops' option handling: the keywords an Op accepts and their
defaults (`options`), and the C solver pool built from them (`pool`). Everything else (the
pool's input checks and gradient math in ``csrc/sl_pool.c``, the Ops, the numba dispatch)
is written once for both.
"""
import numpy as np

from .._cvodes import AdjointSolver, Solver
from .._dae_problem import DAEProblem
from .._idas import DAEAdjointSolver, DAESolver
from .._problem import SympyProblem
from .._solver_base import SENS_MODES, ptr
from .._sundials import ffi, lib
from .._sunode_compat import from_sunode

# The Ops' defaults, the same for both kinds (the solvers' own max_steps default is 500,000).
OP_DEFAULTS = {"rtol": 1e-8, "atol": 1e-8, "max_steps": 50_000}
_FORWARD = {"linear_solver", "rtol", "atol", "max_steps", "tstop", "bandwidths", "constraints"}
_ADJOINT = {"checkpoint_steps", "interpolation", "linear_solver_backward", "rtol_backward",
            "atol_backward", "max_steps_backward", "rtol_quad", "atol_quad", "quad_errcon"}


class Pool:
    """A C solver pool (``ptr``, registered under ``key``) and the Python solver whose structs
    it copied; the solver stays alive because the pool's model points into its arrays."""

    def __init__(self, solver, create, model, options, sens, adjoint, key):
        self.solver = solver
        self.dparam_index = np.ascontiguousarray(solver.problem.derivative_indices, dtype=np.int64)
        out = ffi.new("sl_pool **")
        flag = create(model, solver.problem.n_params, ffi.cast("int64_t *", self.dparam_index.ctypes.data),
                      options, sens, adjoint, out)
        self.ptr = out[0]
        if flag:
            lib.sl_pool_free(self.ptr)
            if flag == lib.SL_MEM_FAIL:
                raise MemoryError("could not allocate the solver pool")
            raise RuntimeError(f"sl_pool_create failed with flag {flag}: the sensitivities do not "
                               f"match the problem (an internal error; please report).")
        lib.sl_registry_set(key, self.ptr)
        # Pools live as long as the process: compiled functions find them by key at any time.


def _checked(kwargs, mode, keywords):
    unknown = set(kwargs) - keywords[mode]
    if unknown:
        raise ValueError(f"`solver_kwargs` has unknown options {sorted(unknown)} for mode {mode!r}; "
                         f"expected some of {sorted(keywords[mode])}.")
    return kwargs


def _sens_struct(mode, n_sens, errcon):
    sens = ffi.new("sl_sens_options *")
    sens.mode, sens.n_sens, sens.errcon = SENS_MODES[mode], n_sens, bool(errcon)
    return sens


class OdeKind:
    """dy/dt = f(t, y, p) (`SympyProblem`) on CVODES; every entry of y0 is free."""

    name, noun = "ODE", "an ODE"
    problem_type = SympyProblem
    keywords = {"sens": _FORWARD | {"solver", "sens_errcon", "sens_mode"},
                "adjoint": _FORWARD | _ADJOINT | {"solver", "solver_backward"}}

    def options(self, solver_kwargs, mode):
        """The Op's solver options: ``solver_kwargs`` (sunode's names accepted) with defaults."""
        kwargs = _checked(dict(OP_DEFAULTS, **from_sunode(solver_kwargs or {})), mode, self.keywords)
        if mode == "sens":  # CVODES keeps constraints only with staggered sensitivities
            kwargs.setdefault("sens_mode", "staggered" if "constraints" in kwargs else "simultaneous")
            if kwargs["sens_mode"] not in ("simultaneous", "staggered"):
                raise ValueError(f"`sens_mode={kwargs['sens_mode']!r}` cannot give forward "
                                 f"derivatives; expected 'simultaneous' or 'staggered'.")
        return kwargs

    def free_initial_states(self, problem):
        return np.arange(problem.n_states)

    def pool(self, problem, options, mode, key):
        # The Python solver checks the options (so bad ones fail when the graph is built)
        # and builds the C structs, which the pool copies.
        if mode == "adjoint":
            solver = AdjointSolver(problem, **options)
            sens, adjoint = ffi.NULL, solver._adjoint_struct
        else:
            solver = Solver(problem, **options)
            sens = _sens_struct(options["sens_mode"], solver.n_sens, options.get("sens_errcon", True))
            adjoint = ffi.NULL
        return Pool(solver, lib.sl_pool_create, solver._problem_struct, solver._options.struct,
                    sens, adjoint, key)


class DaeKind:
    """F(t, y, y', p) = 0 (`DAEProblem`) on IDAS; the differential part of y0 is free, its
    algebraic entries are guesses that IDACalcIC replaces."""

    name, noun = "DAE", "a DAE"
    problem_type = DAEProblem
    keywords = {"sens": _FORWARD | {"sens_errcon"}, "adjoint": _FORWARD | _ADJOINT}

    def options(self, solver_kwargs, mode):
        return _checked(dict(OP_DEFAULTS, **(solver_kwargs or {})), mode, self.keywords)

    def free_initial_states(self, problem):
        return problem.differential_indices

    def pool(self, problem, options, mode, key):
        if mode == "adjoint":
            solver = DAEAdjointSolver(problem, **options)
            sens, adjoint = ffi.NULL, solver._adjoint_struct
        else:
            solver = DAESolver(problem, sens_mode="simultaneous", **options)
            sens = _sens_struct("simultaneous", solver.n_sens, options.get("sens_errcon", True))
            adjoint = ffi.NULL
        dae = ffi.new("sl_pool_dae *")
        dae.problem = solver._problem_struct[0]
        dae.dfdt = ffi.cast("sl_kernel", solver._model.dfdt_cfunc.address)
        dae.yp_newton_steps = 4 if solver._model.JAC_YP_DEPENDS_ON_YP else 1
        forward = ffi.new("sl_options *", solver._options.struct[0])
        if solver._constraints is not None:
            forward.constraints = ptr(solver._constraints)
        return Pool(solver, lib.sl_pool_create_dae, dae, forward, sens, adjoint, key)


KINDS = (OdeKind(), DaeKind())


def kind_of(problem):
    """The kind of ``problem`` (TypeError for anything but a SympyProblem or a DAEProblem)."""
    for kind in KINDS:
        if isinstance(problem, kind.problem_type):
            return kind
    raise TypeError(f"`problem` must be a SympyProblem or a DAEProblem; got {type(problem).__name__}.")
