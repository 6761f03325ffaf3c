"""Sympy expressions -> numba kernels with the C signature the solvers call.

Each model becomes one generated Python module, written to a cache directory under a
name that is a hash of the model's expressions. Each kernel is a ``numba.cfunc``
``<name>_cfunc(t, y, p, out) -> status`` that reads and writes the C pointers directly
(status 0, or 1 if a value is not finite: SUNDIALS then tries a smaller step), with
``<name>``, a Python caller for numpy arrays, beside it. `_lowering` writes their bodies.
The cfuncs are compiled with ``cache=True``: a second process that builds the same model
imports the module and loads the machine code from numba's cache, skipping sympy and
compilation (`_kernel_cache` checks both against damage).

Build time (issue 13): a numba function compiles in time that grows with its length, so
the kernels are short: repeated expressions are loops, not copies, and there is no njit
layer under the cfuncs (it doubled the compile time of small models). The derivatives
come from `_symbolic.Differentiator`, several times faster than ``sympy.diff`` here.

A kernel that can raise (a Piecewise without an otherwise branch raises outside its
pieces) is guarded: its cfunc returns `KERNEL_RAISED` (< 0, unrecoverable for SUNDIALS)
instead of numba's default of printing the exception and returning 0 with stale output.
"""
import ctypes
import logging
import math
import threading
import time

import numba
import numpy as np
import sympy
import numba.extending
from numba import types
from numba.core import cgutils

from . import _kernel_cache, _lowering, _symbolic

KERNEL_SIGNATURE = types.intc(
    types.float64, types.CPointer(types.float64), types.CPointer(types.float64),
    types.CPointer(types.float64))
FORMAT_VERSION = 6
# What a cfunc adapter returns when its kernel raised (e.g. a Piecewise evaluated outside
# its pieces): SUNDIALS treats a negative status as unrecoverable, so the solve fails with
# an error instead of going on with whatever the kernel left in `out`.
KERNEL_RAISED = -1


@numba.njit(cache=True, error_model="numpy")
def undefined_piece(t):
    """Raises: where no condition of a Piecewise holds, the model has no value. Returns a
    float64 (never reached) so the Piecewise it ends types as one."""
    if t == t or t != t:  # always true, but not a constant numba folds away
        raise ValueError("a Piecewise was evaluated where none of its conditions hold")
    return math.nan


@numba.extending.intrinsic
def stack_array(typingctx, size):
    """A pointer to ``size`` (a literal int) float64s on the calling kernel's stack."""
    if not isinstance(size, types.IntegerLiteral):
        return None

    def codegen(context, builder, signature, args):
        double = context.get_value_type(types.float64)
        return cgutils.alloca_once(builder, double, size=size.literal_value)

    return types.CPointer(types.float64)(size), codegen


_loaded = {}


def compile_model(problem):
    """The generated module of a SympyProblem, from memory, the disk cache, or a new build.

    The module holds the kernels ``rhs``, ``jac`` (values of df/dy in the CSC pattern
    ``JAC_COLPTR``, ``JAC_ROWS``) and ``dfdp`` (df/d(derivative params), ``DFDP_*``), each
    with a ``<name>_cfunc`` whose ``.address`` the C layer calls; the transposed pattern
    ``JACT_*`` and the Jacobian's ``UPPER_BANDWIDTH``, ``LOWER_BANDWIDTH``.
    """
    return _load_or_build("model_" + problem.content_hash, _module_source, problem)


def _load_or_build(key, module_source, problem):
    """The module named ``key``: from memory, else from the disk cache, else generated."""
    if key not in _loaded:
        with _BuildReport(f"model {problem.content_hash} ({problem.n_states} states)") as report:
            _loaded[key] = _kernel_cache.load_module(f"{key}_v{FORMAT_VERSION}", lambda: module_source(problem))
        build_stages[key] = report.stages
    return _loaded[key]


# Seconds per stage of the last build of each model key in this process: "cache load"
# (looking up the disk cache and importing a cached module: all of a warm build, and it
# includes numba compiling a cached module whose machine code is missing), then, if the
# module had to be generated, "derivatives", "kernel source" and "numba compile".
build_stages = {}
# A build still running after PROGRESS_AFTER seconds logs its stage (logger "sunode_like")
# every PROGRESS_EVERY seconds, and its stage times when it is done.
PROGRESS_AFTER, PROGRESS_EVERY = 2.0, 10.0
_current = threading.local()


