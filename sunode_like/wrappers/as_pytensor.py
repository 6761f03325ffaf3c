"""PyTensor Ops for ODE solves, and `solve_ivp`, the sunode-compatible way to build them.

The value of an ODE solve y(tvals; y0, params, t0) comes from a forward solve with CVODES.
Its vector-Jacobian product (``L_op``, what NUTS needs) comes from the adjoint
lambda' = -J^T lambda integrated backward with a jump of -dL/dy(tvals[i]) at each output
time (``derivatives="adjoint"``, the default), or from forward sensitivities
s' = J s + df/dtheta contracted with dL/dy (``derivatives="forward"``). The Jacobian-vector
product (``R_op``) always uses forward sensitivities. Derivatives with respect to times:
dy(tvals[i])/dtvals[i] = f(tvals[i], y_i) and dy(tvals[i])/dt0 = -S_y0(tvals[i]) f(t0, y0).

Solvers live in a thread-safe C pool per Op (see ``csrc/sl_pool.h``): each call takes a free
solver, so threads never share one, and a gradient call finds the solver whose last forward
solve had the same inputs and reuses its checkpoints instead of solving forward again.

Failure policy: a solve that fails inside a graph (a SUNDIALS error such as CV_TOO_MUCH_WORK,
or a non-finite input) never raises; every output of that call is NaN, so the sampler sees
logp = NaN and counts a divergence. Failures are counted (`SolveODE.n_failures`) and the first
one is reported once with `warnings.warn` (from compiled numba code: once on stderr). Bad
static input (shapes, names, options) raises when the graph is built.
"""
import hashlib
import threading
import warnings

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType, disconnected_type, grad_not_implemented
from pytensor.graph.basic import Apply, Constant, Variable
from pytensor.graph.op import Op

from .._cvodes import AdjointSolver, Solver
from .._problem import SympyProblem
from .._solver_base import SENS_MODES
from .._sundials import ffi, lib
from .._sunode_compat import from_sunode
from .._validate import real_array
from . import _numba_dispatch as _nd
from ._failure_count import shared_count

__all__ = ["solve_ivp", "SolveODE", "SolveODEGrad", "SolveIvpResult"]

_FORWARD_OPTIONS = {"solver", "linear_solver", "rtol", "atol", "max_steps", "tstop", "bandwidths",
                    "constraints"}
_SENS_OPTIONS = _FORWARD_OPTIONS | {"sens_errcon", "sens_mode"}
_ADJOINT_OPTIONS = _FORWARD_OPTIONS | {
    "checkpoint_steps", "interpolation", "solver_backward", "linear_solver_backward",
    "rtol_backward", "atol_backward", "max_steps_backward", "rtol_quad", "atol_quad", "quad_errcon"}
_DEFAULT_OPTIONS = {"rtol": 1e-8, "atol": 1e-8, "max_steps": 50_000}
_MODES = ("adjoint", "sens")


