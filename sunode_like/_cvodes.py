"""ODE solvers on CVODES: `Solver` (optionally with forward sensitivities) and `AdjointSolver`.

dy/dt = f(t, y, p), y(t0) = y0. Each step's local error e is kept below
``atol + rtol * |y|`` (weighted RMS norm). The loops over output times run in C: one
foreign call per solve, no Python inside it.
"""
from typing import NamedTuple

import numpy as np

from ._codegen import compile_model
from ._problem import entry_names
from ._errors import SolverError, describe_kernel_failure, kernel_evaluator, pattern_entries
from ._solver_base import (
    BACKWARD_METHODS, INTERPOLATIONS, LINEAR_SOLVERS, METHODS, SENS_MODES, AbstractSolver, Options,
    check_output, choice, constraint_codes, int_ptr, n_times, positive_int, ptr, quad_atol, tolerance)
from ._sundials import ffi, lib
from ._validate import boolean, real_array, real_scalar
from ._sunode_compat import accepts_sunode_names


# CVODES and IDAS allocate the storage of one checkpoint interval up front: checkpoint_steps
# + 1 stored steps of 2 vectors (Hermite) or 1 (polynomial), each n_states doubles plus about
# 640 bytes of N_Vector overhead (measured: 1272 bytes per Hermite step for 2 states).
CHECKPOINT_MEMORY_LIMIT = 2**30
# The highest order the forward method may reach: polynomial interpolation needs that many
# steps per checkpoint interval (CVODES and IDAS read past a shorter interval's storage).
MAX_ORDER = {"BDF": 5, "ADAMS": 12}


def checkpoint_steps_option(value, interpolation, method, n_states):
    """``checkpoint_steps`` checked against what the interpolation needs and the memory bound."""
    steps = positive_int("checkpoint_steps", value)
    if interpolation == "polynomial" and steps < MAX_ORDER[method]:
        raise ValueError(
            f"`checkpoint_steps={steps}` is too small for interpolation=\"polynomial\" with "
            f"solver={method!r}; expected at least {MAX_ORDER[method]} (the method's maximum "
            f"order). Use a larger checkpoint_steps or interpolation=\"hermite\".")
    vectors = 2 if interpolation == "hermite" else 1
    bytes_per_step = vectors * 8 * (n_states + 80)
    if (steps + 1) * bytes_per_step > CHECKPOINT_MEMORY_LIMIT:
        largest = CHECKPOINT_MEMORY_LIMIT // bytes_per_step - 1
        raise ValueError(
            f"`checkpoint_steps={steps}` would preallocate about "
            f"{(steps + 1) * bytes_per_step / 2**30:.3g} GiB for one checkpoint interval; "
            f"expected at most {largest} for {n_states} states (1 GiB). Fewer steps between "
            f"checkpoints cost only some recomputation in the backward solve.")
    return steps


