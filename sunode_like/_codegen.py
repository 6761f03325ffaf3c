"""Sympy expressions -> numba kernels with the C signature the solvers call.

Each model becomes one generated Python module, written to a cache directory under a
name that is a hash of the model's expressions (derived in `_symbolic`). Each kernel is
a ``numba.cfunc`` ``<name>_cfunc(t, y, p, out) -> status`` that reads and writes the C
pointers directly (status 0, or 1 if a value is not finite: SUNDIALS then tries a smaller
step), with ``<name>``, a Python caller for numpy arrays, beside it. `_lowering` writes
their bodies. The module holds every kernel's source, as ``<name>_function``, and a
kernel is compiled when first used (`compile_kernel`): a Solver without sensitivities
never compiles df/dp. The cfuncs are compiled with ``cache=True``: a second process that
builds the same model imports the module and loads the machine code from numba's cache,
skipping sympy and compilation (`_kernel_cache` checks both against damage).

Build time (issue 13): a numba function compiles in time that grows with its length, so
the kernels are short: repeated expressions are loops, not copies, and there is no njit
layer under the cfuncs (it doubled the compile time of small models). The derivatives
come from `_symbolic.Differentiator`, several times faster than ``sympy.diff`` here.
What stays is numba's start-up in each process (its first compile or cache load imports
its numpy and linalg support, and with it scipy.linalg: ~0.35 s) and ~40 ms per cfunc.

A kernel that can raise (a Piecewise without an otherwise branch raises outside its
pieces) is guarded: its cfunc returns `KERNEL_RAISED` (< 0, unrecoverable for SUNDIALS)
instead of numba's default of printing the exception and returning 0 with stale output.
"""
import contextlib
import ctypes
import gc
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

from . import _events, _kernel_cache, _lowering, _symbolic

KERNEL_SIGNATURE = types.intc(
    types.float64, types.CPointer(types.float64), types.CPointer(types.float64),
    types.CPointer(types.float64))
FORMAT_VERSION = 8
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
# The kernels every solver calls; the others (df/dp for sensitivities and adjoints, a DAE's
# d/dt dF/dy' and dF/dt) are compiled when first used.
ODE_KERNELS = ("rhs", "jac")
DAE_KERNELS = ("res", "jac_y", "jac_yp")


def compile_model(problem, kernels=ODE_KERNELS):
    """The generated module of a SympyProblem, from memory, the disk cache, or a new build.

    The module holds the kernels ``rhs``, ``jac`` (values of df/dy in the CSC pattern
    ``JAC_COLPTR``, ``JAC_ROWS``) and ``dfdp`` (df/d(derivative params), ``DFDP_*``), each
    with a ``<name>_cfunc`` whose ``.address`` the C layer calls; the transposed pattern
    ``JACT_*`` and the Jacobian's ``UPPER_BANDWIDTH``, ``LOWER_BANDWIDTH``. The ``kernels``
    named (by default those every solver calls) are compiled, or loaded from numba's cache,
    now; the others when first used.
    """
    return _load_or_build("model_" + problem.content_hash, _module_source, problem, kernels)


def _load_or_build(key, module_source, problem, kernels):
    """The module named ``key`` (from memory, else from the disk cache, else generated),
    with ``kernels`` compiled."""
    if key not in _loaded:
        with _BuildReport(f"model {problem.content_hash} ({problem.n_states} states)") as report, _gc_paused():
            module = _loaded[key] = _kernel_cache.load_module(f"{key}_v{FORMAT_VERSION}", lambda: module_source(problem))
            for name in kernels:
                _compile_kernel(vars(module), name)
        build_stages[key] = report.stages
    module = _loaded[key]
    for name in kernels:
        getattr(module, name + "_cfunc")  # compiled now if the first build did not ask for it
    return module


def compile_kernel(namespace, attribute):
    """``<name>_cfunc`` or ``<name>`` (its Python caller) of the generated module whose
    globals are ``namespace``, compiling the kernel (or loading it from numba's cache) on
    first use: the generated modules' ``__getattr__``, so no kernel is ever missing, only
    compiled later."""
    name = attribute.removesuffix("_cfunc")
    if name not in namespace.get("KERNELS", {}):
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {attribute!r}")
    with _BuildReport(f"kernel {name} of {namespace['__name__']}", stage="numba compile"), _gc_paused():
        _compile_kernel(namespace, name)
    return namespace[attribute]


_compile_lock = threading.RLock()


def _compile_kernel(namespace, name):
    """Set ``<name>_cfunc`` and ``<name>`` in a generated module's globals, unless set."""
    with _compile_lock:
        if name + "_cfunc" in namespace:
            return
        function = namespace[name + "_function"]
        files = (f"{name}_function-", f"{name}_body-", f"{name}_part")  # numba's, of this kernel
        cfunc = _kernel_cache.load_kernel(
            namespace["__file__"], files,
            lambda: numba.cfunc(KERNEL_SIGNATURE, cache=True, error_model="numpy")(function))
        namespace[name] = python_kernel(cfunc, name, *namespace["KERNELS"][name])
        namespace[name + "_cfunc"] = cfunc


