"""ODE solvers on CVODES: `Solver` (optionally with forward sensitivities) and `AdjointSolver`.

dy/dt = f(t, y, p), y(t0) = y0. Each step's local error e is kept below
``atol + rtol * |y|`` (weighted RMS norm). The loops over output times run in C: one
foreign call per solve, no Python inside it.
"""
import math
import weakref
from typing import NamedTuple

import numpy as np

from ._codegen import compile_model
from ._errors import SolverError
from ._sundials import ffi, lib

_METHODS = {"BDF": lib.SL_BDF, "ADAMS": lib.SL_ADAMS}
_LINEAR_SOLVERS = {"dense": lib.SL_DENSE, "band": lib.SL_BAND, "sparse": lib.SL_SPARSE,
                   "spgmr": lib.SL_SPGMR}
_SENS_MODES = {None: lib.SL_SENS_NONE, "simultaneous": lib.SL_SENS_SIMULTANEOUS,
               "staggered": lib.SL_SENS_STAGGERED}
_INTERPOLATIONS = {"hermite": lib.SL_HERMITE, "polynomial": lib.SL_POLYNOMIAL}


def _choice(name, value, options):
    if value not in options:
        raise ValueError(f"`{name}={value!r}` is not supported; expected one of {list(options)}.")
    return options[value]


def _tolerance(name, value, size, positive=False):
    try:
        array = np.array(np.broadcast_to(np.asarray(value, dtype=np.float64), (size,)))
    except ValueError:
        raise ValueError(f"`{name}` must be a scalar or have {size} entries; got shape "
                         f"{np.shape(value)}.") from None
    if np.any(~np.isfinite(array) | ((array <= 0) if positive else (array < 0))):
        raise ValueError(f"`{name}` must be finite and {'positive' if positive else 'non-negative'}; "
                         f"got {value!r}.")
    return array


def _check_output(name, array, shape):
    if not (isinstance(array, np.ndarray) and array.dtype == np.float64 and array.shape == shape
            and array.flags.c_contiguous and array.flags.writeable):
        got = f"{array.dtype} array of shape {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"`{name}` must be a writeable C-contiguous float64 array of shape {shape}; "
                         f"got {got}. Use make_output_buffers.")


def _ptr(array):
    return ffi.from_buffer("double[]", array)


def _int_ptr(array):
    return ffi.from_buffer("int64_t[]", array)


class _Options:
    """Validated options of one integration direction, as the C struct."""

    def __init__(self, n, solver, linear_solver, rtol, atol, max_steps, bandwidths, tstop=None):
        self.struct = ffi.new("sl_options *")
        self.atol = _tolerance("atol", atol, n)
        self.fill(self.struct, solver, linear_solver, rtol, max_steps, bandwidths, tstop)

    def fill(self, struct, solver, linear_solver, rtol, max_steps, bandwidths, tstop):
        struct.method = _choice("solver", solver, _METHODS)
        struct.linear_solver = _choice("linear_solver", linear_solver, _LINEAR_SOLVERS)
        struct.rtol = float(_tolerance("rtol", rtol, 1, positive=True)[0])
        struct.atol = _ptr(self.atol)
        if int(max_steps) != max_steps or max_steps < 1:
            raise ValueError(f"`max_steps={max_steps!r}` must be a positive integer.")
        struct.max_steps = int(max_steps)
        struct.upper_bandwidth, struct.lower_bandwidth = bandwidths
        struct.tstop = np.nan if tstop is None else float(tstop)