class AbstractCvodesSolver(AbstractSolver):
    """What `Solver` and `AdjointSolver` share: the model as the C struct ``sl_problem``."""

    _c = "sl_cvodes"
    _kernels = ("rhs", "jac", "dfdp")

    def __init__(self, problem, *, solver="BDF", linear_solver="dense", rtol=1e-8, atol=1e-8,
                 max_steps=500_000, tstop=None, bandwidths=None, constraints=None):
        model = compile_model(problem)
        super().__init__(problem, model, solver=solver, linear_solver=linear_solver, rtol=rtol,
                         atol=atol, max_steps=max_steps, tstop=tstop, bandwidths=bandwidths)
        self._constraints = None
        if constraints is not None:
            self._constraints = constraint_codes(problem.states, constraints)
            self._options.struct.constraints = ptr(self._constraints)
        s = self._problem_struct = ffi.new("sl_problem *")
        s.n_states = self.n_states
        s.n_dparams = problem.n_dparams
        s.params = ptr(self._params)
        for kernel in ("rhs", "jac"):
            setattr(s, kernel, ffi.cast("sl_kernel", getattr(model, kernel + "_cfunc").address))
        for field in ("jac_colptr", "jac_rows", "jact_colptr", "jact_rows", "jact_perm",
                      "dfdp_colptr", "dfdp_rows"):
            setattr(s, field, int_ptr(getattr(model, field.upper())))

    def _create(self, sens, adjoint):
        if sens is not None or adjoint is not None:  # compiled on first use
            self._problem_struct.dfdp = ffi.cast("sl_kernel", self._model.dfdp_cfunc.address)
        super()._create(self._problem_struct, self._options.struct,
                        sens if sens is not None else ffi.NULL,
                        adjoint if adjoint is not None else ffi.NULL)

    def _diagnose(self, t, y, kernels):
        """What is wrong with the first of ``kernels`` that misbehaves at (t, y), or ""."""
        model, states = self._model, entry_names(self.problem.states)
        equations = [f"{name}'" for name in states]
        params = entry_names(self.problem.params)
        columns = {"jac": states, "dfdp": [params[i] for i in self.problem.derivative_indices]}
        for kernel in kernels:
            pattern = kernel.upper()
            entries = equations if kernel == "rhs" else pattern_entries(
                getattr(model, pattern + "_COLPTR"), getattr(model, pattern + "_ROWS"), equations,
                columns[kernel])
            evaluate = kernel_evaluator(getattr(model, kernel), t, self._params, len(entries))
            failure = entries and describe_kernel_failure(kernel, t, y, evaluate, entries, states)
            if failure:
                return failure
        return ""

    def rhs(self, t, y):
        """f(t, y, p) at the current params, as a flat float64 vector."""
        out = np.empty(self.n_states)
        self._model.rhs(real_scalar("t", t), self._flat_state(y, "y"), self._params, out)
        return out

    # -- sunode's names -------------------------------------------------------------------
    def get_params_dict(self):
        """The current params as a nested dict of arrays shaped like ``problem.params``."""
        return self.problem.params.unflatten(self.get_params())

    def as_xarray(self, tvals, y_out, sens_out=None, unstack_state=True, unstack_params=True):
        """A solution as sunode's xarray Dataset: ``solution_<state>`` over ``time`` (and the
        state's dims; nested names joined by ``_``) and ``parameters_<param>``; flat
        ``solution`` (time, state) and ``parameters`` (param) without unstacking; with
        ``sens_out`` also ``sensitivity`` (time, theta, state)."""
        import xarray as xr

        tvals = np.asarray(tvals, dtype=np.float64)
        data = xr.Dataset(coords={"time": tvals})
        if unstack_state:
            for name, values in _joined(self.problem.states.unflatten(np.asarray(y_out)), "solution"):
                data[name] = (["time"] + [f"{name}_dim_{i}" for i in range(values.ndim - 1)], values)
        else:
            data["solution"] = (("time", "state"), np.asarray(y_out))
        if unstack_params:
            for name, values in _joined(self.get_params_dict(), "parameters"):
                data[name] = ([f"{name}_dim_{i}" for i in range(values.ndim)], values)
        else:
            data["parameters"] = (("parameter",), self.get_params())
        if sens_out is not None:
            data["sensitivity"] = (("time", "theta", "state"), np.asarray(sens_out))
        return data


