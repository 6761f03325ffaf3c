"""The PyTensor Ops of ODE and DAE solves: `Solve` (the value) and `SolveGrad` (its
vector-Jacobian product by the adjoint), one pair for both kinds of problem (see `_kinds`).

The value y(tvals; y0, params, t0) comes from a forward solve: CVODES for an ODE
dy/dt = f(t, y, p); IDAS for a DAE F(t, y, y', p) = 0, whose initial values IDACalcIC makes
consistent (the algebraic entries of y0 are guesses and get zero gradient). The
vector-Jacobian product (``L_op``, what NUTS needs) comes from the adjoint
(``mode="adjoint"``: lambda' = -J^T lambda for an ODE, with a jump of -dL/dy(tvals[i]) at
each output time; see `DAEAdjointSolver` for a DAE's) or from forward sensitivities
(``mode="sens"``); the Jacobian-vector product (``R_op``) always from forward sensitivities.
Times: dy(tvals[i])/dtvals[i] = y'(tvals[i]) and dy(tvals[i])/dt0 = -S_x0(tvals[i]) x'(t0),
with x0 the free initial states (all of y0 for an ODE, the differential part for a DAE) and
y' = f(t, y) for an ODE, the y' consistent with F = 0 for a DAE.

Solvers live in a thread-safe C pool per Op (see ``csrc/sl_pool.h``): each call takes a free
solver, so threads never share one, and a gradient call finds the solver whose last forward
solve had the same inputs and reuses its checkpoints instead of solving forward again. The
Ops' ``perform`` calls the pool through cffi, their numba implementation
(`_numba_dispatch`, for PyMC's numba mode and nutpie) without Python.

Doses (`sunode_like.Doses`): an Op with ``dose_states`` (the flat state index of each dose,
static) takes three more float vector inputs after t0, the doses' times, amounts and rates,
and its gradient Op returns dL/d of each (by the adjoint, which needs a Runge-Kutta backward
problem; a bolus's rate has no derivative: NaN). With ``mode="sens"`` the sensitivities are
those wrt (params, x0, then each dose's time, amount and rate: the option ``sens_doses``),
which give both products wrt the doses too.

Failure policy: a solve that fails inside a graph (a SUNDIALS error such as CV_TOO_MUCH_WORK,
or a non-finite input) never raises; every output of that call is NaN, so the sampler sees
logp = NaN and counts a divergence. Failures are counted (``op.n_failures``) and the first
one is reported once with `warnings.warn` (from compiled numba code: once on stderr). Bad
static input (shapes, names, options) raises when the graph is built.
"""
import hashlib
import threading
import warnings

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType, disconnected_type, grad_not_implemented
from pytensor.graph.basic import Apply, Constant
from pytensor.graph.op import Op

from .._errors import time_text
from .._options import check_one_step_backward
from .._sundials import ffi, lib
from . import _numba_dispatch
from ._failure_count import shared_count
from ._kinds import Pool, kind_of

MODES = ("adjoint", "sens")