class AbstractCvodesSolver:
    """What `Solver` and `AdjointSolver` share: the model, params, options and input checks."""

    def __init__(self, problem, *, solver="BDF", linear_solver="dense", rtol=1e-8, atol=1e-8,
                 max_steps=500_000, tstop=None, bandwidths=None):
        self.problem = problem
        self.n_states = problem.n_states
        self._model = model = compile_model(problem)
        self._y0_layout = problem.states.renamed("y0")
        self._params = np.zeros(max(problem.n_params, 1))
        if bandwidths is None:
            bandwidths = (model.UPPER_BANDWIDTH, model.LOWER_BANDWIDTH)
        if tstop is not None and not np.isfinite(tstop):
            raise ValueError(f"`tstop={tstop!r}` must be finite.")
        self.tstop = tstop
        self._bandwidths = bandwidths
        self._options = _Options(self.n_states, solver, linear_solver, rtol, atol, max_steps,
                                 bandwidths, tstop)
        s = self._problem_struct = ffi.new("sl_problem *")
        s.n_states = self.n_states
        s.n_dparams = problem.n_dparams
        s.params = _ptr(self._params)
        for kernel in ("rhs", "jac", "dfdp"):
            setattr(s, kernel, ffi.cast("sl_kernel", getattr(model, kernel + "_cfunc").address))
        for field in ("jac_colptr", "jac_rows", "jact_colptr", "jact_rows", "jact_perm",
                      "dfdp_colptr", "dfdp_rows"):
            setattr(s, field, _int_ptr(getattr(model, field.upper())))
        self._ptr = None

    def _create(self, sens, adjoint):
        out = ffi.new("sl_cvodes **")
        flag = lib.sl_cvodes_create(self._problem_struct, self._options.struct,
                                    sens if sens is not None else ffi.NULL,
                                    adjoint if adjoint is not None else ffi.NULL, out)
        self._ptr = out[0]
        self._finalizer = weakref.finalize(self, lib.sl_cvodes_free, self._ptr)
        if flag:
            self._raise(flag)

    def _raise(self, flag):
        status = lib.sl_cvodes_status(self._ptr) if self._ptr != ffi.NULL else None
        if status is None:
            raise SolverError(flag, "CV_MEM_FAIL", np.nan, "out of memory")
        raise SolverError(flag, ffi.string(status.flag_name).decode(), status.t,
                          ffi.string(status.message).decode())

    def stats(self):
        """Work counters of the last solve as a dict (steps, rhs_evals, ...; backward ones
        count since the backward problem's last re-initialisation)."""
        stats = ffi.new("sl_stats *")
        lib.sl_cvodes_stats(self._ptr, stats)
        return {name: getattr(stats, name) for name in dir(stats)}

    # -- params ---------------------------------------------------------------------------
    def set_params_dict(self, params):
        """Set all params from a (nested) dict of values shaped like ``problem.params``."""
        self.set_params(self.problem.params.flatten(params))

    def set_params(self, params):
        """Set all params from a flat float64 vector (or a ``params_dtype`` array)."""
        flat = self.problem.params.flatten(params)
        if not np.all(np.isfinite(flat)):
            bad = [leaf.name for leaf in self.problem.params.leaves if not np.all(np.isfinite(flat[leaf.slice]))]
            raise ValueError(f"params {bad} are not finite.")
        self._params[:self.problem.n_params] = flat

    def get_params(self):
        """A copy of the flat params vector."""
        return self._params[:self.problem.n_params].copy()

    def rhs(self, t, y):
        """f(t, y, p) at the current params, as a flat float64 vector."""
        out = np.empty(self.n_states)
        self._model.rhs(float(t), self._flat_y0(y), self._params, out)
        return out

    # -- input checks ---------------------------------------------------------------------
    def _flat_y0(self, y0, name="y0"):
        if type(y0) is np.ndarray and y0.dtype == np.float64 and y0.shape == (self.n_states,):
            flat = np.ascontiguousarray(y0)  # the fast path of the PyTensor Ops
        else:
            flat = self._y0_layout.flatten(y0)
        if not np.isfinite(flat).all():
            bad = [leaf.name for leaf in self.problem.states.leaves if not np.all(np.isfinite(flat[leaf.slice]))]
            raise ValueError(f"`{name}` is not finite for states {bad}.")
        return flat

    def _check_times(self, t0, tvals):
        t0 = float(t0)
        tvals = np.ascontiguousarray(tvals, dtype=np.float64)
        if (tvals.ndim == 1 and len(tvals) and math.isfinite(t0) and np.isfinite(tvals).all()
                and (tvals[1:] > tvals[:-1]).all() and tvals[0] >= t0
                and (self.tstop is None or tvals[-1] <= self.tstop)):
            return t0, tvals
        if not np.isfinite(t0):
            raise ValueError(f"`t0={t0!r}` must be finite.")
        if tvals.ndim != 1 or len(tvals) == 0:
            raise ValueError(f"`tvals` must be a non-empty 1-d array; got shape {tvals.shape}.")
        if not np.all(np.isfinite(tvals)):
            raise ValueError(f"`tvals` must be finite; got NaN/inf at indices {np.flatnonzero(~np.isfinite(tvals)).tolist()}.")
        if len(tvals) > 1 and not np.all(tvals[1:] > tvals[:-1]):
            i = int(np.flatnonzero(tvals[1:] <= tvals[:-1])[0])
            raise ValueError(f"`tvals` must be strictly increasing; got tvals[{i}]={tvals[i]} >= "
                             f"tvals[{i + 1}]={tvals[i + 1]}.")
        if tvals[0] < t0:
            raise ValueError(f"`tvals` must not start before t0; got tvals[0]={tvals[0]} < t0={t0}.")
        if self.tstop is not None and tvals[-1] > self.tstop:
            raise ValueError(f"`tvals` must end by tstop; got tvals[-1]={tvals[-1]} > tstop={self.tstop}.")
        return t0, tvals


