"""ODE solvers on CVODES (and ARKODE for solver="ERK" and "DIRK"): `Solver` (optionally with
forward sensitivities) and `AdjointSolver`.

dy/dt = f(t, y, p), y(t0) = y0. Each step's local error e is kept below
``atol + rtol * |y|`` (weighted RMS norm). The loops over output times run in C: one
foreign call per solve, no Python inside it.
"""
import numpy as np

from ._doses import c_doses, infusion_rates
from ._layout import entry_names
from ._options import check_one_step_backward
from ._solver_base import AbstractAdjointSolver, AbstractForwardSolver, AbstractSolver, check_output, ptr
from ._sundials import ffi, lib
from ._validate import real_array, real_scalar


class AbstractCvodesSolver(AbstractSolver):
    """What `Solver` and `AdjointSolver` share: CVODES' C functions, the names in failure
    messages, f(t, y) and sunode's views of params and solutions."""

    _kind = "ode"
    _c = "sl_cvodes"
    # csrc/sl_arkode.h: ARKODE's methods; csrc/sl_auto.h: ERK or BDF.
    _backends = {"ERK": "sl_arkode", "DIRK": "sl_arkode", "auto": "sl_auto"}
    _kernels = ("rhs", "jac", "dfdp")

    def _create_arguments(self):
        return self._problem_struct, self._checked.options, self._checked.sens, self._checked.adjoint

    def _kernel_entries(self):
        """The names of the equations, of the state vector's entries, and per kernel with a
        sparsity pattern (pattern prefix, column names, entry template)."""
        states = entry_names(self.problem.states)
        params = entry_names(self.problem.params)
        dparams = [params[i] for i in self.problem.derivative_indices]
        template = "d {row}/d {column}"
        return ([f"{name}'" for name in states], states,
                {"jac": ("JAC", states, template), "dfdp": ("DFDP", dparams, template)})

    def _solve(self, t0, tvals, y0, y_out, sens0, sens_out, doses):
        """The C forward solve, with `Doses` (checked here) through sl_cvodes_solve_doses;
        raises SolverError on failure."""
        if doses is None:
            flag = getattr(lib, self._c + "_solve")(self._ptr, t0, ptr(y0), sens0, len(tvals),
                                                    ptr(tvals), ptr(y_out), sens_out)
        else:
            values = doses.values(self.problem, t0, tvals)
            flag = getattr(lib, self._c + "_solve_doses")(
                self._ptr, t0, ptr(y0), sens0, len(tvals), ptr(tvals), c_doses(values), ptr(y_out),
                sens_out)
        if flag:
            self._raise(flag)
        return None if doses is None else values

    def method_used(self):
        """The method of the last forward solve: the ``solver`` option, or with
        solver="auto" "ERK" or "BDF" (see `Solver`)."""
        if self._c != "sl_auto":
            return self._checked.values["solver"]
        return "BDF" if lib.sl_auto_method(self._ptr) == lib.SL_BDF else "ERK"

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


class Solver(AbstractForwardSolver, AbstractCvodesSolver):
    """Forward solves with CVODES, optionally with forward sensitivities.

    Parameters
    ----------
    problem : SympyProblem
    solver : {"auto", "BDF", "ADAMS", "ERK", "DIRK"}
        Default "auto" (below). BDF for stiff problems, Adams-Moulton for non-stiff ones (CVODES). "ERK": an
        explicit Runge-Kutta pair (ARKODE; ``erk_table``) with outputs from its dense output,
        fewer steps than BDF on non-stiff problems (Lotka-Volterra at 1e-8: 147 or, on 7.5,
        127 against 410) and ``ARK_TOO_MUCH_WORK`` on stiff ones; ``linear_solver`` and
        ``bandwidths`` do not apply (a ValueError). "DIRK": the L-stable ESDIRK 4(3) in 6
        stages of Kennedy & Carpenter (ARKODE) with Newton's method over ``linear_solver``,
        for stiff problems: right where BDF is (ROBER, HIRES, POLLU at rtol = 1e-10 to 8
        digits) but measured 1.9-3.4x BDF's time at rtol = 1e-8 (fewer, costlier steps;
        `benchmarks/one_step.py --stiff`). With both, ``constraints`` and
        sens_mode="staggered" do not apply; sensitivities are integrated with the states
        (one error test). "auto":
        each solve by "ERK" within 5000 steps (Lotka-Volterra takes 147 at rtol = 1e-8,
        941 at 1e-12), given up as soon as, after 50 steps, its step size would need more
        than that to the last output time (a stiff problem holds an explicit method's
        steps at its stability limit), and then solved again from t0 by "BDF": on
        Robertson, HIRES and POLLU at rtol = 1e-8 that took 1.03-1.06x the time of BDF
        alone. Every solve starts with "ERK", so the result depends on the inputs only;
        `method_used` tells which one solved. ``constraints`` and sens_mode="staggered" do
        not apply.
    erk_table : {None, "dormand_prince", "tsitouras", "verner6", "verner7", "verner8", "verner9"}
        The Butcher table of solver="ERK" (and "auto"): None is Tsitouras 5(4) with
        SUNDIALS >= 7.4, else Dormand-Prince 5(4); Verner's 6(5) .. 9(8) pairs (SUNDIALS
        >= 7) take longer steps at tight tolerances and step to each output time, as the
        dense output cannot keep their accuracy (Lotka-Volterra, SUNDIALS 7.5: "verner8"
        0.58x and 0.42x the time of Tsitouras at rtol = 1e-8 and 1e-10, as accurate).
        `sunode_like._options.available_erk_tables()` lists this build's; another is a
        ValueError.
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
    sens_doses : int
        With sensitivities, the number of doses each solve gets (its ``doses``): theta
        then ends with each dose's time, amount and rate (3 sens_doses more rows).

    Examples
    --------
    >>> solver = Solver(problem, rtol=1e-8, atol=1e-8)        # doctest: +SKIP
    >>> solver.set_params_dict({"a": 0.5})                     # doctest: +SKIP
    >>> y_out = solver.make_output_buffers(tvals)              # doctest: +SKIP
    >>> solver.solve(0.0, tvals, {"x": 1.0}, y_out)            # doctest: +SKIP
    """

    def solve(self, t0, tvals, y0, y_out, sens_out=None, *, sens0=None, doses=None):
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
        doses : Doses, optional
            Boluses and infusions (see `Doses`): the solve stops and restarts at each dose
            time and infusion end; an output at a dose time is the state before the dose.
            The sensitivities wrt (params, y0) are continuous across doses; with the option
            ``sens_doses`` (the number of doses) theta ends with each dose's time, amount
            and rate, whose sensitivities jump there (NaN rows for a bolus's rate, which
            has no derivative).

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
        n_doses = 0 if doses is None else len(doses.state_indices(self.problem))
        if self.sens_mode and self.sens_doses and self.sens_doses != n_doses:
            raise ValueError(f"this solver's sensitivities are for sens_doses={self.sens_doses} "
                             f"doses; got {n_doses}.")
        values = self._solve(t0, tvals, y0, y_out, ptr(sens0), sens_ptr, doses)
        if self.sens_mode and self.sens_doses:
            bolus = np.flatnonzero(values[2] == 0)
            sens_out[:, self.n_sens - 3 * self.sens_doses + 3 * bolus + 2, :] = np.nan

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