def _freeze(value):
    """A hashable, repr-stable version of an option value (arrays become tuples)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_freeze(v) for v in np.asarray(value, dtype=object).tolist()) \
            if isinstance(value, np.ndarray) else tuple(_freeze(v) for v in value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


_POOLS = {}  # pool key -> _kinds.Pool, in this process


def _rebuild_op(cls, args, count_path):
    """Unpickle an Op: ``cls(*args)``, counting its failures where the pickling process does."""
    op = cls(*args)
    op.share_failure_count(count_path)
    return op


class _SolveOpBase(Op):
    """What the value and gradient Ops share: the problem, options, pool and pickling."""

    __props__ = ("content_hash", "options", "mode", "dose_states")

    def __init__(self, problem, solver_kwargs=None, mode="adjoint", dose_states=()):
        self.kind = kind_of(problem)
        if mode not in MODES:
            raise ValueError(f"`mode={mode!r}` is not supported; expected one of {list(MODES)}.")
        self.problem = problem
        self.solver_kwargs = self.kind.options(solver_kwargs)
        self.mode = mode
        self.content_hash = problem.content_hash
        self.options = tuple(sorted((k, _freeze(v)) for k, v in self.solver_kwargs.items()))
        self.dose_states = tuple(int(i) for i in dose_states)
        self.x0_indices = self.kind.free_initial_states(problem)
        # theta: the derivative params, x0, then (time, amount, rate) of each dose.
        self.sens_doses = len(self.dose_states) if mode == "sens" else 0
        self.n_theta_x = problem.n_dparams + len(self.x0_indices)
        self.n_sens = self.n_theta_x + 3 * self.sens_doses
        digest = hashlib.sha256(repr((self.content_hash, self.options, mode, self.sens_doses))
                                .encode()).hexdigest()
        self.pool_key = int(digest[:15], 16)
        if self.dose_states and self.kind.kind != "ode":
            raise ValueError("`doses` are not supported for DAEs (see docs/limitations.md).")
        if any(not 0 <= i < problem.n_states for i in self.dose_states):
            raise ValueError(f"`dose_states={self.dose_states}` must be flat state indices in "
                             f"[0, {problem.n_states}).")
        self._dose_state_array = np.array(self.dose_states, dtype=np.int64)
        self._reported = False
        values = self.ensure_pool().arguments.values
        if self.dose_states and mode == "adjoint":
            check_one_step_backward(values, "doses")

    def _init_args(self):
        return self.problem, self.solver_kwargs, self.mode, self.dose_states

    def __reduce__(self):
        # Rebuild from the problem (plain data and sympy expressions); the compiled kernels
        # come back from the disk cache, the solver pool is created anew and counts failures
        # where this process does.
        return _rebuild_op, (type(self), self._init_args(), shared_count(self.pool_key).path)

    def ensure_pool(self):
        """The C pool of this Op's props, created and registered on first use."""
        pool = _POOLS.get(self.pool_key)
        if pool is None:
            pool = _POOLS[self.pool_key] = Pool(self.kind, self.problem, self.solver_kwargs,
                                                self.mode, self.pool_key, self.sens_doses)
            lib.sl_pool_share_failures(pool.ptr, shared_count(self.pool_key).pointer)
        self._ptr = pool.ptr
        return pool

    def share_failure_count(self, path):
        """Count failures in the file at ``path`` (the count of the process that pickled
        this Op) from now on."""
        lib.sl_pool_share_failures(self.ensure_pool().ptr, shared_count(self.pool_key, path).pointer)

    @property
    def n_failures(self):
        """Failed calls (solver errors or non-finite inputs) of Ops with these props, in
        this process and in the processes running copies of them (forked, or unpickled as
        in PyMC's multiprocess sampling), so also after ``pm.sample(cores=2)``."""
        self.ensure_pool()
        return shared_count(self.pool_key).value

    @property
    def n_forward_solves(self):
        """Forward solves run by Ops with these props (gradients that reuse one run none)."""
        return int(lib.sl_pool_forward_solves(self.ensure_pool().ptr))

    def _report(self, status):
        """Warn once per Op about a failed call (``status``: its ``sl_status *``)."""
        if self._reported:
            return
        self._reported = True
        name = ffi.string(status.flag_name).decode()
        message = ffi.string(status.message).decode().rstrip(". ")
        solve = f"{self.kind.noun[0].upper()}{self.kind.noun[1:]} solve"  # "An ODE solve"
        if status.flag == lib.SL_BAD_INPUT:
            what = f"{solve} got invalid input ({message})"
        else:
            what = (f"{solve} failed with {name} ({status.flag}) at t = {time_text(status.t)}"
                    f"{': ' + message if message else ''}")
        warnings.warn(f"{what}. Its outputs are NaN (logp = -inf for the sampler); later "
                      f"failures are only counted in `op.n_failures`.", RuntimeWarning, stacklevel=3)

    def _inputs(self, y0, params, tvals, t0, *doses):
        """Check and convert the four inputs and the doses' three (raises TypeError with got
        vs expected)."""
        y0 = _vector("y0", y0, self.problem.n_states)
        params = _vector("params", params, self.problem.n_params)
        tvals = _vector("tvals", tvals, None)
        t0 = pt.as_tensor_variable(t0)
        if t0.ndim != 0:
            raise TypeError(f"`t0` must be a scalar; got ndim={t0.ndim}, expected 0.")
        n_doses = len(self.dose_states)
        if len(doses) != (3 if n_doses else 0):
            raise TypeError(f"expected {3 if n_doses else 0} dose inputs (time, amount, rate) for "
                            f"dose_states={self.dose_states}; got {len(doses)}.")
        doses = [_vector(f"doses.{name}", x, n_doses) for name, x in zip(("time", "amount", "rate"), doses)]
        return [y0, params, tvals, float64(t0)] + doses

    def _c_doses(self, *doses):
        """An ``sl_doses *`` over the dose inputs (time, amount, rate; none: NULL) and what
        it points into."""
        if not self.dose_states:
            return ffi.NULL, ()
        arrays = [np.ascontiguousarray(x, dtype=np.float64) for x in doses]
        doses = ffi.new("sl_doses *")
        doses.n = len(self.dose_states)
        doses.time, doses.amount, doses.rate = (_buf(x) for x in arrays)
        doses.state = ffi.from_buffer("int64_t[]", self._dose_state_array)
        return doses, arrays

    def _second_derivatives(self, inputs):
        return [grad_not_implemented(self, i, x, f"second derivatives of {self.kind.noun} solve")
                for i, x in enumerate(inputs)]