class Solver(AbstractCvodesSolver):
    """Forward solves with CVODES, optionally with forward sensitivities.

    Parameters
    ----------
    problem : SympyProblem
    solver : {"BDF", "ADAMS"}
        BDF for stiff problems, Adams-Moulton for non-stiff ones.
    linear_solver : {"dense", "band", "sparse", "spgmr"}
        For the Newton systems: dense LU, band LU, KLU on the symbolic sparsity pattern,
        or GMRES with the analytic Jacobian-vector product.
    rtol, atol : float or array
        Relative and absolute tolerance (atol per state or scalar).
    max_steps : int
        Maximum number of steps between two output times.
    tstop : float, optional
        A time the integrator must not step past (e.g. a discontinuity of f).
    bandwidths : (int, int), optional
        Upper and lower bandwidth for ``"band"``; default: from the sparsity pattern.
    sens_mode : {None, "simultaneous", "staggered"}
        Forward sensitivities s = dy/d(theta), theta = (derivative params, y0 if
        ``sens_y0``): s' = J s + df/dtheta, in the error test unless ``sens_errcon=False``.

    Examples
    --------
    >>> solver = Solver(problem, rtol=1e-8, atol=1e-8)        # doctest: +SKIP
    >>> solver.set_params_dict({"a": 0.5})                     # doctest: +SKIP
    >>> y_out = solver.make_output_buffers(tvals)              # doctest: +SKIP
    >>> solver.solve(0.0, tvals, {"x": 1.0}, y_out)            # doctest: +SKIP
    """

    def __init__(self, problem, *, sens_mode=None, sens_y0=True, sens_errcon=True, **options):
        super().__init__(problem, **options)
        self.sens_mode = sens_mode
        self.n_sens = (problem.n_dparams + (self.n_states if sens_y0 else 0)) if sens_mode else 0
        self._sens0 = np.zeros((self.n_sens, self.n_states))
        if sens_mode and sens_y0:
            self._sens0[problem.n_dparams:] = np.eye(self.n_states)
        sens = ffi.new("sl_sens_options *")
        sens.mode = _choice("sens_mode", sens_mode, _SENS_MODES)
        sens.n_sens = self.n_sens
        sens.errcon = bool(sens_errcon)
        self._create(sens if sens_mode else None, None)

    def make_output_buffers(self, tvals):
        """``y_out`` of shape (n_t, n_states), and with sensitivities also ``sens_out``
        of shape (n_t, n_sens, n_states)."""
        y_out = np.zeros((len(tvals), self.n_states))
        if not self.sens_mode:
            return y_out
        return y_out, np.zeros((len(tvals), self.n_sens, self.n_states))

    def solve(self, t0, tvals, y0, y_out, sens_out=None):
        """Integrate from (t0, y0) and write y(tvals[i]) into ``y_out[i]``.

        With sensitivities, ``sens_out[i, k, j]`` = d y_j(tvals[i]) / d theta_k, theta being
        the derivative params (in ``problem.derivative_params`` order), then y0.

        Raises
        ------
        ValueError
            For bad inputs (before any C call).
        SolverError
            If CVODES fails; carries the flag name and the time reached.
        """
        t0, tvals = self._check_times(t0, tvals)
        y0 = self._flat_y0(y0)
        _check_output("y_out", y_out, (len(tvals), self.n_states))
        sens_ptr = ffi.NULL
        if self.sens_mode:
            _check_output("sens_out", sens_out, (len(tvals), self.n_sens, self.n_states))
            sens_ptr = _ptr(sens_out)
        flag = lib.sl_cvodes_solve(self._ptr, t0, _ptr(y0), _ptr(self._sens0), len(tvals),
                                   _ptr(tvals), _ptr(y_out), sens_ptr)
        if flag:
            self._raise(flag)