class AdjointSolver(AbstractAdjointSolver, AbstractCvodesSolver):
    """Forward solve with checkpoints, then the adjoint backward in time for gradients.

    For a scalar L depending on y(tvals[i]), lambda solves lambda' = -J^T lambda backward
    from the last output time, with lambda -= dL/dy(tvals[i]) at each output time, and the
    quadrature q' = lambda^T df/dp gives dL/dp = q(t0). In this (SUNDIALS') sign convention
    dL/dy0 = -lambda(t0).

    Parameters
    ----------
    problem, solver, linear_solver, rtol, atol, max_steps, tstop, bandwidths, constraints, erk_table
        The forward problem, as for `Solver`. With solver="ERK" or "DIRK" the forward solve
        records every step (as for solver_backward="ERK"; no CVODES) and solver_backward
        must be "ERK" or "DIRK".
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
    solver_backward : {"auto", "BDF", "ADAMS", "ERK", "DIRK"}
        The backward method. Default "auto": after the forward method that ran (with
        solver="auto", the one it picked) "ERK" after ERK, "DIRK" after DIRK, and "DIRK"
        after BDF or ADAMS (0.2-0.4x the time of the BDF backward on stiff problems at
        rtol 1e-8, as accurate), except with ``linear_solver_backward="spgmr"`` (DIRK
        through unpreconditioned GMRES measured 2-3x slower than BDF on POLLU),
        ``quad_errcon=False``, or a ``checkpoint_steps`` or ``interpolation`` given,
        where it is the forward method itself (CVODES' adjoint). "BDF" and "ADAMS" use CVODES'
        adjoint module, which restarts the backward problem at order 1 after each output
        time with a nonzero ``grads[i]``. "ERK" integrates it with an explicit Runge-Kutta
        method (Dormand-Prince 5(4), stepped by our own C code) that carries its step size across those
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

    def solve_forward(self, t0, tvals, y0, y_out, *, doses=None):
        """Integrate from (t0, y0), write y(tvals[i]) into ``y_out[i]`` and keep checkpoints.

        Arguments and errors as for `Solver.solve`; `solve_backward` then reuses this
        forward solution (it is never recomputed in full). With ``doses`` the backward
        problem must be a Runge-Kutta one (``solver_backward="ERK"`` or ``"DIRK"``: CVODES'
        own adjoint cannot restart at a dose), else a ValueError.
        """
        t0, tvals = self._check_times(t0, tvals)
        y0 = self._flat_state(y0, "y0")
        check_output("y_out", y_out, (len(tvals), self.n_states))
        if doses is not None:
            check_one_step_backward(self._checked.values, "doses")
        self._forward = None
        values = self._solve(t0, tvals, y0, y_out, ffi.NULL, ffi.NULL, doses)
        self._forward_solved(t0, tvals, y0=y0.copy(), y_out=y_out.copy(), doses=values,
                             n_doses=0 if values is None else len(values[0]))

    def _time_derivatives(self, t0, tvals, y0, y_out):
        """f(t0, y0) and f(tvals[i], y_out[i]), at the forward solve's y0 and y_out, with the
        rates of the infusions on just after t0 and just before each tvals[i]."""
        y0 = self._flat_state(y0, "y0")
        if not (np.array_equal(y0, self._forward["y0"])
                and np.array_equal(real_array("y_out", y_out), self._forward["y_out"])):
            raise ValueError("`y0` and `y_out` must be those of the preceding solve_forward (dL/dt0 "
                             "and dL/dtvals use f there); got other values.")
        doses = self._forward["doses"]
        rates = (lambda t, after: 0.0) if doses is None else (
            lambda t, after: infusion_rates(doses, t, after, self.n_states))
        return (self.rhs(t0, y0) + rates(t0, True),
                [self.rhs(t, y) + rates(t, False) for t, y in zip(tvals, self._forward["y_out"])])
