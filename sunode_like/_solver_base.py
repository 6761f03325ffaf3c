"""What every solver shares: the model and options as C structs, params, input checks,
the C handle, and the forward-sensitivity and adjoint parts of the solver classes.

The CVODES and IDAS solvers differ only in the C functions they call, the model they hand
over and a few hooks; everything here is written once for both.
"""
import math
import weakref
from typing import NamedTuple

import numpy as np
import sympy

from ._codegen import compile_dae_model, compile_model
from ._events import check_solver_options
from ._errors import SolverError, describe_kernel_failure, kernel_evaluator, pattern_entries
from ._options import CheckedOptions, signature
from ._sundials import ffi, lib
from ._sunode_compat import accepts_sunode_names, from_sunode
from ._validate import real_array, real_scalar

COMPILERS = {"ode": compile_model, "dae": compile_dae_model}
# The kernels and sparsity patterns of each kind's C problem struct (csrc/sl_common.h,
# csrc/sl_idas.h), by their field names; the model holds them as <name>_cfunc, <NAME>.
_C_PROBLEMS = {
    "ode": ("sl_problem *", ("rhs", "jac", "dfdp"),
            ("jac_colptr", "jac_rows", "jact_colptr", "jact_rows", "jact_perm", "dfdp_colptr",
             "dfdp_rows")),
    "dae": ("sl_dae_problem *", ("res", "jac_y", "jac_yp", "jac_yp_dot", "dfdp"),
            ("jy_colptr", "jy_rows", "jyp_colptr", "jyp_rows", "jac_colptr", "jac_rows", "jy_map",
             "jyp_map", "jact_colptr", "jact_rows", "jact_perm", "dfdp_colptr", "dfdp_rows")),
}
# The option structs of each solver of the PyTensor Ops' modes.
POOL_STRUCTS = {"adjoint": ("options", "adjoint"), "sens": ("options", "sens")}


def c_problem(problem, model, params, dfdp=True):
    """The compiled ``model`` of ``problem`` as its C struct (``sl_problem *`` for ODEs,
    ``sl_dae_problem *`` for DAEs) reading params from the float64 array ``params``, and
    the arrays it points to that the model does not hold (keep both alive together).
    Without ``dfdp`` (which only sensitivities and adjoints call) that kernel is NULL, so
    a model that compiles its kernels on first use never compiles it."""
    ctype, kernels, patterns = _C_PROBLEMS[problem.kind]
    s = ffi.new(ctype)
    s.n_states = problem.n_states
    s.n_dparams = problem.n_dparams
    s.params = ptr(params)
    arrays = [params]
    if problem.kind == "ode":
        knots = np.unique(np.concatenate([bound.spec.times for bound in problem.inputs] or [[]]))
        arrays.append(knots)
        s.n_stop_times, s.stop_times = knots.size, ptr(knots) if knots.size else ffi.NULL
        arrays += c_events(s, problem, model, dfdp)
    # A constant dF/dy' needs no time derivative: jac_yp_dot stays NULL, never compiled.
    skipped = {"dfdp"} if not dfdp else set()
    if problem.kind == "dae" and model.JAC_YP_CONSTANT:
        skipped.add("jac_yp_dot")
    for kernel in kernels:
        if kernel not in skipped:
            setattr(s, kernel, ffi.cast("sl_kernel", getattr(model, kernel + "_cfunc").address))
    for field in patterns:
        setattr(s, field, int_ptr(getattr(model, field.upper())))
    if problem.kind == "dae":
        arrays += [problem.is_differential.astype(np.float64),
                   np.ascontiguousarray(problem.equation_id, dtype=np.float64)]
        s.id, s.equation_id = ptr(arrays[-2]), ptr(arrays[-1])
        s.jac_yp_identity = bool(model.JAC_YP_IDENTITY)
    return s, arrays