def _freeze(value):
    """A hashable, repr-stable version of an option value (arrays become tuples)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_freeze(v) for v in np.asarray(value, dtype=object).tolist()) \
            if isinstance(value, np.ndarray) else tuple(_freeze(v) for v in value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


class _Pool:
    """A C solver pool of one (problem, options, mode), registered under its key."""

    def __init__(self, problem, options, mode, key):
        # The Python solver validates the options and builds the C structs, which the pool
        # copies; creating it also fails early (at graph construction) on bad options.
        if mode == "adjoint":
            self.solver = AdjointSolver(problem, **options)
            sens, adjoint = ffi.NULL, self.solver._adjoint_struct
        else:
            self.solver = Solver(problem, **options)
            sens = ffi.new("sl_sens_options *")
            sens.mode, sens.n_sens, sens.errcon = SENS_MODES[options["sens_mode"]], \
                self.solver.n_sens, bool(options.get("sens_errcon", True))
            adjoint = ffi.NULL
        self.dparam_index = np.ascontiguousarray(problem.derivative_indices, dtype=np.int64)
        out = ffi.new("sl_pool **")
        flag = lib.sl_pool_create(self.solver._problem_struct, problem.n_params,
                                  ffi.cast("int64_t *", self.dparam_index.ctypes.data),
                                  self.solver._options.struct, sens, adjoint, out)
        self.ptr = out[0]
        if flag:
            lib.sl_pool_free(self.ptr)
            raise MemoryError("could not allocate the solver pool")
        lib.sl_registry_set(key, self.ptr)
        # Pools live as long as the process: compiled functions find them by key at any time.


_POOLS = {}


def _rebuild_op(cls, args, count_path):
    """Unpickle an Op: ``cls(*args)``, counting its failures where the pickling process does."""
    op = cls(*args)
    op.share_failure_count(count_path)
    return op


class _SolveOpBase(Op):
    """What the value and gradient Ops share: the problem, options, pool and pickling."""

    __props__ = ("content_hash", "options", "mode")

    def __init__(self, problem, solver_kwargs=None, mode="adjoint"):
        if not isinstance(problem, SympyProblem):
            raise TypeError(f"`problem` must be a SympyProblem; got {type(problem).__name__}.")
        if mode not in _MODES:
            raise ValueError(f"`mode={mode!r}` is not supported; expected one of {list(_MODES)}.")
        kwargs = dict(_DEFAULT_OPTIONS, **from_sunode(solver_kwargs or {}))
        allowed = _ADJOINT_OPTIONS if mode == "adjoint" else _SENS_OPTIONS
        unknown = set(kwargs) - allowed
        if unknown:
            raise ValueError(f"`solver_kwargs` has unknown options {sorted(unknown)} for "
                             f"mode {mode!r}; expected some of {sorted(allowed)}.")
        if mode == "sens":  # CVODES keeps constraints only with staggered sensitivities
            kwargs.setdefault("sens_mode", "staggered" if "constraints" in kwargs else "simultaneous")
            if kwargs["sens_mode"] not in ("simultaneous", "staggered"):
                raise ValueError(f"`sens_mode={kwargs['sens_mode']!r}` cannot give forward "
                                 f"derivatives; expected 'simultaneous' or 'staggered'.")
        self.problem = problem
        self.solver_kwargs = kwargs
        self.mode = mode
        self.content_hash = problem.content_hash
        self.options = tuple(sorted((k, _freeze(v)) for k, v in kwargs.items()))
        digest = hashlib.sha256(repr((self.content_hash, self.options, mode)).encode()).hexdigest()
        self.pool_key = int(digest[:15], 16)
        self.n_sens = problem.n_dparams + problem.n_states
        self._reported = False
        self.ensure_pool()

    def __reduce__(self):
        # Rebuild from the problem (plain data and sympy expressions); the compiled kernels
        # come back from the disk cache, the solver pool is created anew and counts failures
        # where this process does.
        return _rebuild_op, (type(self), (self.problem, self.solver_kwargs, self.mode),
                            shared_count(self.pool_key).path)

    def ensure_pool(self):
        """The C pool of this Op's props, created and registered on first use."""
        pool = _POOLS.get(self.pool_key)
        if pool is None:
            pool = _POOLS[self.pool_key] = _Pool(self.problem, self.solver_kwargs, self.mode,
                                                 self.pool_key)
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
        if status.flag == lib.SL_BAD_INPUT:
            what = f"An ODE solve got invalid input ({message})"
        else:
            what = (f"An ODE solve failed with {name} ({status.flag}) at t = {status.t:.6g}"
                    f"{': ' + message if message else ''}")
        warnings.warn(f"{what}. Its outputs are NaN (logp = -inf for the sampler); later "
                      f"failures are only counted in `op.n_failures`.", RuntimeWarning, stacklevel=3)

    def _inputs(self, y0, params, tvals, t0):
        """Check and convert the four inputs (raises TypeError with got vs expected)."""
        y0 = _vector("y0", y0, self.problem.n_states)
        params = _vector("params", params, self.problem.n_params)
        tvals = _vector("tvals", tvals, None)
        t0 = pt.as_tensor_variable(t0)
        if t0.ndim != 0:
            raise TypeError(f"`t0` must be a scalar; got ndim={t0.ndim}, expected 0.")
        return y0, params, tvals, _float64(t0)


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


def _float64(x):
    if x.dtype == "float64":
        return x
    if x.dtype.startswith(("float", "int", "uint")):
        return pt.cast(x, "float64")
    raise TypeError(f"expected a float64 tensor; got dtype {x.dtype}.")


def _matrix(name, x):
    x = _float64(pt.as_tensor_variable(x))
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
    return _float64(x)