_local = threading.local()


def _status():
    """This thread's ``sl_status *`` buffer for the reason of a failed call."""
    try:
        return _local.status
    except AttributeError:
        _local.status = ffi.new("sl_status *")
        return _local.status


def _buf(array):
    """A ``double *`` view of a float64 array (C-contiguous, as C needs: copied if not)."""
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return ffi.from_buffer("double[]", array)


_NULL3 = [ffi.NULL] * 3


def float64(x):
    """The tensor ``x`` as float64 (TypeError for a non-numeric dtype)."""
    if x.dtype == "float64":
        return x
    if x.dtype.startswith(("float", "int", "uint")):
        return pt.cast(x, "float64")
    raise TypeError(f"expected a float64 tensor; got dtype {x.dtype}.")


def _matrix(name, x):
    x = float64(pt.as_tensor_variable(x))
    if x.ndim != 2:
        raise TypeError(f"`{name}` must be a matrix; got ndim={x.ndim}, expected 2.")
    return x


def _vector(name, x, size):
    x = pt.as_tensor_variable(x)
    if x.ndim != 1:
        raise TypeError(f"`{name}` must be a vector; got ndim={x.ndim}, expected 1 "
                        f"(shape ({size if size is not None else 'n_t'},)).")
    if size is not None and x.type.shape[0] not in (None, size):
        raise TypeError(f"`{name}` has static shape {x.type.shape}; expected ({size},).")
    return float64(x)