def c_events(s, problem, model, jacobians):
    """Fill the events' fields of the ``sl_problem`` ``s`` (dh/d(t, y, p), for the jump
    conditions, only with ``jacobians``); returns the arrays they point to."""
    s.n_events, s.max_events = len(problem.events), problem.max_events
    if not problem.events:
        return []
    direction = np.ascontiguousarray(model.EVENT_DIRECTION, dtype=np.int64)
    s.event_direction = int_ptr(direction)
    s.event_reset_ptr, s.event_reset_state = int_ptr(model.EVENT_RESET_PTR), int_ptr(model.EVENT_RESET_STATE)
    for kernel in ("event_g", "event_h", "event_g_jac") + (("event_h_jac",) if jacobians else ()):
        setattr(s, kernel, ffi.cast("sl_kernel", getattr(model, kernel + "_cfunc").address))
    return [direction]


class PoolArguments(NamedTuple):
    """What ``lib.sl_pool_create`` needs, in its order: ``lib.sl_pool_create(*args[:6], out)``.

    ``problem``: the C problem struct (`c_problem`); ``n_params`` and ``dparam_index``
    (int64_t *, the derivative params' flat indices); ``options``, ``sens``, ``adjoint``: the
    option structs (`CheckedOptions`; ``sens`` is NULL in mode "adjoint", ``adjoint`` in mode
    "sens"). Then ``n_sens`` (n_dparams + n_differential in mode "sens", else 0), ``values``
    (every option checked, defaults filled in), ``model`` (the compiled model, e.g. for a
    DAE's ``dfdt_cfunc``) and ``keep``: what the structs point into. Keep the whole tuple
    alive as long as the pool.
    """

    problem: object
    n_params: int
    dparam_index: object
    options: object
    sens: object
    adjoint: object
    n_sens: int
    values: dict
    model: object
    keep: tuple


def pool_arguments(problem, mode, options, sens_doses=0):
    """The checked options and C structs of a solver pool for a PyTensor Op.

    Parameters
    ----------
    problem : SympyProblem or DAEProblem
    mode : {"adjoint", "sens"}
        "adjoint": forward solves with checkpoints and backward solves (the gradient Op);
        "sens": forward solves with the sensitivities of the derivative params and of y0
        (of its differential part for DAEs), ``sens_mode`` "simultaneous" (default) or
        "staggered" (default with ``constraints``: CVODES keeps them only so).
    options : dict
        The solver options of `Solver`/`AdjointSolver` (DAEs: `DAESolver`/`DAEAdjointSolver`)
        for that mode, by our or sunode's names, except ``sens_y0`` (always True).
        Defaults are the solvers' except ``max_steps`` = 50,000.
    sens_doses : int
        In mode "sens", the number of doses whose inputs get sensitivities (the Op's).

    Returns
    -------
    PoolArguments

    Raises
    ------
    ValueError
        For an unknown option (naming it and the accepted ones), a bad mode, or
        sens_mode=None in mode "sens"; ValueError or TypeError naming the option for a
        bad value (the solvers' checks and messages).
    """
    if mode not in POOL_STRUCTS:
        raise ValueError(f"`mode={mode!r}` is not supported; expected one of {list(POOL_STRUCTS)}.")
    if problem.kind == "dae" and mode == "adjoint":
        check_linear_in_yp(problem)
    model = COMPILERS[problem.kind](problem)
    checked = CheckedOptions(problem, model, POOL_STRUCTS[mode], from_sunode(options), ops=True,
                             unknown_error=ValueError, where=f"`solver_kwargs` (mode {mode!r})",
                             fixed={"sens_doses": sens_doses} if mode == "sens" else None)
    check_solver_options(problem, checked.values, f"`solver_kwargs` (mode {mode!r})")
    if mode == "sens" and checked.values["sens_mode"] is None:
        raise ValueError("`sens_mode=None` cannot give forward derivatives; expected "
                         "'simultaneous' or 'staggered'.")
    struct, arrays = c_problem(problem, model, np.zeros(max(problem.n_params, 1)))
    dparam_index = np.ascontiguousarray(problem.derivative_indices, dtype=np.int64)
    return PoolArguments(struct, problem.n_params, int_ptr(dparam_index), checked.options,
                         checked.sens, checked.adjoint, checked.n_sens, checked.values, model,
                         (checked, arrays, dparam_index))