class SolveODE(_SolveOpBase):
    """y(tvals) of dy/dt = f(t, y, params), y(t0) = y0, as a PyTensor Op.

    Inputs ``(y0_flat (n_states,), params_flat (n_params,), tvals (n_t,), t0 ())``; output
    ``y`` of shape (n_t, n_states), time-major, in the problem's flat layout. With
    ``mode="sens"`` three more outputs: ``sens`` (n_t, n_dparams + n_states, n_states),
    d y(tvals[i]) / d(derivative params, y0); ``dydt0`` (n_t, n_states); ``fy`` (n_t, n_states)
    = f(tvals[i], y_i) = d y(tvals[i]) / d tvals[i].

    Parameters
    ----------
    problem : SympyProblem
    solver_kwargs : dict, optional
        Options of `AdjointSolver` (``mode="adjoint"``) or `Solver` (``mode="sens"``);
        defaults rtol = atol = 1e-8, max_steps = 50000.
    mode : {"adjoint", "sens"}
        How gradients are computed: ``L_op`` by the adjoint, or from the sensitivity outputs.
    """

    def make_node(self, y0, params, tvals, t0):
        inputs = self._inputs(y0, params, tvals, t0)
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
        y0, params, tvals, t0 = inputs
        n_t = len(tvals)
        y = np.empty((n_t, self.problem.n_states))
        status = _status()
        if self.mode == "sens":
            n = self.problem.n_states
            extra = [np.empty((n_t, self.n_sens, n)), np.empty((n_t, n)), np.empty((n_t, n))]
            pointers = [_buf(x) for x in extra]
        else:
            extra, pointers = [], _NULL3
        if lib.sl_pool_solve(self._ptr, float(t0), _buf(y0), _buf(params), n_t, _buf(tvals),
                             _buf(y), *pointers, status):
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
        return _pushforward(self._jvp, inputs, tangents)

    def _vjp(self, inputs, outputs, output_grads):
        y0, params, tvals, t0 = inputs
        if any(not isinstance(g.type, DisconnectedType) for g in output_grads[1:]):
            return [grad_not_implemented(self, i, x, "second derivatives of an ODE solve")
                    for i, x in enumerate(inputs)]
        g = output_grads[0]
        if isinstance(g.type, DisconnectedType):
            g = pt.zeros_like(outputs[0])
        if self.mode == "adjoint":
            dy0, dparams, dtvals, dt0 = SolveODEGrad(self.problem, self.solver_kwargs)(
                y0, params, tvals, t0, g, outputs[0])
            return [dy0, dparams, dtvals, dt0]
        _, sens, dydt0, fy = outputs
        nd = self.problem.n_dparams
        dtheta = pt.tensordot(sens, g, axes=[[0, 2], [0, 1]])  # sum_i,j g[i,j] sens[i,k,j]
        dparams = pt.full((self.problem.n_params,), np.nan)
        dparams = pt.set_subtensor(dparams[self.problem.derivative_indices], dtheta[:nd])
        return [dtheta[nd:], dparams, (g * fy).sum(axis=1), (g * dydt0).sum()]

    def _jvp(self, inputs, eval_points):
        y0, params, tvals, t0 = inputs
        ey0, eparams, etvals, et0 = eval_points
        if self.mode == "sens":
            outputs = self(*inputs)
        else:
            outputs = SolveODE(self.problem, _sens_options(self.solver_kwargs), "sens")(*inputs)
        y, sens, dydt0, fy = outputs
        nd = self.problem.n_dparams
        dy = pt.zeros_like(y)
        if eparams is not None and nd > 0:
            dy += pt.tensordot(sens[:, :nd, :], eparams[self.problem.derivative_indices], axes=[[1], [0]])
        if ey0 is not None:
            dy += pt.tensordot(sens[:, nd:, :], ey0, axes=[[1], [0]])
        if etvals is not None:
            dy += fy * etvals[:, None]
        if et0 is not None:
            dy += dydt0 * et0
        return [dy] + [None] * (len(outputs) - 1 if self.mode == "sens" else 0)


def _sens_options(kwargs):
    return {k: v for k, v in kwargs.items() if k in _SENS_OPTIONS}


def _pushforward(jvp, inputs, tangents):
    """pytensor 3.x's pushforward through an R_op-style ``jvp(inputs, eval_points)``."""
    points = [None if isinstance(t.type, DisconnectedType) else t for t in tangents]
    return [disconnected_type() if r is None else r for r in jvp(inputs, points)]