class Solve(_SolveOpBase):
    """y(tvals) of an ODE or DAE from y(t0) = y0, as a PyTensor Op.

    Inputs ``(y0_flat (n_states,), params_flat (n_params,), tvals (n_t,), t0 ())``; output
    ``y`` of shape (n_t, n_states), time-major, in the problem's flat layout (for a DAE the
    algebraic entries of y0 are initial guesses only). With ``mode="sens"`` three more
    outputs: ``sens`` (n_t, n_dparams + n_x0 + 3 n_doses, n_states), d y(tvals[i]) /
    d(derivative params, x0, each dose's time, amount and rate; a bolus's rate row is 0);
    ``dydt0`` (n_t, n_states); ``fy`` (n_t, n_states) = y'(tvals[i]) = d y(tvals[i]) /
    d tvals[i]. x0: all states of an ODE, the differential states of a DAE.

    Parameters
    ----------
    problem : SympyProblem or DAEProblem
    solver_kwargs : dict, optional
        Options of `AdjointSolver` / `DAEAdjointSolver` (``mode="adjoint"``) or `Solver` /
        `DAESolver` (``mode="sens"``); defaults rtol = atol = 1e-8, max_steps = 50000.
    mode : {"adjoint", "sens"}
        How gradients are computed: ``L_op`` by the adjoint, or from the sensitivity outputs.
    """

    def make_node(self, y0, params, tvals, t0, *doses):
        inputs = self._inputs(y0, params, tvals, t0, *doses)
        n, n_t = self.problem.n_states, inputs[2].type.shape[0]
        outputs = [pt.tensor(dtype="float64", shape=(n_t, n))]
        if self.mode == "sens":
            outputs += [pt.tensor(dtype="float64", shape=(n_t, self.n_sens, n)),
                        pt.tensor(dtype="float64", shape=(n_t, n)),
                        pt.tensor(dtype="float64", shape=(n_t, n))]
        return Apply(self, list(inputs), outputs)

    def perform(self, node, inputs, output_storage):
        # Direct cffi calls: the cheapest way from Python to C (a numba dispatch of this many
        # arguments costs several times more). Keep this lean: it runs at every logp.
        y0, params, tvals, t0 = inputs[:4]
        n_t = len(tvals)
        y = np.empty((n_t, self.problem.n_states))
        status = _status()
        doses, keep = self._c_doses(*inputs[4:])
        if self.mode == "sens":
            n = self.problem.n_states
            extra = [np.empty((n_t, self.n_sens, n)), np.empty((n_t, n)), np.empty((n_t, n))]
            pointers = [_buf(x) for x in extra]
        else:
            extra, pointers = [], _NULL3
        if lib.sl_pool_solve_doses(self._ptr, float(t0), _buf(y0), _buf(params), n_t, _buf(tvals),
                                   doses, _buf(y), *pointers, status):
            for x in [y] + extra:
                x[...] = np.nan
            self._report(status)
        output_storage[0][0] = y
        for storage, value in zip(output_storage[1:], extra):
            storage[0] = value

    def infer_shape(self, *args):
        # pytensor 2.x passes (fgraph, node, shapes), 3.x (node, shapes).
        n, n_t = self.problem.n_states, args[-1][2][0]
        out = [(n_t, n)]
        if self.mode == "sens":
            out += [(n_t, self.n_sens, n), (n_t, n), (n_t, n)]
        return out

    # The math is written once (_vjp, _jvp); pytensor 2.x calls L_op and R_op (None for a
    # disconnected tangent), 3.x pullback and pushforward (DisconnectedType instead).
    def L_op(self, inputs, outputs, output_grads):
        return self._vjp(inputs, outputs, output_grads)

    pullback = L_op

    def R_op(self, inputs, eval_points):
        return self._jvp(inputs, eval_points)

    def pushforward(self, inputs, outputs, tangents):
        points = [None if isinstance(t.type, DisconnectedType) else t for t in tangents]
        return [disconnected_type() if r is None else r for r in self._jvp(inputs, points)]

    def _vjp(self, inputs, outputs, output_grads):
        y0, params, tvals, t0 = inputs[:4]
        if any(not isinstance(g.type, DisconnectedType) for g in output_grads[1:]):
            return self._second_derivatives(inputs)
        g = output_grads[0]
        if isinstance(g.type, DisconnectedType):
            g = pt.zeros_like(outputs[0])
        if self.mode == "adjoint":
            # With constant times (the usual model) their derivatives are not worth computing.
            with_times = not (isinstance(tvals, Constant) and isinstance(t0, Constant))
            return list(SolveGrad(self.problem, self.solver_kwargs, with_times=with_times,
                                  dose_states=self.dose_states)(*inputs, g, outputs[0]))
        _, sens, dydt0, fy = outputs
        problem, nd = self.problem, self.problem.n_dparams
        dtheta = pt.tensordot(sens, g, axes=[[0, 2], [0, 1]])  # sum_i,j g[i,j] sens[i,k,j]
        dparams = pt.set_subtensor(pt.full((problem.n_params,), np.nan)[problem.derivative_indices],
                                   dtheta[:nd])
        dy0 = pt.set_subtensor(pt.zeros((problem.n_states,))[self.x0_indices],
                               dtheta[nd:self.n_theta_x])
        doses = []
        if self.dose_states:
            d = dtheta[self.n_theta_x:].reshape((len(self.dose_states), 3))
            doses = [d[:, 0], d[:, 1], pt.switch(inputs[6] > 0, d[:, 2], np.nan)]  # a bolus: NaN
        return [dy0, dparams, (g * fy).sum(axis=1), (g * dydt0).sum()] + doses

    def _jvp(self, inputs, eval_points):
        ey0, eparams, etvals, et0 = eval_points[:4]
        if self.mode == "sens":
            outputs = self(*inputs)
        else:
            sens_options = {k: v for k, v in self.solver_kwargs.items() if k in self.kind.keywords("sens")}
            outputs = Solve(self.problem, sens_options, "sens", self.dose_states)(*inputs)
        y, sens, dydt0, fy = outputs
        problem, nd = self.problem, self.problem.n_dparams
        dy = pt.zeros_like(y)
        if eparams is not None and nd > 0:
            dy += pt.tensordot(sens[:, :nd, :], eparams[problem.derivative_indices], axes=[[1], [0]])
        if ey0 is not None:
            dy += pt.tensordot(sens[:, nd:self.n_theta_x, :], ey0[self.x0_indices], axes=[[1], [0]])
        if self.dose_states:
            rows = sens[:, self.n_theta_x:, :].reshape((y.shape[0], len(self.dose_states), 3, y.shape[1]))
            for k, tangent in enumerate(eval_points[4:]):
                if tangent is None:
                    continue
                if k == 2:  # a bolus's rate has no derivative: NaN unless its tangent is 0
                    tangent = pt.switch(inputs[6] > 0, tangent, pt.switch(pt.eq(tangent, 0), 0.0, np.nan))
                dy += pt.tensordot(rows[:, :, k, :], tangent, axes=[[1], [0]])
        if etvals is not None:
            dy += fy * etvals[:, None]
        if et0 is not None:
            dy += dydt0 * et0
        return [dy] + [None] * (len(outputs) - 1 if self.mode == "sens" else 0)