def check_linear_in_yp(problem):
    """A ValueError naming the first equation of the DAE ``problem`` that is not linear in
    y' (dF/dy' may depend on t and y, not on y'): IDAS' adjoint of a DAE needs that."""
    yp = set(problem.yp_symbols)
    for name, expr in zip(problem.equation_names, problem.residual_exprs):
        if any(sympy.diff(expr, s).free_symbols & yp for s in expr.free_symbols & yp):
            raise ValueError(f"DAEAdjointSolver needs F linear in yp (dF/dy' may depend on t and y, "
                             f"not on yp); {name} is not. Rewrite it, e.g. with an extra state for y'.")


def n_times(tvals):
    """The number of output times, for sizing buffers; a TypeError/ValueError naming ``tvals``
    if it is not a 1-d array of real numbers."""
    array = real_array("tvals", tvals)
    if array.ndim != 1:
        raise ValueError(f"`tvals` must be a 1-d array of output times; got shape {array.shape}.")
    return len(array)


def check_output(name, array, shape):
    if not (isinstance(array, np.ndarray) and array.dtype == np.float64 and array.shape == shape
            and array.flags.c_contiguous and array.flags.writeable):
        got = f"{array.dtype} array of shape {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"`{name}` must be a writeable C-contiguous float64 array of shape {shape}; "
                         f"got {got}. Use make_output_buffers.")


def ptr(array):
    return ffi.from_buffer("double[]", array)


def int_ptr(array):
    return ffi.from_buffer("int64_t[]", array)