class SolveODEGrad(_SolveOpBase):
    """The vector-Jacobian product of `SolveODE` by the adjoint method.

    Inputs ``(y0, params, tvals, t0, grads, y)`` with grads[i] = dL/dy(tvals[i]) of shape
    (n_t, n_states) and y the output of `SolveODE` at the same inputs; outputs
    ``(dL/dy0, dL/dparams, dL/dtvals, dL/dt0)`` with plain signs (dL/dparams is NaN for
    params that are not derivative params). The value of y is not read: as an input it makes
    the forward solve run first in every backend (numba's would otherwise be free to run
    this Op first when grads does not depend on y), and this Op then reuses its checkpoints,
    so one value and gradient cost one forward solve.
    """

    def __init__(self, problem, solver_kwargs=None, mode="adjoint"):
        if mode != "adjoint":
            raise ValueError(f"`mode={mode!r}`: SolveODEGrad needs the adjoint mode.")
        super().__init__(problem, solver_kwargs, mode)

    def make_node(self, y0, params, tvals, t0, grads, y):
        inputs = list(self._inputs(y0, params, tvals, t0))
        grads, y = (_matrix(name, x) for name, x in (("grads", grads), ("y", y)))
        outputs = [x.type() for x in inputs]
        return Apply(self, inputs + [grads, y], outputs)

    def perform(self, node, inputs, output_storage):
        y0, params, tvals, t0, grads, _ = inputs
        dy0, dparams = np.empty(self.problem.n_states), np.empty(self.problem.n_params)
        dtvals, dt0 = np.empty(len(tvals)), np.empty(())
        status = _status()
        if lib.sl_pool_gradient(self._ptr, float(t0), _buf(y0), _buf(params), len(tvals),
                                _buf(tvals), _buf(grads), _buf(dy0), _buf(dparams), _buf(dt0),
                                _buf(dtvals), status):
            for x in (dy0, dparams, dtvals, dt0):
                x[...] = np.nan
            self._report(status)
        output_storage[0][0] = dy0
        output_storage[1][0] = dparams
        output_storage[2][0] = dtvals
        output_storage[3][0] = dt0

    def infer_shape(self, *args):
        return args[-1][:4]  # (fgraph, node, shapes) in pytensor 2.x, (node, shapes) in 3.x

    def L_op(self, inputs, outputs, output_grads):
        return [grad_not_implemented(self, i, x, "second derivatives of an ODE solve")
                for i, x in enumerate(inputs)]

    pullback = L_op


_nd.register(SolveODE, SolveODEGrad)


# -- solve_ivp --------------------------------------------------------------------------------

class SolveIvpResult(tuple):
    """What `solve_ivp` returns. It unpacks like sunode's tuple:
    ``(y_hat, flat, problem, solver, y0_flat, params_flat)`` with adjoint derivatives, and
    ``(y_hat, flat, problem, solver, y0_flat, params_flat, sens, op)`` with forward ones.
    Each value is also an attribute, as are ``op`` (the `SolveODE` Op) and ``n_failures``
    (its count of failed solves, worker processes of a sampler included).

    ``y_hat``: nested dict of tensors ``(n_t, *shape)`` like ``y0``; ``flat``: tensor
    ``(n_t, n_states)``; ``problem``: the `SympyProblem`; ``solver``: an `AdjointSolver`
    (adjoint) or `Solver` (forward) with the same options; ``y0_flat``: tensor
    ``(n_states,)``; ``params_flat``: tensor ``(n_params,)`` of all params; ``sens``: tensor
    ``(n_t, n_dparams + n_states, n_states)`` of d y(tvals[i]) / d(derivative params, y0),
    or None with adjoint derivatives.
    """

    def __new__(cls, y_hat, flat, problem, solver, y0_flat, params_flat, *, op, sens=None):
        values = (y_hat, flat, problem, solver, y0_flat, params_flat)
        self = super().__new__(cls, values if sens is None else values + (sens, op))
        self.op, self.sens = op, sens
        return self

    y_hat = property(lambda self: self[0])
    flat = property(lambda self: self[1])
    problem = property(lambda self: self[2])
    solver = property(lambda self: self[3])
    y0_flat = property(lambda self: self[4])
    params_flat = property(lambda self: self[5])

    @property
    def n_failures(self):
        """``op.n_failures``."""
        return self.op.n_failures


def _is_symbolic(value):
    return isinstance(value, Variable) and not isinstance(value, Constant)


def _split(tree, what, prefix=()):
    """Nested dict of values -> (spec of shapes, list of (path, value, shape))."""
    if not isinstance(tree, dict):
        raise TypeError(f"`{what}` must be a dict; got {type(tree).__name__}.")
    spec, leaves = {}, []
    for name, entry in tree.items():
        path = prefix + (name,)
        if isinstance(entry, dict):
            spec[name], sub = _split(entry, what, path)
            leaves += sub
            continue
        if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], (tuple, list, int, str)):
            value, shape = entry
        else:
            value, shape = entry, None
        if shape is None:
            shape = _static_shape(value, f"{what}[{'.'.join(path)!r}]")
        spec[name] = shape
        leaves.append((path, value))
    return spec, leaves


