"""DAE solvers on IDAS: `DAESolver` (optionally with forward sensitivities) and
`DAEAdjointSolver`.

F(t, y, y', p) = 0 (see `DAEProblem`), y(t0) = y0. Each step's local error e is kept
below ``atol + rtol * |y|`` (weighted RMS norm). Before every solve IDACalcIC makes the
initial values consistent: given the differential part of y0, it computes the algebraic
part of y0 and the differential part of y'(t0) (the values passed for those are only
initial guesses). The loops over output times run in C: one foreign call per solve.
"""
import numpy as np

from ._layout import entry_names
from ._solver_base import (AbstractAdjointSolver, AbstractForwardSolver, AbstractSolver, check_linear_in_yp,
                           check_output, ptr)
from ._errors import SolverError
from ._sundials import ffi, lib
from ._validate import real_array, real_scalar


def c_dae(problem_struct, model):
    """The ``sl_pool_dae *`` of a DAE (for the pool and for `consistent_yp`): its IDAS problem
    (``sl_dae_problem *``), dF/dt and the Newton steps that make y' consistent: one solves F
    linear in y' exactly; otherwise a fixed 4, from IDAS's y'."""
    dae = ffi.new("sl_pool_dae *")
    dae.problem = problem_struct[0]
    dae.dfdt = ffi.cast("sl_kernel", model.dfdt_cfunc.address)
    dae.yp_newton_steps = 4 if model.JAC_YP_DEPENDS_ON_YP else 1
    return dae


class AbstractIdasSolver(AbstractSolver):
    """What `DAESolver` and `DAEAdjointSolver` share: IDAS' C functions, the names in failure
    messages, F(t, y, y'), the initial values and consistent y'.

    Parameters
    ----------
    problem : DAEProblem
    linear_solver : {"dense", "band", "sparse", "spgmr"}
        For the Newton systems dF/dy + cj dF/dy': dense LU, band LU, KLU on the symbolic
        sparsity pattern, or GMRES with the analytic Jacobian-vector product.
    rtol, atol : float or array
        Relative and absolute tolerance (atol per state or scalar).
    max_steps : int
        Maximum number of steps between two output times.
    tstop : float, optional
        A time the integrator must not step past.
    bandwidths : (int, int), optional
        Upper and lower bandwidth for ``"band"``; default: from the sparsity pattern.
    constraints : dict or array, optional
        Per state (flat, or a dict shaped like the states): 0 none, 1 y >= 0, 2 y > 0,
        -1 y <= 0, -2 y < 0 (IDAS' convention), enforced by IDAS and IDACalcIC.
    """

    _kind = "dae"
    _c = "sl_idas"
    _kernels = ("res", "jac_y", "jac_yp", "dfdp")
    _state_vectors = 2
    _consistent = None  # the sl_dae_yp * of `consistent_yp`, made at its first call

    def _create_arguments(self):
        checked = self._checked
        return self._problem_struct, checked.options, checked.options.constraints, checked.sens, \
            checked.adjoint

    def _kernel_entries(self):
        """The names of the equations, of the state vector's entries ([y, y']), and per kernel
        with a sparsity pattern (pattern prefix, column names, entry template)."""
        states = entry_names(self.problem.states)
        params = entry_names(self.problem.params)
        dparams = [params[i] for i in self.problem.derivative_indices]
        return (self.problem.equation_names, states + [f"{name}'" for name in states],
                {"jac_y": ("JY", states, "d {row}/d {column}"),
                 "jac_yp": ("JYP", states, "d {row}/d {column}'"),
                 "jac_yp_dot": ("JYP", states, "d/dt (d {row}/d {column}')"),
                 "dfdp": ("DFDP", dparams, "d {row}/d {column}")})

    def residual(self, t, y, yp):
        """F(t, y, y', p) at the current params, as a flat float64 vector."""
        out = np.empty(self.n_states)
        self._model.res(real_scalar("t", t), self._yyp(y, yp), self._params, out)
        return out

    # -- input checks ---------------------------------------------------------------------
    def _yyp(self, y, yp):
        return np.concatenate([self._flat_state(y, "y"), self._flat_state(yp, "yp")])

    def _flat_y0(self, y0, yp0):
        """Flat (y0, yp0) guesses. y0 may hold all states or only the differential ones (a
        flat vector of n_differential entries, or for the semi-explicit form a dict of the
        differential states); missing algebraic guesses are 0. yp0 defaults to 0."""
        problem = self.problem
        full = np.zeros(self.n_states)
        is_dict = isinstance(y0, dict)
        if (is_dict and problem.form == "semi-explicit" and problem.n_algebraic
                and set(y0) == problem.differential.names_under()):
            full[problem.differential_indices] = problem.differential.flatten(y0)
        elif (not is_dict and getattr(getattr(y0, "dtype", None), "names", None) is None and np.ndim(y0) == 1
              and np.shape(y0)[0] == problem.n_differential != self.n_states):
            full[problem.differential_indices] = real_array("y0", y0)
        else:
            try:
                full = problem.states.flatten(y0)
            except (ValueError, TypeError) as error:
                raise type(error)(f"`y0` must hold all {self.n_states} states or the {problem.n_differential} "
                                  f"differential ones: {error}") from None
        if not np.all(np.isfinite(full)):
            raise ValueError(f"`y0` is not finite for states "
                             f"{[leaf.name for leaf in problem.states.leaves if not np.all(np.isfinite(full[leaf.slice]))]}.")
        yp = np.zeros(self.n_states) if yp0 is None else self._flat_state(yp0, "yp0").copy()
        return full, yp

    def _solve(self, t0, tvals, y0, yp0, y_out, yp_out, sens0, sens_out):
        """The C solve; returns the consistent (y0, yp0)."""
        check_output("y_out", y_out, (len(tvals), self.n_states))
        y0, yp0 = self._flat_y0(y0, yp0)
        flag = lib.sl_idas_solve(self._ptr, t0, ptr(y0), ptr(yp0),
                                 ffi.NULL if sens0 is None else ptr(sens0), len(tvals), ptr(tvals),
                                 ptr(y_out), ffi.NULL if yp_out is None else ptr(yp_out),
                                 ffi.NULL if sens_out is None else ptr(sens_out))
        if flag:
            self._raise(flag)
        return y0, yp0

    def consistent_yp(self, t, y, yp_guess):
        """y'(t) (flat, n_states) consistent with F = 0 at a consistent y: Newton on the
        differential equations for y'_x (from ``yp_guess``), then y'_z from d/dt of the
        algebraic equations, F_z,y y' + F_z,t = 0 (csrc/sl_dae_yp.h, as the pool's). Used
        for the time derivatives of the gradients. Raises SolverError (SL_DERIVATIVE_FAIL)
        if a kernel fails or a matrix that determines y' is singular."""
        t = real_scalar("t", t)
        y, yp = self._flat_state(y, "y"), self._flat_state(yp_guess, "yp_guess").copy()
        if self._consistent is None:
            out = ffi.new("sl_dae_yp **")
            flag = lib.sl_dae_yp_create(c_dae(self._problem_struct, self._model), out)
            if flag:
                lib.sl_dae_yp_free(out[0])
                raise SolverError(flag, "SL_MEM_FAIL", t, "out of memory")
            self._consistent = ffi.gc(out[0], lib.sl_dae_yp_free)
        flag = lib.sl_dae_yp_solve(self._consistent, t, ptr(y), ptr(yp), ptr(yp))
        if flag:
            raise SolverError(flag, "SL_DERIVATIVE_FAIL", t, "the y' consistent with F = 0 could not be "
                              "computed: a kernel failed, or dF/dy' on the differential equations "
                              "and states (or dF/dz on the algebraic ones) is singular there")
        return yp