class AbstractSolver:
    """The model, params, options and input checks of a solver over a C handle.

    Subclasses set ``_kind`` (the problem kind), ``_structs`` (the option structs they
    create: `AbstractForwardSolver`, `AbstractAdjointSolver`), ``_c`` (the prefix of their C
    functions, ``"sl_cvodes"``), `_create_arguments` (of ``<_c>_create``) and
    `_kernel_entries` (names for `_diagnose`). Their keyword options and signature come
    from `_options`.
    """

    _kind = None
    _structs = ()
    _c = None
    # The prefix of the C functions of the forward methods whose backend is not `_c`'s.
    _backends = {}
    # The kernels `_diagnose` checks when no kernel call failed, and how many vectors of
    # n_states the state a kernel reads holds (1 for ODEs: y; 2 for DAEs: [y, y']).
    _kernels = ()
    _state_vectors = 1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls._kind and cls._structs:
            cls.__signature__ = signature(cls._kind, cls._structs)

    @accepts_sunode_names
    def __init__(self, problem, **options):
        self._check_problem(problem)
        self.problem = problem
        self.n_states = problem.n_states
        self._model = COMPILERS[self._kind](problem)
        self._params = np.zeros(max(problem.n_params, 1))
        self._params_set = not problem.uses_params  # a solve before set_params would use p = 0
        self._checked = CheckedOptions(problem, self._model, self._structs, options,
                                       where=type(self).__name__)
        check_solver_options(problem, self._checked.values, type(self).__name__)
        self.tstop = self._checked.values["tstop"]
        self._c = self._backends.get(self._checked.values["solver"], self._c)
        self._problem_struct, self._problem_arrays = c_problem(
            problem, self._model, self._params,
            dfdp=self._checked.sens != ffi.NULL or self._checked.adjoint != ffi.NULL)
        self._ptr = None
        out = ffi.new(self._c + " **")
        flag = getattr(lib, self._c + "_create")(*self._create_arguments(), out)
        self._ptr = out[0]
        self._finalizer = weakref.finalize(self, getattr(lib, self._c + "_free"), self._ptr)
        if flag:
            self._raise(flag)

    def _check_problem(self, problem):
        """A TypeError unless ``problem`` is of the solver's kind (subclasses add checks)."""
        if getattr(problem, "kind", None) != self._kind:
            expected = "a DAEProblem" if self._kind == "dae" else "a SympyProblem"
            raise TypeError(f"`problem` must be {expected} for {type(self).__name__}; got "
                            f"{type(problem).__name__}.")

    def _raise(self, flag, problem="forward"):
        """SolverError for a failed ``problem`` ("forward" or "backward") solve. It names the
        equations where a kernel gave non-finite or unstable values (`_diagnose`): at the
        state of the last failed kernel call, else at the forward state at the failure time."""
        if self._ptr is None or self._ptr == ffi.NULL:
            raise SolverError(flag, "MEM_FAIL", np.nan, "out of memory")
        status = getattr(lib, self._c + "_status")(self._ptr)
        kernel = ffi.string(status.kernel).decode()
        state = np.zeros(self._state_vectors * self.n_states)
        if kernel:
            t, kernels = status.kernel_t, (kernel,)
            state[:] = np.frombuffer(ffi.buffer(status.kernel_y, 8 * state.size))
        else:
            t, kernels = status.t, self._kernels
        found = kernel or not getattr(lib, self._c + "_forward_state")(
            self._ptr, problem == "backward", t, ptr(state))
        raise SolverError(flag, ffi.string(status.flag_name).decode(), status.t,
                          ffi.string(status.message).decode(), problem,
                          self._diagnose(t, state, kernels) if found else "")

    def _diagnose(self, t, state, kernels):
        """What is wrong with the first of ``kernels`` that misbehaves at (t, state), or "".
        The kernel without a pattern (rhs, res) gives one value per equation."""
        equations, state_names, patterns = self._kernel_entries()
        for kernel in kernels:
            if kernel.startswith("event_"):  # several values per equation: no names to give
                continue
            if kernel in patterns:
                prefix, columns, template = patterns[kernel]
                entries = pattern_entries(getattr(self._model, prefix + "_COLPTR"),
                                          getattr(self._model, prefix + "_ROWS"), equations, columns,
                                          template)
            else:
                entries = list(equations)
            evaluate = kernel_evaluator(getattr(self._model, kernel), t, self._params, len(entries))
            failure = entries and describe_kernel_failure(kernel, t, state, evaluate, entries, state_names)
            if failure:
                return failure
        return ""

    def stats(self):
        """Work counters of the last solve as a dict (steps, rhs_evals, ...; the backward
        ones are summed over the output intervals of the last backward solve)."""
        stats = ffi.new("sl_stats *")
        getattr(lib, self._c + "_stats")(self._ptr, stats)
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
            raise ValueError(f"`params` entries {bad} are not finite (NaN or inf); expected finite numbers.")
        self._params[:self.problem.n_params] = flat
        self._params_set = True

    def get_params(self):
        """A copy of the flat params vector."""
        return self._params[:self.problem.n_params].copy()

    # -- input checks ---------------------------------------------------------------------
    def _flat_state(self, value, name):
        """A finite flat state vector from a flat, structured or dict ``value``."""
        if type(value) is np.ndarray and value.dtype == np.float64 and value.shape == (self.n_states,):
            flat = np.ascontiguousarray(value)  # the fast path of the PyTensor Ops
        else:
            flat = self.problem.states.renamed(name).flatten(value)
        if not np.isfinite(flat).all():
            bad = [leaf.name for leaf in self.problem.states.leaves if not np.all(np.isfinite(flat[leaf.slice]))]
            raise ValueError(f"`{name}` is not finite for states {bad}.")
        return flat

    def _check_times(self, t0, tvals):
        """Checked (t0, tvals) of a solve, which also needs the params to have been set."""
        if not self._params_set:
            raise ValueError(f"The params are not set; call set_params_dict (or set_params) before solving. "
                             f"Entries: {[leaf.name for leaf in self.problem.params.leaves]}.")
        t0 = t0 if type(t0) is float else real_scalar("t0", t0)
        if not (type(tvals) is np.ndarray and tvals.dtype == np.float64 and tvals.flags.c_contiguous):
            tvals = np.ascontiguousarray(real_array("tvals", tvals))
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
        raise ValueError(f"`tvals` must end by tstop; got tvals[-1]={tvals[-1]} > tstop={self.tstop}.")

    def _check_backward(self, t_last, t0, tvals, forward_key, grads, grad_out, lambda_out):
        """Checked (t0, tvals, grads) of a backward solve that follows the forward solve
        with key ``forward_key`` = (t0, tvals bytes, params bytes), or None."""
        t0, tvals = self._check_times(t0, tvals)
        if real_scalar("t_last", t_last) != tvals[-1]:
            raise ValueError(f"`t_last={t_last!r}` must equal tvals[-1]={tvals[-1]}.")
        if forward_key != (t0, tvals.tobytes(), self._params.tobytes()):
            raise ValueError("solve_backward needs a successful solve_forward with the same t0, "
                             "tvals and params first.")
        grads = np.ascontiguousarray(real_array("grads", grads))
        if grads.shape != (len(tvals), self.n_states):
            raise ValueError(f"`grads` has shape {grads.shape}; expected {(len(tvals), self.n_states)}.")
        if not np.all(np.isfinite(grads)):
            raise ValueError("`grads` must be finite.")
        check_output("grad_out", grad_out, (self.problem.n_dparams,))
        check_output("lambda_out", lambda_out, (self.n_states,))
        return t0, tvals, grads


