"""PyTensor Ops for DAE solves on IDAS, and `solve_dae_ivp`, the DAE sibling of `solve_ivp`.

The value y(tvals; y0, params, t0) of a `DAEProblem` comes from a `DAESolver` /
`DAEAdjointSolver` forward solve (IDACalcIC makes the initial values consistent, so only
the differential part of y0 matters; the algebraic entries of the ``y0`` input are initial
guesses and get zero gradient). The vector-Jacobian product (``L_op``) comes from the IDAS
adjoint (``mode="adjoint"``, see `DAEAdjointSolver` for the jumps at output times) or from
forward sensitivities (``mode="sens"``); the Jacobian-vector product (``R_op``) always from
forward sensitivities. Time derivatives: dy(tvals[i])/dtvals[i] = y'(tvals[i]) and
dy(tvals[i])/dt0 = -S_x0(tvals[i]) x'(t0), with consistent y'.

Solvers run in Python-mode ``perform`` (no numba dispatch yet, so PyMC's numba mode and
nutpie use PyTensor's object-mode fallback). Each Op's props share a pool of solver objects
guarded by a lock: a call takes a free solver, so threads never share one, and a gradient
call prefers the solver whose last forward solve had the same inputs (its checkpoints are
reused instead of solving forward again).

Failure policy (as `solve_ivp`): a failed solve inside a graph never raises; every output of
that call is NaN (logp = NaN, a divergence for the sampler), failures are counted in
``op.n_failures`` and the first one is reported once with `warnings.warn`.
"""
import contextlib
import hashlib
import threading
import warnings

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType, grad_not_implemented
from pytensor.graph.basic import Apply, Constant
from pytensor.graph.op import Op

from .._dae_problem import DAEProblem
from .._errors import SolverError
from .._idas import DAEAdjointSolver, DAESolver
from ._failure_count import shared_count
from .as_pytensor import (
    SolveIvpResult, _flat_input, _float64, _freeze, _is_symbolic, _matrix, _pushforward, _split,
    _states_as_dict, _vector, rebuild_op)

__all__ = ["solve_dae_ivp", "SolveDAE", "SolveDAEGrad", "SolveDaeIvpResult"]

_FORWARD_OPTIONS = {"linear_solver", "rtol", "atol", "max_steps", "tstop", "bandwidths", "constraints"}
_SENS_OPTIONS = _FORWARD_OPTIONS | {"sens_errcon"}
_ADJOINT_OPTIONS = _FORWARD_OPTIONS | {
    "checkpoint_steps", "interpolation", "linear_solver_backward", "rtol_backward", "atol_backward",
    "max_steps_backward", "rtol_quad", "atol_quad", "quad_errcon"}
_DEFAULT_OPTIONS = {"rtol": 1e-8, "atol": 1e-8, "max_steps": 50_000}
_MODES = ("adjoint", "sens")


class _Slot:
    """One solver of a pool and the inputs of its last successful forward solve."""

    def __init__(self, solver):
        self.solver, self.key, self.y_out = solver, None, None


class _Pool:
    """Solver objects of one (problem, options, mode), handed out one caller at a time."""

    def __init__(self, problem, options, mode):
        self.problem, self.options, self.mode = problem, options, mode
        self.lock = threading.Lock()
        self.free = [_Slot(self._new())]  # the first one also validates the options now

    def _new(self):
        if self.mode == "adjoint":
            return DAEAdjointSolver(self.problem, **self.options)
        return DAESolver(self.problem, sens_mode="simultaneous",
                         **{k: v for k, v in self.options.items() if k in _SENS_OPTIONS})

    @contextlib.contextmanager
    def take(self, key=None):
        with self.lock:
            match = [i for i, slot in enumerate(self.free) if slot.key == key and key is not None]
            slot = self.free.pop(match[0] if match else -1) if self.free else None
        if slot is None:
            slot = _Slot(self._new())
        try:
            yield slot
        finally:
            with self.lock:
                self.free.append(slot)