class DAESolver(AbstractForwardSolver, AbstractIdasSolver):
    """Forward solves with IDAS, optionally with forward sensitivities.

    Parameters
    ----------
    problem, linear_solver, rtol, atol, max_steps, tstop, bandwidths, constraints
        See `AbstractIdasSolver`.
    sens_mode : {None, "simultaneous", "staggered"}
        Forward sensitivities s = dy/d(theta), theta = (derivative params, then the
        differential part of y0 if ``sens_y0``): F_y s + F_y' s' + F_theta = 0, with
        consistent s(t0) from IDACalcIC (the algebraic states follow the differential
        ones). In the error test unless ``sens_errcon=False``. Both modes give the same
        results with the error test: IDAS' simultaneous corrector leaves the sensitivities
        out of it, so error-controlled sensitivities always run the staggered corrector
        (see docs/limitations.md). Not with ``linear_solver="spgmr"`` (a ValueError).
    sens_errcon : bool
        False: the steps are chosen for y alone, and s is only as accurate as those
        steps resolve it.

    Examples
    --------
    >>> solver = DAESolver(problem, rtol=1e-8, atol=1e-8)          # doctest: +SKIP
    >>> solver.set_params_dict({"k1": 0.04, "k2": 3e7, "k3": 1e4})  # doctest: +SKIP
    >>> y_out = solver.make_output_buffers(tvals)                   # doctest: +SKIP
    >>> solver.solve(0.0, tvals, {"y1": 1.0, "y2": 0.0}, y_out)     # doctest: +SKIP
    """

    def solve(self, t0, tvals, y0, y_out, sens_out=None, *, yp0=None, yp_out=None):
        """Make (y0, y'(t0)) consistent, integrate, and write y(tvals[i]) into ``y_out[i]``.

        Parameters
        ----------
        y0 : dict or array
            All states (algebraic values are initial guesses), or only the differential
            ones (flat, or a dict of the differential states for the semi-explicit form).
        yp0 : dict or array, optional
            Initial guess for y'(t0) (default 0).
        sens_out : (n_t, n_sens, n_states) array, written
            With sensitivities: ``sens_out[i, k, j]`` = d y_j(tvals[i]) / d theta_k.
        yp_out : (n_t, n_states) array, optional, written
            y'(tvals[i]) as IDAS interpolates it.

        Returns
        -------
        (y0, yp0) : the consistent initial values (flat).

        Raises
        ------
        ValueError
            For bad inputs (before any C call).
        SolverError
            If IDAS fails (including IDACalcIC: no consistent initial values found).
        """
        t0, tvals = self._check_times(t0, tvals)
        if self.sens_mode:
            check_output("sens_out", sens_out, (len(tvals), self.n_sens, self.n_states))
        if yp_out is not None:
            check_output("yp_out", yp_out, (len(tvals), self.n_states))
        return self._solve(t0, tvals, y0, yp0, y_out, yp_out, self._sens0 if self.sens_mode else None,
                           sens_out if self.sens_mode else None)