class _BuildReport:
    """Times the stages of one build; a stage is entered with `_stage`."""

    def __init__(self, what):
        self.what = what
        self.stages = {}
        self.current = "cache load"
        self.logged = self._done = False
        self._lock = threading.Lock()
        self._timer = None

    def __enter__(self):
        self.start = self._stage_start = time.perf_counter()
        self._previous, _current.report = getattr(_current, "report", None), self
        self._arm(PROGRESS_AFTER)
        return self

    def enter(self, stage):
        now = time.perf_counter()
        with self._lock:
            self.stages[self.current] = self.stages.get(self.current, 0.0) + now - self._stage_start
            self.current, self._stage_start = stage, now

    def __exit__(self, *exc):
        with self._lock:
            self._done = True
            self._timer.cancel()
        self.enter(None)
        _current.report = self._previous
        if self.logged and exc[0] is None:
            total = time.perf_counter() - self.start
            _logger().info("built %s in %.1f s (%s)", self.what, total,
                           ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in self.stages.items()))

    def _arm(self, delay):
        self._timer = threading.Timer(delay, self._progress)
        self._timer.daemon = True
        self._timer.start()

    def _progress(self):
        with self._lock:
            if not self._done:
                self.logged = True
                _logger().info("building %s: %s (%.0f s so far)", self.what, self.current,
                               time.perf_counter() - self.start)
                self._arm(PROGRESS_EVERY)


def _stage(name):
    """Tell the running build (if any) that it entered stage ``name``."""
    report = getattr(_current, "report", None)
    if report is not None:
        report.enter(name)


def _logger():
    logger = logging.getLogger("sunode_like")
    if not logger.handlers and not logging.getLogger().handlers:
        # Unconfigured logging shows nothing below WARNING; progress should be seen.
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return logger


def _module_source(problem):
    y = [sympy.Symbol(f"y_{i}", real=True) for i in range(problem.n_states)]
    p = [sympy.Symbol(f"p_{i}", real=True) for i in range(problem.n_params)]
    t = sympy.Symbol("t", real=True)
    rename = dict(zip(problem.state_symbols, y)) | dict(zip(problem.param_symbols, p))
    rename[problem.t_symbol] = t
    _stage("derivatives")
    rhs = [expr.xreplace(rename) for expr in problem.rhs_exprs]
    differentiator = _symbolic.Differentiator()
    jac = _symbolic.sparse_jacobian(rhs, y, differentiator)
    dfdp = _symbolic.sparse_jacobian(rhs, [p[i] for i in problem.derivative_indices], differentiator)
    _stage("kernel source")
    jact_colptr, jact_rows, jact_perm = jac.transpose_pattern()
    upper, lower = jac.bandwidths()
    arrays = {
        "JAC_COLPTR": jac.colptr, "JAC_ROWS": jac.rows, "JACT_COLPTR": jact_colptr,
        "JACT_ROWS": jact_rows, "JACT_PERM": jact_perm, "DFDP_COLPTR": dfdp.colptr,
        "DFDP_ROWS": dfdp.rows,
    }
    lines = [
        f"# Generated by sunode_like from the model with hash {problem.content_hash}. Do not edit.",
        "import math", "import numba", "import numpy as np",
        "from sunode_like._codegen import KERNEL_RAISED, KERNEL_SIGNATURE, python_kernel, stack_array, undefined_piece", "",
        f"N_STATES = {problem.n_states}", f"N_PARAMS = {problem.n_params}",
        f"UPPER_BANDWIDTH = {upper}", f"LOWER_BANDWIDTH = {lower}",
    ]
    lines += [f"{name} = np.array({a.tolist()!r}, dtype=np.int64)" for name, a in arrays.items()]
    for name, exprs in (("rhs", rhs), ("jac", jac.values), ("dfdp", dfdp.values)):
        lines += _kernel_source(name, exprs, y, p)
    _stage("numba compile")
    return "\n".join(lines) + "\n"