class AbstractForwardSolver(AbstractSolver):
    """Forward solves, optionally with forward sensitivities s = dy/d(theta), theta being
    the derivative params (in ``problem.derivative_params`` order), then, with ``sens_y0``,
    y0 (its differential part for DAEs)."""

    _structs = ("options", "sens")

    def __init__(self, problem, **options):
        super().__init__(problem, **options)
        self.sens_mode = self._checked.values["sens_mode"]
        self.n_sens = self._checked.n_sens
        # s(t0) = d y0 / d theta: 0 for the params and the doses, the identity for the
        # initial values.
        self._sens0 = np.zeros((self.n_sens, self.n_states))
        self.sens_doses = self._checked.values["sens_doses"]
        n_y0 = max(self.n_sens - problem.n_dparams - 3 * self.sens_doses, 0)
        self._sens0[problem.n_dparams + np.arange(n_y0), problem.differential_indices[:n_y0]] = 1.0

    def make_output_buffers(self, tvals):
        """``y_out`` of shape (n_t, n_states), and with sensitivities also ``sens_out``
        of shape (n_t, n_sens, n_states)."""
        y_out = np.zeros((n_times(tvals), self.n_states))
        if not self.sens_mode:
            return y_out
        return y_out, np.zeros((n_times(tvals), self.n_sens, self.n_states))


class Gradients(NamedTuple):
    """dL/d(inputs) of a scalar L, with plain signs.

    Fields: ``y0`` (n_states,), ``params`` (n_dparams,) in ``problem.derivative_params``
    order, ``t0`` (float), ``tvals`` (n_t,).
    """

    y0: np.ndarray
    params: np.ndarray
    t0: float
    tvals: np.ndarray


class DoseGradients(NamedTuple):
    """`Gradients` after a forward solve with doses: its fields, then ``dose_time``,
    ``dose_amount``, ``dose_rate`` (n_doses,) (NaN for a bolus's rate, which has no
    derivative)."""

    y0: np.ndarray
    params: np.ndarray
    t0: float
    tvals: np.ndarray
    dose_time: np.ndarray
    dose_amount: np.ndarray
    dose_rate: np.ndarray