def _joined(tree, prefix):
    """(prefix_a_b, value) for each leaf of a nested dict, as sunode names xarray variables."""
    for name, value in tree.items():
        if isinstance(value, dict):
            yield from _joined(value, f"{prefix}_{name}")
        else:
            yield f"{prefix}_{name}", value


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
    constraints : scalar, array or dict, optional
        Per state (flat, or a dict shaped like the states): 0 none, 1 y >= 0, 2 y > 0,
        -1 y <= 0, -2 y < 0 (SUNDIALS' convention, as sunode's): CVODES retries steps
        that break them (outputs, interpolated, may miss by about atol); y0 must satisfy them.
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

    @accepts_sunode_names
    def __init__(self, problem, *, sens_mode=None, sens_y0=True, sens_errcon=True, **options):
        sens_y0 = boolean("sens_y0", sens_y0)
        super().__init__(problem, **options)
        if sens_mode == "simultaneous" and self._constraints is not None:
            raise ValueError("`constraints` cannot be kept with sens_mode='simultaneous' (CVODES "
                             "does not support it); use sens_mode='staggered'.")
        self.sens_mode = sens_mode
        self.n_sens = (problem.n_dparams + (self.n_states if sens_y0 else 0)) if sens_mode else 0
        self._sens0 = np.zeros((self.n_sens, self.n_states))
        if sens_mode and sens_y0:
            self._sens0[problem.n_dparams:] = np.eye(self.n_states)
        sens = ffi.new("sl_sens_options *")
        sens.mode = choice("sens_mode", sens_mode, SENS_MODES)
        sens.n_sens = self.n_sens
        sens.errcon = boolean("sens_errcon", sens_errcon)
        self._create(sens if sens_mode else None, None)

    def make_output_buffers(self, tvals):
        """``y_out`` of shape (n_t, n_states), and with sensitivities also ``sens_out``
        of shape (n_t, n_sens, n_states)."""
        y_out = np.zeros((n_times(tvals), self.n_states))
        if not self.sens_mode:
            return y_out
        return y_out, np.zeros((n_times(tvals), self.n_sens, self.n_states))

    def solve(self, t0, tvals, y0, y_out, sens_out=None, *, sens0=None):
        """Integrate from (t0, y0) and write y(tvals[i]) into ``y_out[i]``.

        With sensitivities, ``sens_out[i, k, j]`` = d y_j(tvals[i]) / d theta_k, theta being
        the derivative params (in ``problem.derivative_params`` order), then y0.

        Parameters
        ----------
        t0 : float
            Initial time.
        tvals : (n_t,) array
            Output times, strictly increasing, ``tvals[0] >= t0``.
        y0 : array or dict
            Initial state: a flat (n_states,) float64 array in the problem's layout, an
            array of ``problem.state_dtype``, or a nested dict.
        y_out : (n_t, n_states) float64 array, written
            From `make_output_buffers`.
        sens_out : (n_t, n_sens, n_states) float64 array, written
            Only with ``sens_mode``.
        sens0 : (n_sens, n_states) or (n_dparams, n_states) array, optional
            The sensitivities at t0, d y0 / d theta (sunode's argument): default 0 for the
            params and the identity for y0; with n_dparams rows only the params' are given.

        Raises
        ------
        ValueError
            For bad inputs (before any C call).
        SolverError
            If CVODES fails; carries the flag name and the time reached.
        """
        t0, tvals = self._check_times(t0, tvals)
        y0 = self._flat_state(y0, "y0")
        check_output("y_out", y_out, (len(tvals), self.n_states))
        sens_ptr = ffi.NULL
        if self.sens_mode:
            check_output("sens_out", sens_out, (len(tvals), self.n_sens, self.n_states))
            sens_ptr = ptr(sens_out)
        sens0 = self._sens0 if sens0 is None else self._initial_sens(sens0)
        flag = lib.sl_cvodes_solve(self._ptr, t0, ptr(y0), ptr(sens0), len(tvals),
                                   ptr(tvals), ptr(y_out), sens_ptr)
        if flag:
            self._raise(flag)

    def _initial_sens(self, sens0):
        """A checked (n_sens, n_states) copy of `solve`'s ``sens0``."""
        if not self.sens_mode:
            raise ValueError("`sens0` needs a solver with sensitivities; got sens_mode=None.")
        sens0 = np.asarray(sens0, dtype=np.float64)
        full = self._sens0.copy()
        if sens0.shape not in (full.shape, (self.problem.n_dparams, self.n_states)):
            raise ValueError(f"`sens0` has shape {sens0.shape}; expected {full.shape} or "
                             f"{(self.problem.n_dparams, self.n_states)} (the params' rows).")
        if not np.all(np.isfinite(sens0)):
            raise ValueError("`sens0` must be finite.")
        full[:len(sens0)] = sens0
        return full