class DAEAdjointSolver(AbstractAdjointSolver, AbstractIdasSolver):
    """Forward solve with checkpoints, then the adjoint backward in time for gradients.

    For a scalar L depending on y(tvals[i]), lambda (indexed by equations) solves the
    adjoint DAE, in SUNDIALS' sign convention like the ODE `AdjointSolver`,

        F_y^T lambda - (F_y'^T lambda)' = 0,     q(t0) = int_{t0}^{T} lambda^T F_p dt,

    backward from T = tvals[-1] with lambda(T+) = 0. At each output time the loss
    gradient g_i = dL/dy(tvals[i]) (all states, algebraic ones included) is split as
    g_i = K^T x with K = [dF/dy' on the differential equations; dF/dy on the algebraic
    ones] (nonsingular for index 1): lambda -= x on the differential equations, and
    -x^T F_p (algebraic rows) goes to dL/dp directly, because a change of p moves the
    algebraic states at fixed differential ones. Then

        grad_out   = dL/dp = q(t0) + the direct terms,
        lambda_out = F_y'(t0)^T lambda(t0),   dL/dy0 = -lambda_out

    for every consistent change of y0 (``lambda_out`` is 0 on algebraic states).

    Semi-explicit form (F = [x' - f, g], F_y' = [I 0; 0 0]): the adjoint is
    lambda_x' = -f_x^T lambda_x + g_x^T lambda_z, 0 = -f_z^T lambda_x + g_z^T lambda_z;
    lambda_out = (lambda_x(t0), 0), so dL/dx0 = -lambda_x(t0) with z0 following x0
    through g = 0. Its initial condition at each output time involves the differential
    part only: lambda_x -= dL/dx - g_x^T g_z^{-T} dL/dz (the ODE jump when L does not
    depend on z), dL/dp -= dL/dz g_z^{-1} g_p, and lambda_z = g_z^{-T} f_z^T lambda_x is
    recomputed from lambda_x (the C layer solves with the same factored K; lambda_z is
    left out of the backward error test since it follows from lambda_x).

    Parameters
    ----------
    problem, linear_solver, rtol, atol, max_steps, tstop, bandwidths, constraints
        The forward problem, as for `DAESolver`. For an implicit problem F must be
        linear in y' (dF/dy' may depend on t and y).
    checkpoint_steps, interpolation, linear_solver_backward
        As for the ODE `AdjointSolver` (polynomial interpolation: ``checkpoint_steps``
        >= 5, IDAS' maximum order).
    rtol_backward, atol_backward, max_steps_backward
        The backward problem's options (default: the forward ones; atol_backward: the
        largest forward atol). As for the ODE solver, the backward problem is solved for
        grads scaled by a power of two to size 1, so these are relative to grads' size.
    rtol_quad, atol_quad, quad_errcon
        As for the ODE `AdjointSolver`.

    References
    ----------
    Cao, Li, Petzold & Serban (2003), Adjoint sensitivity analysis for differential-algebraic
    equations: the adjoint DAE system and its numerical solution. SIAM J. Sci. Comput. 24(3).
    """

    def _check_problem(self, problem):
        super()._check_problem(problem)
        check_linear_in_yp(problem)

    def solve_forward(self, t0, tvals, y0, y_out, *, yp0=None):
        """Make (y0, y'(t0)) consistent, integrate, write y(tvals[i]) into ``y_out[i]`` and
        keep checkpoints. y0 and yp0 as for `DAESolver.solve`; returns the consistent
        (y0, yp0)."""
        t0, tvals = self._check_times(t0, tvals)
        self._forward = None
        yp_out = np.zeros((len(tvals), self.n_states))
        y0, yp0 = self._solve(t0, tvals, y0, yp0, y_out, yp_out, None, None)
        self._forward_solved(t0, tvals, y0=y0, yp0=yp0, yp_out=yp_out)
        return y0, yp0

    def _time_derivatives(self, t0, tvals, y0, y_out):
        """Consistent y'(t0) and y'(tvals[i]) of the forward solve (``y0`` is unused)."""
        forward = self._forward
        yp_out = [self.consistent_yp(t, y, yp) for t, y, yp in zip(tvals, y_out, forward["yp_out"])]
        return self.consistent_yp(t0, forward["y0"], forward["yp0"]), yp_out