def _kernel_source(name, exprs, y, p):
    """The cfunc ``<name>_cfunc(t, y, p, out)`` writing ``out[i] = exprs[i]`` straight
    through the C pointers, and ``<name>``, its Python caller."""
    inputs = {s: ("y", i) for i, s in enumerate(y)} | {s: ("p", i) for i, s in enumerate(p)}
    module, body = _lowering.kernel_source(name, exprs, inputs)
    cfunc = ["", "", "@numba.cfunc(KERNEL_SIGNATURE, cache=True, error_model='numpy')",
             f"def {name}_cfunc(t, y, p, out):"]
    status = [f"    for i in range({len(exprs)}):", "        if not math.isfinite(out[i]):",
              "            return 1", "    return 0"]
    if _may_raise(exprs):
        # A numba exception in a cfunc would be printed and dropped (status 0). Catching it
        # costs compile time, so only kernels that can raise get the guard.
        lines = module + ["", "", "@numba.njit(cache=True, error_model='numpy')",
                          f"def {name}_body(t, y, p, out):", *body] + cfunc + [
            "    try:", f"        {name}_body(t, y, p, out)",
            "    except Exception:", "        return KERNEL_RAISED", *status]
    else:
        lines = module + cfunc + body + status
    return lines + ["", "", f"{name} = python_kernel({name}_cfunc, {name!r}, {len(y)}, {len(p)}, {len(exprs)})"]


def _may_raise(exprs):
    """Whether numba code for ``exprs`` can raise: a Piecewise without an otherwise branch
    raises where no condition holds. Everything else the printer emits is float arithmetic
    and math functions, which return inf or NaN instead (``error_model='numpy'``)."""
    return any(pw.args[-1].cond != sympy.true for e in exprs for pw in e.atoms(sympy.Piecewise))


def python_kernel(cfunc, name, n_y, n_p, n_out):
    """``kernel(t, y, p, out) -> status`` calling a cfunc from Python with float64 arrays;
    raises ValueError if the kernel raised (the model is undefined at that point)."""
    pointer = ctypes.POINTER(ctypes.c_double)
    call = cfunc.ctypes

    def kernel(t, y, p, out):
        for what, array, size in (("y", y, n_y), ("p", p, max(n_p, 1)), ("out", out, n_out)):
            if not (isinstance(array, np.ndarray) and array.dtype == np.float64 and array.flags.c_contiguous
                    and array.size >= size):
                raise TypeError(f"`{what}` must be a C-contiguous float64 array of at least {size} "
                                f"entries for kernel `{name}`; got {array!r}.")
        status = call(float(t), *(a.ctypes.data_as(pointer) for a in (y, p, out)))
        if status == KERNEL_RAISED:
            raise ValueError(f"The model's `{name}` is undefined at t = {t} (a Piecewise without "
                             "an otherwise branch, evaluated where none of its conditions hold).")
        return status

    return kernel


def compile_dae_model(problem):
    """The generated module of a DAEProblem (see `compile_model` for the caching).

    Kernels take [y, y'] (length ``Y_LEN`` = 2 n) as their ``y``: ``res`` (F),
    ``jac_y`` / ``jac_yp`` (values of dF/dy, dF/dy' in the patterns ``JY_*``, ``JYP_*``),
    ``jac_yp_dot`` (d/dt dF/dy' = dF/dy'_t + sum_j dF/dy'_{y_j} y'_j on ``JYP_*``; only
    used when ``JAC_YP_CONSTANT`` is false), ``dfdp`` (dF/d(derivative params), ``DFDP_*``)
    and ``dfdt`` (dF/dt, dense). ``JAC_*`` is the union pattern P of dF/dy and dF/dy' with
    ``JY_MAP`` / ``JYP_MAP`` the position in P of each of their entries, ``JACT_*`` that of
    P^T, and the bandwidths are P's.
    """
    return _load_or_build("dae_" + problem.content_hash, _dae_module_source, problem)


def _union_pattern(a, b):
    """CSC pattern (colptr, rows) of the union of two patterns, and where each entry of a
    and of b sits in it."""
    cols_a = np.repeat(np.arange(a.shape[1]), np.diff(a.colptr))
    cols_b = np.repeat(np.arange(b.shape[1]), np.diff(b.colptr))
    entries = sorted(set(zip(cols_a.tolist(), a.rows.tolist())) | set(zip(cols_b.tolist(), b.rows.tolist())))
    position = {entry: k for k, entry in enumerate(entries)}
    colptr = np.zeros(a.shape[1] + 1, dtype=np.int64)
    np.add.at(colptr, np.array([c for c, _ in entries], dtype=np.int64) + 1, 1)
    union = _symbolic.SparseExpr(a.shape, np.cumsum(colptr), np.array([r for _, r in entries], dtype=np.int64),
                                 [None] * len(entries))
    map_a = np.array([position[e] for e in zip(cols_a.tolist(), a.rows.tolist())], dtype=np.int64)
    map_b = np.array([position[e] for e in zip(cols_b.tolist(), b.rows.tolist())], dtype=np.int64)
    return union, map_a, map_b