class Gradients(NamedTuple):
    """dL/d(inputs) of a scalar L, with plain signs.

    Fields: ``y0`` (n_states,), ``params`` (n_dparams,) in ``problem.derivative_params``
    order, ``t0`` (float), ``tvals`` (n_t,).
    """

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
    problem, solver, linear_solver, rtol, atol, max_steps, tstop, bandwidths, constraints
        The forward problem, as for `Solver`.
    checkpoint_steps : int
        Steps between checkpoints. The steps after the last checkpoint are kept in memory;
        earlier ones are recomputed from checkpoints during the backward solve. Their
        storage is allocated up front, so it is limited to 1 GiB (about 800,000 steps for
        2 states).
    interpolation : {"hermite", "polynomial"}
        How the forward solution is interpolated during the backward solve. Polynomial
        interpolation uses as many stored steps as the method's order, so it needs
        ``checkpoint_steps`` >= 5 (BDF) or 12 (ADAMS); the forward solve then takes up to
        that many steps past the last output time, to complete its last checkpoint
        interval.
    solver_backward : {"BDF", "ADAMS", "ERK", "DIRK"}
        The backward method (default: the forward one). "BDF" and "ADAMS" use CVODES'
        adjoint module, which restarts the backward problem at order 1 after each output
        time with a nonzero ``grads[i]``. "ERK" integrates it with an explicit Runge-Kutta
        method (ARKODE, Dormand-Prince 5(4)) that carries its step size across those
        jumps, over the forward steps recorded in memory (2 n_states doubles per step;
        ``checkpoint_steps``, ``interpolation`` and ``linear_solver_backward`` do not
        apply). It is several times faster for non-stiff problems and fails with
        ``ARK_TOO_MUCH_WORK`` on stiff ones. "DIRK" does the same with an implicit method
        for stiff adjoints (ARKODE, the L-stable ESDIRK 4(3) in 7 stages of Kennedy &
        Carpenter's ARK4(3)7L[2]SA): each stage solves (I + gamma J^T) with ``linear_solver_backward``
        (J at the stage time, so one Newton iteration is exact: the adjoint is linear), and
        dL/dp follows from that solve without a larger system. It needs
        ``quad_errcon=True``.
    linear_solver_backward, rtol_backward, atol_backward, max_steps_backward
        The backward problem's options (default: the forward ones; atol_backward: the
        largest forward atol, one value for all entries, as the adjoint's entries do not
        have the states' units). The backward problem is solved for grads / s, with s
        the power of two just above ``max(abs(grads))``, and its results multiplied by s
        (exact: the adjoint is linear in grads), so atol_backward and atol_quad are
        relative to the size of grads and the gradient's relative accuracy does not depend
        on the loss's scale.
    rtol_quad, atol_quad, quad_errcon
        Tolerances of the dL/dp quadrature (default: the backward ones) and whether it is
        in the error test (default on).

    References
    ----------
    Serban & Hindmarsh (2005), CVODES: the sensitivity-enabled ODE solver in SUNDIALS.
    """

    @accepts_sunode_names
    def __init__(self, problem, *, checkpoint_steps=1000, interpolation="hermite",
                 solver_backward=None, linear_solver_backward=None, rtol_backward=None,
                 atol_backward=None, max_steps_backward=None, rtol_quad=None, atol_quad=None,
                 quad_errcon=True, **options):
        super().__init__(problem, **options)
        forward = self._options.struct
        adj = self._adjoint_struct = ffi.new("sl_adjoint_options *")
        adj.interpolation = choice("interpolation", interpolation, INTERPOLATIONS)
        names = {v: k for k, v in METHODS.items()}, {v: k for k, v in LINEAR_SOLVERS.items()}
        self._backward_options = Options(
            self.n_states,
            solver_backward or names[0][forward.method],
            linear_solver_backward or names[1][forward.linear_solver],
            forward.rtol if rtol_backward is None else rtol_backward,
            self._options.atol.max() if atol_backward is None else atol_backward,
            forward.max_steps if max_steps_backward is None else max_steps_backward,
            self._bandwidths, methods=BACKWARD_METHODS, suffix="_backward")
        adj.backward = self._backward_options.struct[0]
        backward = self._backward_options
        if backward.struct.method in (lib.SL_ERK, lib.SL_DIRK):  # records every step, no checkpoints
            adj.checkpoint_steps = positive_int("checkpoint_steps", checkpoint_steps)
        else:
            adj.checkpoint_steps = checkpoint_steps_option(
                checkpoint_steps, interpolation, names[0][forward.method], self.n_states)
        adj.rtol_quad = float(tolerance(
            "rtol_quad", backward.struct.rtol if rtol_quad is None else rtol_quad, 1, positive=True)[0])
        adj.quad_errcon = boolean("quad_errcon", quad_errcon)
        adj.atol_quad = quad_atol(atol_quad, backward.atol.min(), adj.quad_errcon)
        if backward.struct.method == lib.SL_DIRK and not adj.quad_errcon:
            # Measured: Robertson's dL/dp 16% wrong at rtol=1e-8 (the steps resolve lambda
            # but not the fast part of lambda^T df/dp after each jump).
            raise ValueError(
                "`quad_errcon=False` is not supported with `solver_backward='DIRK'`; got "
                "quad_errcon=False, expected True. Without the quadrature in the error test "
                "the DIRK's steps can skip what dL/dp integrates: keep quad_errcon=True.")
        self._create(None, adj)
        self._forward_key = None

    def make_output_buffers(self, tvals):
        """``(y_out, grad_out, lambda_out)`` of shapes (n_t, n_states), (n_dparams,), (n_states,)."""
        return (np.zeros((n_times(tvals), self.n_states)), np.zeros(self.problem.n_dparams),
                np.zeros(self.n_states))

    def solve_forward(self, t0, tvals, y0, y_out):
        """Integrate from (t0, y0), write y(tvals[i]) into ``y_out[i]`` and keep checkpoints.

        Arguments and errors as for `Solver.solve`; `solve_backward` then reuses this
        forward solution (it is never recomputed in full).
        """
        t0, tvals = self._check_times(t0, tvals)
        y0 = self._flat_state(y0, "y0")
        check_output("y_out", y_out, (len(tvals), self.n_states))
        self._forward_key = None
        flag = lib.sl_cvodes_solve(self._ptr, t0, ptr(y0), ffi.NULL, len(tvals), ptr(tvals),
                                   ptr(y_out), ffi.NULL)
        if flag:
            self._raise(flag)
        self._forward_key = (t0, tvals.tobytes(), self._params.tobytes())
        self._forward_solution = (y0.copy(), y_out.copy())  # what `gradients` must be given

    def solve_backward(self, t_last, t0, tvals, grads, grad_out, lambda_out):
        """Integrate the adjoint from ``t_last`` (= tvals[-1]) back to ``t0``.

        Parameters
        ----------
        t_last, t0 : float
            Where the backward solve starts (must be ``tvals[-1]``) and ends.
        tvals : (n_t,) array
            The output times of the preceding `solve_forward` (same t0, tvals, params).
        grads : (n_t, n_states) array
            dL/dy(tvals[i]).
        grad_out : (n_dparams,) array, written
            dL/d(derivative params), in ``problem.derivative_params`` order.
        lambda_out : (n_states,) array, written
            The adjoint state at t0; dL/dy0 = -lambda_out.

        Raises
        ------
        ValueError
            Without a matching `solve_forward`, or for bad shapes.
        SolverError
            If the backward integration fails.

        Examples
        --------
        For L = sum of all outputs, ``grads`` is all ones:

        >>> y_out, grad_out, lambda_out = adj.make_output_buffers(tvals)   # doctest: +SKIP
        >>> adj.solve_forward(0.0, tvals, y0, y_out)                        # doctest: +SKIP
        >>> adj.solve_backward(tvals[-1], 0.0, tvals, np.ones_like(y_out),
        ...                    grad_out, lambda_out)                        # doctest: +SKIP
        >>> dL_dp, dL_dy0 = grad_out, -lambda_out                           # doctest: +SKIP
        """
        t0, tvals, grads = self._check_backward(t_last, t0, tvals, self._forward_key, grads,
                                                grad_out, lambda_out)
        flag = lib.sl_cvodes_backward(self._ptr, t0, len(tvals), ptr(tvals), ptr(grads),
                                      ptr(grad_out), ptr(lambda_out))
        if flag:
            self._raise(flag, "backward")

    def gradients(self, t0, tvals, y0, y_out, grads):
        """dL/d(y0, derivative params, t0, tvals) with plain signs, after `solve_forward`.

        ``y_out`` is the forward solution and ``grads[i] = dL/dy(tvals[i])``. Uses
        dL/dtvals[i] = grads[i] . f(tvals[i], y_out[i]) and dL/dt0 = -dL/dy0 . f(t0, y0).

        Returns
        -------
        Gradients
            ``(y0, params, t0, tvals)``.
        """
        _, grad_out, lambda_out = self.make_output_buffers(tvals)
        self.solve_backward(tvals[-1], t0, tvals, grads, grad_out, lambda_out)
        y0 = self._flat_state(y0, "y0")
        if not (np.array_equal(y0, self._forward_solution[0])
                and np.array_equal(real_array("y_out", y_out), self._forward_solution[1])):
            raise ValueError("`y0` and `y_out` must be those of the preceding solve_forward (dL/dt0 "
                             "and dL/dtvals use f there); got other values.")
        grads = np.asarray(grads, dtype=np.float64)
        dtvals = np.array([grads[i] @ self.rhs(t, y_out[i]) for i, t in enumerate(tvals)])
        return Gradients(-lambda_out, grad_out, float(lambda_out @ self.rhs(t0, y0)), dtvals)