class SolveGrad(_SolveOpBase):
    """The vector-Jacobian product of `Solve` by the adjoint method.

    Inputs ``(y0, params, tvals, t0, [dose time, amount, rate,] grads, y)`` with
    grads[i] = dL/dy(tvals[i]) of shape (n_t, n_states) and y the output of `Solve` at the
    same inputs; outputs ``(dL/dy0, dL/dparams, dL/dtvals, dL/dt0[, dL/d(dose time, amount,
    rate)])`` with plain signs (dL/dy0 is 0 on a DAE's algebraic states; dL/dparams is NaN
    for params that are not derivative params, dL/drate for boluses). With
    ``with_times=False`` (constant tvals and t0) the last two are 0 and not computed. The
    value of y is not read: as an input it makes the forward solve run first in every
    backend (numba's would otherwise be free to run this Op first when grads does not
    depend on y), and this Op then reuses its checkpoints, so one value and gradient cost
    one forward solve.
    """

    __props__ = ("content_hash", "options", "mode", "with_times", "dose_states")

    def __init__(self, problem, solver_kwargs=None, mode="adjoint", with_times=True, dose_states=()):
        if mode != "adjoint":
            raise ValueError(f"`mode={mode!r}`: the gradient Op needs the adjoint mode.")
        self.with_times = bool(with_times)
        super().__init__(problem, solver_kwargs, mode, dose_states)

    def _init_args(self):
        return self.problem, self.solver_kwargs, self.mode, self.with_times, self.dose_states

    def make_node(self, y0, params, tvals, t0, *rest):
        *doses, grads, y = rest
        inputs = self._inputs(y0, params, tvals, t0, *doses)
        grads, y = (_matrix(name, x) for name, x in (("grads", grads), ("y", y)))
        outputs = [x.type() for x in inputs[:4]] + [x.type() for x in inputs[4:]]
        return Apply(self, inputs + [grads, y], outputs)

    def perform(self, node, inputs, output_storage):
        y0, params, tvals, t0 = inputs[:4]
        grads = inputs[-2]
        n_doses = len(self.dose_states)
        dy0, dparams = np.empty(self.problem.n_states), np.empty(self.problem.n_params)
        dtvals, dt0 = np.zeros(len(tvals)), np.zeros(())
        dose_grads = [np.empty(n_doses) for _ in range(3 if n_doses else 0)]
        times = [_buf(dt0), _buf(dtvals)] if self.with_times else [ffi.NULL, ffi.NULL]
        doses, keep = self._c_doses(*inputs[4:-2])
        status = _status()
        if lib.sl_pool_gradient_doses(self._ptr, float(t0), _buf(y0), _buf(params), len(tvals),
                                      _buf(tvals), doses, _buf(grads), _buf(dy0), _buf(dparams),
                                      *times, *([_buf(x) for x in dose_grads] or _NULL3), status):
            for x in [dy0, dparams, dtvals, dt0] + dose_grads:
                x[...] = np.nan
            self._report(status)
        for storage, value in zip(output_storage, [dy0, dparams, dtvals, dt0] + dose_grads):
            storage[0] = value

    def infer_shape(self, *args):
        # (fgraph, node, shapes) in pytensor 2.x, (node, shapes) in 3.x: the inputs' shapes.
        return args[-1][:len(args[-1]) - 2]

    def L_op(self, inputs, outputs, output_grads):
        return self._second_derivatives(inputs)

    pullback = L_op


_numba_dispatch.register(Solve, SolveGrad)