class Gradients(NamedTuple):
    """dL/d(inputs) of a scalar L, with plain signs; shapes follow the inputs."""

    y0: np.ndarray
    params: np.ndarray
    t0: float
    tvals: np.ndarray


class AdjointSolver(AbstractCvodesSolver):
    """Forward solve with checkpoints, then the adjoint backward in time for gradients.

    For a scalar L depending on y(tvals[i]), lambda solves lambda' = -J^T lambda backward
    from the last output time, with lambda -= dL/dy(tvals[i]) at each output time, and the
    quadrature q' = lambda^T df/dp gives dL/dp = q(t0). In this (SUNDIALS') sign convention
    dL/dy0 = -lambda(t0).

    Parameters
    ----------
    problem, solver, linear_solver, rtol, atol, max_steps, tstop, bandwidths
        The forward problem, as for `Solver`.
    checkpoint_steps : int
        Steps between checkpoints. The steps after the last checkpoint are kept in memory;
        earlier ones are recomputed from checkpoints during the backward solve.
    interpolation : {"hermite", "polynomial"}
        How the forward solution is interpolated during the backward solve.
    solver_backward, linear_solver_backward, rtol_backward, atol_backward, max_steps_backward
        The backward problem's options (default: the forward ones).
    rtol_quad, atol_quad, quad_errcon
        Tolerances of the dL/dp quadrature (default: the backward ones) and whether it is
        in the error test (default on).

    References
    ----------
    Serban & Hindmarsh (2005), CVODES: the sensitivity-enabled ODE solver in SUNDIALS.
    """

    def __init__(self, problem, *, checkpoint_steps=1000, interpolation="hermite",
                 solver_backward=None, linear_solver_backward=None, rtol_backward=None,
                 atol_backward=None, max_steps_backward=None, rtol_quad=None, atol_quad=None,
                 quad_errcon=True, **options):
        super().__init__(problem, **options)
        forward = self._options.struct
        adj = self._adjoint_struct = ffi.new("sl_adjoint_options *")
        if int(checkpoint_steps) != checkpoint_steps or checkpoint_steps < 1:
            raise ValueError(f"`checkpoint_steps={checkpoint_steps!r}` must be a positive integer.")
        adj.checkpoint_steps = int(checkpoint_steps)
        adj.interpolation = _choice("interpolation", interpolation, _INTERPOLATIONS)
        names = {v: k for k, v in _METHODS.items()}, {v: k for k, v in _LINEAR_SOLVERS.items()}
        self._backward_options = _Options(
            self.n_states,
            solver_backward or names[0][forward.method],
            linear_solver_backward or names[1][forward.linear_solver],
            forward.rtol if rtol_backward is None else rtol_backward,
            self._options.atol if atol_backward is None else atol_backward,
            forward.max_steps if max_steps_backward is None else max_steps_backward,
            self._bandwidths)
        adj.backward = self._backward_options.struct[0]
        backward = self._backward_options
        adj.rtol_quad = float(_tolerance(
            "rtol_quad", backward.struct.rtol if rtol_quad is None else rtol_quad, 1, positive=True)[0])
        adj.atol_quad = float(_tolerance(
            "atol_quad", backward.atol.min() if atol_quad is None else atol_quad, 1)[0])
        adj.quad_errcon = bool(quad_errcon)
        self._create(None, adj)
        self._forward_key = None

    def make_output_buffers(self, tvals):
        """``(y_out, grad_out, lambda_out)`` of shapes (n_t, n_states), (n_dparams,), (n_states,)."""
        return (np.zeros((len(tvals), self.n_states)), np.zeros(self.problem.n_dparams),
                np.zeros(self.n_states))

    def solve_forward(self, t0, tvals, y0, y_out):
        """Integrate from (t0, y0), write y(tvals[i]) into ``y_out[i]`` and keep checkpoints."""
        t0, tvals = self._check_times(t0, tvals)
        y0 = self._flat_y0(y0)
        _check_output("y_out", y_out, (len(tvals), self.n_states))
        self._forward_key = None
        flag = lib.sl_cvodes_solve(self._ptr, t0, _ptr(y0), ffi.NULL, len(tvals), _ptr(tvals),
                                   _ptr(y_out), ffi.NULL)
        if flag:
            self._raise(flag)
        self._forward_key = (t0, tvals.tobytes(), self._params.tobytes())

    def solve_backward(self, t_last, t0, tvals, grads, grad_out, lambda_out):
        """Integrate the adjoint from ``t_last`` (= tvals[-1]) back to ``t0``.

        Parameters
        ----------
        grads : (n_t, n_states) array
            dL/dy(tvals[i]).
        grad_out : (n_dparams,) array, written
            dL/d(derivative params), in ``problem.derivative_params`` order.
        lambda_out : (n_states,) array, written
            The adjoint state at t0; dL/dy0 = -lambda_out.
        """
        t0, tvals = self._check_times(t0, tvals)
        if float(t_last) != tvals[-1]:
            raise ValueError(f"`t_last={t_last!r}` must equal tvals[-1]={tvals[-1]}.")
        if self._forward_key != (t0, tvals.tobytes(), self._params.tobytes()):
            raise ValueError("solve_backward needs a successful solve_forward with the same t0, "
                             "tvals and params first.")
        grads = np.ascontiguousarray(grads, dtype=np.float64)
        if grads.shape != (len(tvals), self.n_states):
            raise ValueError(f"`grads` has shape {grads.shape}; expected {(len(tvals), self.n_states)}.")
        if not np.all(np.isfinite(grads)):
            raise ValueError("`grads` must be finite.")
        _check_output("grad_out", grad_out, (self.problem.n_dparams,))
        _check_output("lambda_out", lambda_out, (self.n_states,))
        flag = lib.sl_cvodes_backward(self._ptr, t0, len(tvals), _ptr(tvals), _ptr(grads),
                                      _ptr(grad_out), _ptr(lambda_out))
        if flag:
            self._raise(flag)

    def gradients(self, t0, tvals, y0, y_out, grads):
        """dL/d(y0, derivative params, t0, tvals) with plain signs, after `solve_forward`.

        ``y_out`` is the forward solution and ``grads[i] = dL/dy(tvals[i])``. Uses
        dL/dtvals[i] = grads[i] . f(tvals[i], y_out[i]) and dL/dt0 = -dL/dy0 . f(t0, y0).
        """
        _, grad_out, lambda_out = self.make_output_buffers(tvals)
        self.solve_backward(tvals[-1], t0, tvals, grads, grad_out, lambda_out)
        grads = np.asarray(grads, dtype=np.float64)
        dtvals = np.array([grads[i] @ self.rhs(t, y_out[i]) for i, t in enumerate(tvals)])
        return Gradients(-lambda_out, grad_out, float(lambda_out @ self.rhs(t0, y0)), dtvals)