@contextlib.contextmanager
def _gc_paused():
    """Python's cyclic garbage collector off while a model is built: every full collection
    walks all objects of the process (sympy's, numba's: ~45 ms each here), and a build
    allocates enough to trigger two or three (0.1 s of a 0.6 s Lotka-Volterra build). The
    garbage of a build is a few MB; it is collected after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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

    def __init__(self, what, stage="cache load"):
        self.what = what
        self.stages = {}
        self.current = stage
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
    _stage("derivatives")
    d = _symbolic.ode_derivatives(problem)
    _stage("kernel source")
    jact_colptr, jact_rows, jact_perm = d.jac.transpose_pattern()
    upper, lower = d.jac.bandwidths()
    constants = {
        "N_STATES": problem.n_states, "N_PARAMS": problem.n_params,
        "UPPER_BANDWIDTH": upper, "LOWER_BANDWIDTH": lower,
        "JAC_COLPTR": d.jac.colptr, "JAC_ROWS": d.jac.rows, "JACT_COLPTR": jact_colptr,
        "JACT_ROWS": jact_rows, "JACT_PERM": jact_perm, "DFDP_COLPTR": d.dfdp.colptr,
        "DFDP_ROWS": d.dfdp.rows,
    }
    kernels = {"rhs": d.rhs, "jac": d.jac.values, "dfdp": d.dfdp.values} | d.events
    if problem.events:
        _, _, reset_ptr, reset_state = _events.event_exprs(problem.events, {})
        constants |= {"N_EVENTS": len(problem.events), "EVENT_RESET_PTR": reset_ptr,
                      "EVENT_RESET_STATE": reset_state,
                      "EVENT_DIRECTION": np.array([e.direction for e in problem.events], dtype=np.int64)}
    inputs = _InputCode(problem, d.inputs)
    constants |= inputs.constants()
    return _source(f"the model with hash {problem.content_hash}", constants, kernels, d.y, d.p, inputs)


class _InputCode:
    """How kernels compute a model's inputs (`_interpolation`): u_j(t), du_j/dt and the
    basis phi_jk(t) go after the params in an extended params vector ``p``, which a kernel
    that uses them fills first from the params it is given (``p_given``), so that the
    lowered code reads them like params."""

    def __init__(self, problem, symbols):
        self.bound, self.n_params = problem.inputs, problem.n_params
        self.symbols = symbols
        position = problem.n_params
        self.index = {}
        for symbol in [*symbols.u, *symbols.du, *(s for phi in symbols.phi for s in phi)]:
            self.index[symbol] = position
            position += 1
        self.size = position

    def constants(self):
        """The knots and spline factors, as module constants."""
        return {name: value for j, bound in enumerate(self.bound)
                for name, value in ((f"INPUT{j}_KNOTS", bound.spec.times),
                                    (f"INPUT{j}_FACTORS", bound.spec.factors))}

    def leaves(self):
        """Each input symbol as a leaf of the lowering: ("p", its index in ``p``)."""
        return {symbol: ("p", index) for symbol, index in self.index.items()}

    def prologue(self, exprs):
        """The lines filling the extended ``p`` with what ``exprs`` read of the inputs
        (none if they read nothing)."""
        used = set().union(*(e.free_symbols for e in exprs)) & set(self.index)
        if not used:
            return []
        lines = [f"    p = {_lowering.work_array(self.size)}", f"    for i in range({self.n_params}):",
                 "        p[i] = p_given[i]"]
        for j, bound in enumerate(self.bound):
            arguments = f"t, INPUT{j}_KNOTS, {bound.spec.kind_code}, INPUT{j}_FACTORS"
            for symbol, derivative in ((self.symbols.u[j], False), (self.symbols.du[j], True)):
                if symbol in used:
                    lines.append(f"    p[{self.index[symbol]}] = evaluate({arguments}, p_given, "
                                 f"{bound.offset}, {derivative})")
            if used & set(self.symbols.phi[j]):
                lines.append(f"    basis({arguments}, p, {self.index[self.symbols.phi[j][0]]})")
        return lines


def _source(what, constants, kernels, y, p, inputs):
    """The text of a generated module: ``constants`` (ints, bools, int and float arrays),
    then for each kernel ``<name>_function(t, y, p, out)`` writing ``out[i] = exprs[i]``
    (the expressions may read the `_InputCode` ``inputs``), which `compile_kernel` makes the
    cfunc ``<name>_cfunc`` and its Python caller ``<name>`` when first used (``KERNELS``:
    their (len(y), len(p), len(out)))."""
    lines = [
        f"# Generated by sunode_like from {what}. Do not edit.",
        "import math", "import numba", "import numpy as np",
        "from sunode_like._codegen import KERNEL_RAISED, compile_kernel, stack_array, undefined_piece",
        *(["from sunode_like._interpolation import basis, evaluate"] if inputs.bound else []), "",
    ]
    for name, value in constants.items():
        if isinstance(value, np.ndarray):  # (repr prints a float exactly)
            value = f"np.array({value.ravel().tolist()!r}, dtype=np.{value.dtype})" + (
                f".reshape({value.shape})" if value.ndim != 1 else "")
        lines.append(f"{name} = {value if isinstance(value, str) else repr(value)}")
    shapes = {name: (len(y), len(p), len(exprs)) for name, exprs in kernels.items()}
    lines.append(f"KERNELS = {shapes!r}")
    for name, exprs in kernels.items():
        lines += _kernel_source(name, exprs, y, p, inputs)
    lines += ["", "", "def __getattr__(name):", "    return compile_kernel(globals(), name)"]
    _stage("numba compile")
    return "\n".join(lines) + "\n"


def _kernel_source(name, exprs, y, p, inputs):
    """``<name>_function(t, y, p, out) -> status``, writing ``out[i] = exprs[i]`` straight
    through the C pointers."""
    leaves = {s: ("y", i) for i, s in enumerate(y)} | {s: ("p", i) for i, s in enumerate(p)} | inputs.leaves()
    module, body = _lowering.kernel_source(name, exprs, leaves)
    prologue = inputs.prologue(exprs)
    body, params = (prologue + body, "p_given") if prologue else (body, "p")
    if module and module[0]:  # index arrays first: two blank lines after the previous kernel
        module = ["", "", *module]
    status = [f"    for i in range({len(exprs)}):", "        if not math.isfinite(out[i]):",
              "            return 1", "    return 0"]
    if _may_raise(exprs):
        # A numba exception in a cfunc would be printed and dropped (status 0). Catching it
        # costs compile time, so only kernels that can raise get the guard.
        return module + ["", "", "@numba.njit(cache=True, error_model='numpy')",
                         f"def {name}_body(t, y, {params}, out):", *body,
                         "", "", f"def {name}_function(t, y, p, out):",
                         "    try:", f"        {name}_body(t, y, p, out)",
                         "    except Exception:", "        return KERNEL_RAISED", *status]
    return module + ["", "", f"def {name}_function(t, y, {params}, out):"] + body + status


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


def compile_dae_model(problem, kernels=DAE_KERNELS):
    """The generated module of a DAEProblem (see `compile_model` for the caching and
    ``kernels``).

    Kernels take [y, y'] (length ``Y_LEN`` = 2 n) as their ``y``: ``res`` (F),
    ``jac_y`` / ``jac_yp`` (values of dF/dy, dF/dy' in the patterns ``JY_*``, ``JYP_*``),
    ``jac_yp_dot`` (d/dt dF/dy' = dF/dy'_t + sum_j dF/dy'_{y_j} y'_j on ``JYP_*``; only
    used when ``JAC_YP_CONSTANT`` is false), ``dfdp`` (dF/d(derivative params), ``DFDP_*``)
    and ``dfdt`` (dF/dt, dense). ``JAC_*`` is the union pattern P of dF/dy and dF/dy' with
    ``JY_MAP`` / ``JYP_MAP`` the position in P of each of their entries, ``JACT_*`` that of
    P^T, and the bandwidths are P's.
    """
    return _load_or_build("dae_" + problem.content_hash, _dae_module_source, problem, kernels)


def _dae_module_source(problem):
    _stage("derivatives")
    d = _symbolic.dae_derivatives(problem)
    _stage("kernel source")
    jact_colptr, jact_rows, jact_perm = d.union.transpose_pattern()
    upper, lower = d.union.bandwidths()
    constants = {
        "N_STATES": problem.n_states, "Y_LEN": 2 * problem.n_states, "N_PARAMS": problem.n_params,
        "UPPER_BANDWIDTH": upper, "LOWER_BANDWIDTH": lower, "JAC_YP_CONSTANT": d.jac_yp_constant,
        "JAC_YP_IDENTITY": d.jac_yp_identity, "JAC_YP_DEPENDS_ON_YP": d.jac_yp_depends_on_yp,
        "JY_COLPTR": d.jac_y.colptr, "JY_ROWS": d.jac_y.rows, "JYP_COLPTR": d.jac_yp.colptr,
        "JYP_ROWS": d.jac_yp.rows, "JAC_COLPTR": d.union.colptr, "JAC_ROWS": d.union.rows,
        "JY_MAP": d.jac_y_map, "JYP_MAP": d.jac_yp_map, "JACT_COLPTR": jact_colptr,
        "JACT_ROWS": jact_rows, "JACT_PERM": jact_perm, "DFDP_COLPTR": d.dfdp.colptr,
        "DFDP_ROWS": d.dfdp.rows,
    }
    kernels = {"res": d.res, "jac_y": d.jac_y.values, "jac_yp": d.jac_yp.values,
               "jac_yp_dot": d.jac_yp_dot, "dfdp": d.dfdp.values, "dfdt": d.dfdt}
    inputs = _InputCode(problem, d.inputs)
    constants |= inputs.constants()
    return _source(f"the DAE with hash {problem.content_hash}", constants, kernels, d.y + d.yp, d.p, inputs)