_POOLS = {}
_POOLS_LOCK = threading.Lock()


def _key(y0, params, tvals, t0):
    return (np.asarray(y0).tobytes(), np.asarray(params).tobytes(), np.asarray(tvals).tobytes(), float(t0))


class _SolveDAEBase(Op):
    """What the value and gradient Ops share: the problem, options, pool and pickling."""

    __props__ = ("content_hash", "options", "mode")

    def __init__(self, problem, solver_kwargs=None, mode="adjoint"):
        if not isinstance(problem, DAEProblem):
            raise TypeError(f"`problem` must be a DAEProblem; got {type(problem).__name__}.")
        if mode not in _MODES:
            raise ValueError(f"`mode={mode!r}` is not supported; expected one of {list(_MODES)}.")
        kwargs = dict(_DEFAULT_OPTIONS, **(solver_kwargs or {}))
        allowed = _ADJOINT_OPTIONS if mode == "adjoint" else _SENS_OPTIONS
        unknown = set(kwargs) - allowed
        if unknown:
            raise ValueError(f"`solver_kwargs` has unknown options {sorted(unknown)} for mode {mode!r}; "
                             f"expected some of {sorted(allowed)}.")
        self.problem, self.solver_kwargs, self.mode = problem, kwargs, mode
        self.content_hash = problem.content_hash
        self.options = tuple(sorted((k, _freeze(v)) for k, v in kwargs.items()))
        self.n_sens = problem.n_dparams + problem.n_differential
        self._reported = False
        self._key = (self.content_hash, self.options, self.mode)
        self._count_key = "dae-" + hashlib.sha256(repr(self._key).encode()).hexdigest()[:16]
        self.pool()

    def __reduce__(self):
        # Rebuild from the problem; kernels come back from the disk cache, solvers anew, and
        # failures are counted where this process counts them.
        return rebuild_op, (type(self), self._init_args(), shared_count(self._count_key).path)

    def _init_args(self):
        return self.problem, self.solver_kwargs, self.mode

    def pool(self):
        with _POOLS_LOCK:
            if self._key not in _POOLS:
                _POOLS[self._key] = _Pool(self.problem, self.solver_kwargs, self.mode)
            return _POOLS[self._key]

    def share_failure_count(self, path):
        """Count failures in the file at ``path`` (the pickling process's count)."""
        shared_count(self._count_key, path)

    @property
    def n_failures(self):
        """Failed calls (solver errors or bad input values) of Ops with these props, in this
        process and in the processes running copies of them (as `SolveODE.n_failures`)."""
        return shared_count(self._count_key).value

    def _fail(self, error):
        shared_count(self._count_key).add()
        if not self._reported:
            self._reported = True
            warnings.warn(f"A DAE solve failed ({error}). Its outputs are NaN (logp = -inf for the "
                          f"sampler); later failures are only counted in `op.n_failures`.",
                          RuntimeWarning, stacklevel=3)

    def _inputs(self, y0, params, tvals, t0):
        y0 = _vector("y0", y0, self.problem.n_states)
        params = _vector("params", params, self.problem.n_params)
        tvals = _vector("tvals", tvals, None)
        t0 = pt.as_tensor_variable(t0)
        if t0.ndim != 0:
            raise TypeError(f"`t0` must be a scalar; got ndim={t0.ndim}, expected 0.")
        return y0, params, tvals, _float64(t0)