def _static_shape(value, where):
    if isinstance(value, Variable):
        shape = value.type.shape
        if any(s is None for s in shape):
            raise TypeError(f"{where} has static shape {shape} with unknown entries; pass "
                            f"`(value, shape)` to state its shape.")
        return tuple(shape)
    return np.shape(value)


def _flat_input(layout, leaves, what):
    parts = []
    for (path, value), leaf in zip(leaves, layout.leaves):
        if _is_symbolic(value):
            tensor = _float64(pt.as_tensor_variable(value))
            if len(tensor.type.shape) != len(leaf.shape) or any(
                    s not in (None, e) for s, e in zip(tensor.type.shape, leaf.shape)):
                raise ValueError(f"`{what}[{leaf.name!r}]` has static shape {tensor.type.shape}; "
                                 f"expected {leaf.shape}.")
            parts.append(pt.reshape(tensor, (leaf.size,)))
        else:
            array = real_array(f"{what}[{leaf.name!r}]", value.data if isinstance(value, Constant) else value)
            if array.shape != leaf.shape:
                raise ValueError(f"`{what}[{leaf.name!r}]` has shape {array.shape}; expected {leaf.shape}.")
            parts.append(pt.constant(array.ravel()))
    if not parts:
        return pt.constant(np.zeros(0))
    return parts[0] if len(parts) == 1 else pt.concatenate(parts)


def solve_ivp(y0, params, rhs, tvals, t0, derivatives="adjoint", coords=None,
              solver_kwargs=None, derivative_subset=None):
    """Solve dy/dt = rhs(t, y, p), y(t0) = y0 inside a PyTensor graph (sunode's interface).

    Parameters
    ----------
    y0, params : dict
        Name -> value, or nested dicts. A value is a PyTensor variable, a numpy array, a float,
        or ``(value, shape_or_dims)`` (dims name ``coords``). Params given as numpy values or
        constants are not differentiated unless ``derivative_subset`` lists them; symbolic
        ones are.
    rhs : callable
        ``rhs(t, y, p) -> dict`` of sympy expressions like `SympyProblem`'s ``rhs_sympy``.
        Module-level functions keep the compiled graph picklable with plain pickle.
    tvals : array or tensor (n_t,)
        Strictly increasing output times, ``tvals[0] >= t0``.
    t0 : float or scalar tensor
    derivatives : {"adjoint", "forward"}
        Gradients by the adjoint method or by forward sensitivities.
    coords : dict, optional
        Dim name -> coordinates, for shapes given by dim names.
    solver_kwargs : dict, optional
        Solver options (rtol, atol, max_steps, solver, linear_solver, ...).
    derivative_subset : list of paths, optional
        The params to differentiate (default: the symbolic ones). dL/d of the others is NaN.

    Returns
    -------
    SolveIvpResult
        ``(y_hat, flat, problem, solver, y0_flat, params_flat)`` (adjoint) or the same and
        ``sens, op`` (forward), as sunode: y_hat["hares"] is a tensor over tvals of shape
        ``(n_t, *shape)``; flat is ``(n_t, n_states)``. ``result.op`` is the Op.
    """
    if derivatives not in ("adjoint", "forward"):
        raise ValueError(f"`derivatives={derivatives!r}` is not supported; expected 'adjoint' or 'forward'.")
    state_spec, state_leaves = _split(y0, "y0")
    param_spec, param_leaves = _split(params, "params")
    if derivative_subset is None:
        derivative_subset = [path for path, value in param_leaves if _is_symbolic(value)]
    problem = SympyProblem(param_spec, state_spec, rhs, derivative_params=derivative_subset,
                           coords=coords)
    y0_flat = _flat_input(problem.states, state_leaves, "y0")
    params_flat = _flat_input(problem.params, param_leaves, "params")
    op = SolveODE(problem, solver_kwargs, "adjoint" if derivatives == "adjoint" else "sens")
    outputs = op(y0_flat, params_flat, tvals, t0)
    flat, sens = (outputs, None) if op.mode == "adjoint" else outputs[:2]
    return SolveIvpResult(_states_as_dict(problem, flat), flat, problem, op.ensure_pool().solver,
                          y0_flat, params_flat, op=op, sens=sens)


def _states_as_dict(problem, flat):
    """The (n_t, n_states) tensor ``flat`` as a nested dict of (n_t, *shape) tensors."""
    y_hat = {}
    for leaf in problem.states.leaves:
        target = y_hat
        for key in leaf.path[:-1]:
            target = target.setdefault(key, {})
        target[leaf.path[-1]] = pt.reshape(flat[:, leaf.slice], (flat.shape[0], *leaf.shape),
                                           ndim=1 + len(leaf.shape))
    return y_hat