class AbstractAdjointSolver(AbstractSolver):
    """A forward solve with checkpoints, then the adjoint backward in time for gradients.

    Subclasses' ``solve_forward`` calls `_forward_solved`; `_time_derivatives` gives y'
    at t0 and at the output times for `gradients`.
    """

    _structs = ("options", "adjoint")

    def __init__(self, problem, **options):
        super().__init__(problem, **options)
        self._forward = None  # what `solve_backward` and `gradients` reuse of the forward solve

    def _forward_solved(self, t0, tvals, **solution):
        self._forward = dict(key=(t0, tvals.tobytes(), self._params.tobytes()), **solution)

    def make_output_buffers(self, tvals):
        """``(y_out, grad_out, lambda_out)`` of shapes (n_t, n_states), (n_dparams,), (n_states,)."""
        return (np.zeros((n_times(tvals), self.n_states)), np.zeros(self.problem.n_dparams),
                np.zeros(self.n_states))

    def solve_backward(self, t_last, t0, tvals, grads, grad_out, lambda_out, *, dose_grads_out=None):
        """Integrate the adjoint from ``t_last`` (= tvals[-1]) back to ``t0``.

        Parameters
        ----------
        t_last, t0 : float
            Where the backward solve starts (must be ``tvals[-1]``) and ends.
        tvals : (n_t,) array
            The output times of the preceding `solve_forward` (same t0, tvals, params).
        grads : (n_t, n_states) array
            dL/dy(tvals[i]) (for DAEs: for all states, algebraic ones included).
        grad_out : (n_dparams,) array, written
            dL/d(derivative params), in ``problem.derivative_params`` order.
        lambda_out : (n_states,) array, written
            The adjoint state at t0 (for DAEs F_y'(t0)^T lambda(t0), 0 on algebraic
            states); dL/dy0 = -lambda_out.
        dose_grads_out : (3, n_doses) array, written, optional
            After a `solve_forward` with ``doses``: rows dL/d(time), dL/d(amount),
            dL/d(rate) of each dose (see `Doses`; NaN for the rate of a bolus). With
            mu = dL/dy(t) = -lambda: a bolus into c at tau has dL/damount = mu_c(tau) and
            dL/dtime = mu(tau)^T (f(tau, y-) - f(tau, y+)); an infusion ending at
            e = tau + amount / rate has dL/dtime = rate (mu_c(e) - mu_c(tau)),
            dL/damount = mu_c(e) and dL/drate = integral_tau^e mu_c dt - amount / rate mu_c(e)
            (mu = 0 after tvals[-1]). At a dose time that is also an output time these are
            one-sided: the derivatives of moving the dose later.

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
        forward_key = None if self._forward is None else self._forward["key"]
        t0, tvals, grads = self._check_backward(t_last, t0, tvals, forward_key, grads, grad_out,
                                                lambda_out)
        n_doses = self._forward.get("n_doses", 0)
        if dose_grads_out is None:
            flag = getattr(lib, self._c + "_backward")(self._ptr, t0, len(tvals), ptr(tvals),
                                                       ptr(grads), ptr(grad_out), ptr(lambda_out))
        else:
            if not n_doses:
                raise ValueError("`dose_grads_out` needs a solve_forward with doses; it had none.")
            check_output("dose_grads_out", dose_grads_out, (3, n_doses))
            rows = [ptr(row) for row in dose_grads_out]
            flag = getattr(lib, self._c + "_backward_doses")(
                self._ptr, t0, len(tvals), ptr(tvals), ptr(grads), ptr(grad_out), ptr(lambda_out), *rows)
        if flag:
            self._raise(flag, "backward")

    def gradients(self, t0, tvals, y0, y_out, grads):
        """dL/d(y0, derivative params, t0, tvals) with plain signs, after `solve_forward`.

        ``y_out`` is the forward solution and ``grads[i] = dL/dy(tvals[i])``. Uses
        dL/dtvals[i] = grads[i] . y'(tvals[i]) and dL/dt0 = -dL/dy0 . y'(t0), with y' = f(t, y)
        for ODEs; for DAEs y' made consistent by `consistent_yp`, dL/dy0 zero on algebraic
        states (they follow the differential ones) and ``y0`` unused (the forward solve's
        consistent y0 is; it is accepted for the ODE solver's signature).

        Returns
        -------
        Gradients or DoseGradients
            ``(y0, params, t0, tvals)``; after a forward solve with doses a `DoseGradients`
            with the doses' gradients too (see `solve_backward`; y' includes the
            infusions' rates, at an output at a dose time those before it).
        """
        _, grad_out, lambda_out = self.make_output_buffers(tvals)
        n_doses = 0 if self._forward is None else self._forward.get("n_doses", 0)
        dose_grads = np.zeros((3, n_doses)) if n_doses else None
        self.solve_backward(tvals[-1], t0, tvals, grads, grad_out, lambda_out, dose_grads_out=dose_grads)
        t0, tvals = self._check_times(t0, tvals)
        yp0, yp_out = self._time_derivatives(t0, tvals, y0, y_out)
        grads = np.asarray(grads, dtype=np.float64)
        dtvals = np.array([g @ yp for g, yp in zip(grads, yp_out)])
        gradients = (-lambda_out, grad_out, float(lambda_out @ yp0), dtvals)
        return Gradients(*gradients) if dose_grads is None else DoseGradients(*gradients, *dose_grads)