class SolveDAE(_SolveDAEBase):
    """y(tvals) of F(t, y, y', params) = 0, y(t0) = y0 (made consistent), as a PyTensor Op.

    Inputs ``(y0 (n_states,), params (n_params,), tvals (n_t,), t0 ())``: the algebraic
    entries of y0 are initial guesses only. Output ``y`` (n_t, n_states). With
    ``mode="sens"`` three more outputs: ``sens`` (n_t, n_dparams + n_differential, n_states)
    = d y(tvals[i]) / d(derivative params, differential y0); ``dydt0`` (n_t, n_states) and
    ``yp`` (n_t, n_states) = y'(tvals[i]) = d y(tvals[i]) / d tvals[i].

    Parameters
    ----------
    problem : DAEProblem
    solver_kwargs : dict, optional
        Options of `DAEAdjointSolver` (``mode="adjoint"``) or `DAESolver` (``mode="sens"``);
        defaults rtol = atol = 1e-8, max_steps = 50000.
    mode : {"adjoint", "sens"}
    """

    def make_node(self, y0, params, tvals, t0):
        inputs = self._inputs(y0, params, tvals, t0)
        n, n_t = self.problem.n_states, inputs[2].type.shape[0]
        outputs = [pt.tensor(dtype="float64", shape=(n_t, n))]
        if self.mode == "sens":
            outputs += [pt.tensor(dtype="float64", shape=(n_t, self.n_sens, n)),
                        pt.tensor(dtype="float64", shape=(n_t, n)), pt.tensor(dtype="float64", shape=(n_t, n))]
        return Apply(self, list(inputs), outputs)

    def perform(self, node, inputs, output_storage):
        y0, params, tvals, t0 = inputs
        n, n_t, nd = self.problem.n_states, len(tvals), self.problem.n_dparams
        y = np.full((n_t, n), np.nan)
        extra = [np.full((n_t, self.n_sens, n), np.nan), np.full((n_t, n), np.nan), np.full((n_t, n), np.nan)]
        with self.pool().take() as slot:
            slot.key = None
            try:
                slot.solver.set_params(params)
                if self.mode == "adjoint":
                    slot.solver.solve_forward(t0, tvals, y0, y)
                    slot.key, slot.y_out = _key(y0, params, tvals, t0), y.copy()
                else:
                    sens, yp = np.zeros_like(extra[0]), np.zeros_like(extra[2])
                    y0c, yp0c = slot.solver.solve(t0, tvals, y0, y, sens, yp_out=yp)
                    yp = np.array([slot.solver.consistent_yp(t, y[i], yp[i]) for i, t in enumerate(tvals)])
                    xp0 = slot.solver.consistent_yp(t0, y0c, yp0c)[self.problem.differential_indices]
                    extra = [sens, -np.tensordot(sens[:, nd:, :], xp0, axes=[[1], [0]]), yp]
            except (SolverError, ValueError) as error:
                y[:] = np.nan
                extra = [np.full_like(e, np.nan) for e in extra]
                self._fail(error)
        output_storage[0][0] = y
        if self.mode == "sens":
            for storage, value in zip(output_storage[1:], extra):
                storage[0] = value

    def infer_shape(self, *args):
        # pytensor 2.x passes (fgraph, node, shapes), 3.x (node, shapes).
        n, n_t = self.problem.n_states, args[-1][2][0]
        return [(n_t, n)] + ([(n_t, self.n_sens, n), (n_t, n), (n_t, n)] if self.mode == "sens" else [])

    def L_op(self, inputs, outputs, output_grads):
        y0, params, tvals, t0 = inputs
        if any(not isinstance(g.type, DisconnectedType) for g in output_grads[1:]):
            return [grad_not_implemented(self, i, x, "second derivatives of a DAE solve")
                    for i, x in enumerate(inputs)]
        g = output_grads[0]
        if isinstance(g.type, DisconnectedType):
            g = pt.zeros_like(outputs[0])
        if self.mode == "adjoint":
            # With constant times (the usual model) their derivatives are not worth computing.
            with_times = not (isinstance(tvals, Constant) and isinstance(t0, Constant))
            return list(SolveDAEGrad(self.problem, self.solver_kwargs, with_times=with_times)(
                y0, params, tvals, t0, g, outputs[0]))
        _, sens, dydt0, yp = outputs
        problem, nd = self.problem, self.problem.n_dparams
        dtheta = pt.tensordot(sens, g, axes=[[0, 2], [0, 1]])
        dparams = pt.set_subtensor(pt.full((problem.n_params,), np.nan)[problem.derivative_indices], dtheta[:nd])
        dy0 = pt.set_subtensor(pt.zeros((problem.n_states,))[problem.differential_indices], dtheta[nd:])
        return [dy0, dparams, (g * yp).sum(axis=1), (g * dydt0).sum()]

    def R_op(self, inputs, eval_points):
        ey0, eparams, etvals, et0 = eval_points
        outputs = self(*inputs) if self.mode == "sens" else SolveDAE(
            self.problem, {k: v for k, v in self.solver_kwargs.items() if k in _SENS_OPTIONS}, "sens")(*inputs)
        y, sens, dydt0, yp = outputs
        problem, nd = self.problem, self.problem.n_dparams
        dy = pt.zeros_like(y)
        if eparams is not None and nd > 0:
            dy += pt.tensordot(sens[:, :nd, :], eparams[problem.derivative_indices], axes=[[1], [0]])
        if ey0 is not None:
            dy += pt.tensordot(sens[:, nd:, :], ey0[problem.differential_indices], axes=[[1], [0]])
        if etvals is not None:
            dy += yp * etvals[:, None]
        if et0 is not None:
            dy += dydt0 * et0
        return [dy] + [None] * (3 if self.mode == "sens" else 0)

    # pytensor 2.x calls L_op and R_op, 3.x pullback and pushforward.
    pullback = L_op

    def pushforward(self, inputs, outputs, tangents):
        return _pushforward(self.R_op, inputs, tangents)