def _dae_module_source(problem):
    n = problem.n_states
    y = [sympy.Symbol(f"y_{i}", real=True) for i in range(n)]
    yp = [sympy.Symbol(f"yp_{i}", real=True) for i in range(n)]
    p = [sympy.Symbol(f"p_{i}", real=True) for i in range(problem.n_params)]
    t = sympy.Symbol("t", real=True)
    rename = dict(zip(problem.state_symbols, y)) | dict(zip(problem.yp_symbols, yp))
    rename |= dict(zip(problem.param_symbols, p))
    rename[problem.t_symbol] = t
    _stage("derivatives")
    res = [expr.xreplace(rename) for expr in problem.residual_exprs]
    d = _symbolic.Differentiator()
    jy = _symbolic.sparse_jacobian(res, y, d)
    jyp = _symbolic.sparse_jacobian(res, yp, d)
    dfdp = _symbolic.sparse_jacobian(res, [p[i] for i in problem.derivative_indices], d)
    dfdt = [d.diff(expr, t) for expr in res]
    # dF/dy' changes along the solution only through t and y (F linear in y' is checked by
    # the adjoint solver); its time derivative enters the adjoint residual.
    jyp_dot = [d.diff(v, t) + sympy.Add(*(d.diff(v, y[j]) * yp[j] for j in range(n) if y[j] in d.symbols(v)))
               for v in jyp.values]
    _stage("kernel source")
    constant = all(v.free_symbols <= set(p) for v in jyp.values)
    jyp_cols = np.repeat(np.arange(n), np.diff(jyp.colptr))
    identity = (len(jyp.values) == int(np.sum(problem.equation_id)) and bool(np.all(jyp_cols == jyp.rows))
                and all(v == 1 for v in jyp.values))
    union, jy_map, jyp_map = _union_pattern(jy, jyp)
    jact_colptr, jact_rows, jact_perm = union.transpose_pattern()
    upper, lower = union.bandwidths()
    arrays = {
        "JY_COLPTR": jy.colptr, "JY_ROWS": jy.rows, "JYP_COLPTR": jyp.colptr, "JYP_ROWS": jyp.rows,
        "JAC_COLPTR": union.colptr, "JAC_ROWS": union.rows, "JY_MAP": jy_map, "JYP_MAP": jyp_map,
        "JACT_COLPTR": jact_colptr, "JACT_ROWS": jact_rows, "JACT_PERM": jact_perm,
        "DFDP_COLPTR": dfdp.colptr, "DFDP_ROWS": dfdp.rows,
    }
    lines = [
        f"# Generated by sunode_like from the DAE with hash {problem.content_hash}. Do not edit.",
        "import math", "import numba", "import numpy as np",
        "from sunode_like._codegen import KERNEL_RAISED, KERNEL_SIGNATURE, python_kernel, stack_array, undefined_piece", "",
        f"N_STATES = {n}", f"Y_LEN = {2 * n}", f"N_PARAMS = {problem.n_params}",
        f"UPPER_BANDWIDTH = {upper}", f"LOWER_BANDWIDTH = {lower}",
        f"JAC_YP_CONSTANT = {constant}", f"JAC_YP_IDENTITY = {identity}",
        f"JAC_YP_DEPENDS_ON_YP = {any(v.free_symbols & set(yp) for v in jyp.values)}",
    ]
    lines += [f"{name} = np.array({a.tolist()!r}, dtype=np.int64)" for name, a in arrays.items()]
    for name, exprs in (("res", res), ("jac_y", jy.values), ("jac_yp", jyp.values),
                        ("jac_yp_dot", jyp_dot), ("dfdp", dfdp.values), ("dfdt", dfdt)):
        lines += _kernel_source(name, exprs, y + yp, p)
    _stage("numba compile")
    return "\n".join(lines) + "\n"