class SolveDAEGrad(_SolveDAEBase):
    """The vector-Jacobian product of `SolveDAE` by the IDAS adjoint.

    Inputs ``(y0, params, tvals, t0, grads, y)`` with grads[i] = dL/dy(tvals[i]) (n_t, n_states)
    and y the output of `SolveDAE` at the same inputs (not read: as an input it makes the
    forward solve run first in every backend, so its checkpoints are reused);
    outputs ``(dL/dy0, dL/dparams, dL/dtvals, dL/dt0)`` with plain signs (dL/dy0 is 0 on
    algebraic states, dL/dparams NaN for params that are not derivative params). With
    ``with_times=False`` (constant tvals and t0) the last two are 0 and not computed.
    """

    __props__ = ("content_hash", "options", "mode", "with_times")

    def __init__(self, problem, solver_kwargs=None, mode="adjoint", with_times=True):
        if mode != "adjoint":
            raise ValueError(f"`mode={mode!r}`: SolveDAEGrad needs the adjoint mode.")
        self.with_times = bool(with_times)
        super().__init__(problem, solver_kwargs, mode)

    def _init_args(self):
        return self.problem, self.solver_kwargs, self.mode, self.with_times

    def make_node(self, y0, params, tvals, t0, grads, y):
        inputs = list(self._inputs(y0, params, tvals, t0))
        grads, y = (_matrix(name, x) for name, x in (("grads", grads), ("y", y)))
        return Apply(self, inputs + [grads, y], [x.type() for x in inputs])

    def perform(self, node, inputs, output_storage):
        y0, params, tvals, t0, grads, _ = inputs
        problem = self.problem
        dparams = np.full(problem.n_params, np.nan)
        out = [np.full(problem.n_states, np.nan), dparams, np.full(len(tvals), np.nan), np.array(np.nan)]
        key = _key(y0, params, tvals, t0)
        with self.pool().take(key) as slot:
            try:
                if slot.key != key:
                    slot.key, slot.y_out = None, np.empty((len(tvals), problem.n_states))
                    slot.solver.set_params(params)
                    slot.solver.solve_forward(t0, tvals, y0, slot.y_out)
                    slot.key = key
                if self.with_times:
                    g = slot.solver.gradients(t0, tvals, y0, slot.y_out, grads)
                    dparams[problem.derivative_indices] = g.params
                    out = [g.y0, dparams, g.tvals, np.array(g.t0)]
                else:
                    _, grad_out, lambda_out = slot.solver.make_output_buffers(tvals)
                    slot.solver.solve_backward(tvals[-1], t0, tvals, grads, grad_out, lambda_out)
                    dparams[problem.derivative_indices] = grad_out
                    out = [-lambda_out, dparams, np.zeros(len(tvals)), np.array(0.0)]
            except (SolverError, ValueError) as error:
                self._fail(error)
        for storage, value in zip(output_storage, out):
            storage[0] = value

    def infer_shape(self, *args):
        return args[-1][:4]  # (fgraph, node, shapes) in pytensor 2.x, (node, shapes) in 3.x

    def L_op(self, inputs, outputs, output_grads):
        return [grad_not_implemented(self, i, x, "second derivatives of a DAE solve")
                for i, x in enumerate(inputs)]

    pullback = L_op


class SolveDaeIvpResult(SolveIvpResult):
    """What `solve_dae_ivp` returns: as `SolveIvpResult`, with y_hat holding the differential
    and the algebraic states, problem a `DAEProblem`, solver a `DAEAdjointSolver` or
    `DAESolver`, y0_flat the differential values then the algebraic guesses, and sens
    (forward) of shape ``(n_t, n_dparams + n_differential, n_states)``."""


def solve_dae_ivp(y0, params, rhs, algebraic, algebraic_states, tvals, t0, derivatives="adjoint",
                  coords=None, solver_kwargs=None, derivative_subset=None, algebraic_guess=None):
    """Solve the semi-explicit DAE x' = rhs(t, x, z, p), 0 = algebraic(t, x, z, p) inside a
    PyTensor graph; the keywords follow `solve_ivp`.

    Parameters
    ----------
    y0 : dict
        Differential state name -> value (tensor, array, float or ``(value, shape)``).
    params : dict
        As for `solve_ivp`.
    rhs, algebraic : callable
        ``rhs(t, x, z, p)`` and ``algebraic(t, x, z, p)`` as `DAEProblem`'s ``rhs_sympy`` and
        ``algebraic_sympy``.
    algebraic_states : dict
        Algebraic state name -> shape (z0 is computed by IDACalcIC).
    algebraic_guess : dict, optional
        Initial guesses for z0 (numpy values; default 0).
    tvals, t0, derivatives, coords, solver_kwargs, derivative_subset
        As for `solve_ivp`.

    Returns
    -------
    SolveDaeIvpResult
        ``(y_hat, flat, problem, solver, y0_flat, params_flat, op)``; y_hat holds the
        differential and the algebraic states.
    """
    if derivatives not in ("adjoint", "forward"):
        raise ValueError(f"`derivatives={derivatives!r}` is not supported; expected 'adjoint' or 'forward'.")
    state_spec, state_leaves = _split(y0, "y0")
    param_spec, param_leaves = _split(params, "params")
    if derivative_subset is None:
        derivative_subset = [path for path, value in param_leaves if _is_symbolic(value)]
    problem = DAEProblem(param_spec, state_spec, algebraic_states, rhs, algebraic,
                         derivative_params=derivative_subset, coords=coords)
    guess = np.zeros(problem.n_algebraic)
    if algebraic_guess is not None:
        guess = problem.algebraic.flatten(algebraic_guess)
    y0_flat = pt.concatenate([_flat_input(problem.differential, state_leaves, "y0"), pt.constant(guess)])
    params_flat = _flat_input(problem.params, param_leaves, "params")
    op = SolveDAE(problem, solver_kwargs, "adjoint" if derivatives == "adjoint" else "sens")
    outputs = op(y0_flat, params_flat, tvals, t0)
    flat, sens = (outputs, None) if op.mode == "adjoint" else outputs[:2]
    return SolveDaeIvpResult(_states_as_dict(problem, flat), flat, problem,
                             op.pool().free[0].solver if op.pool().free else None,
                             y0_flat, params_flat, op=op, sens=sens)
