"""Numba kernels over the C solver pool, and their registration with PyTensor's numba backend.

The math lives in C (``csrc/sl_pool.c``); the Ops' Python ``perform`` calls it through cffi,
and the functions PyTensor's numba linker compiles (PyMC's numba mode, nutpie) call it
through the two kernels here. They call the C layer as external functions: ``llvmlite.binding.add_symbol`` makes the C functions known
to LLVM by name, so numba's on-disk cache holds a reference by name (resolved again in every
process) rather than an address. The pool is looked up by an integer key that is a hash of
the Op's props, for the same reason. Pointers are passed as 64-bit integers (the x86-64 and
AArch64 calling conventions pass both the same way). No kernel ever enters object mode.
"""
import llvmlite.binding as llvm
import numba
import numpy as np
from numba import types

from .._sundials import ffi, lib

_i64, _f64 = types.int64, types.float64
_SIGNATURES = {
    "sl_registry_get": _i64(_i64),
    "sl_pool_solve_doses": types.intc(_i64, _f64, *[_i64] * 10),
    "sl_pool_gradient_doses": types.intc(_i64, _f64, *[_i64] * 14),
    "sl_pool_report_once": types.void(_i64),
}
for _name in _SIGNATURES:
    # A prefix keeps the names apart from anything else a process may have registered.
    llvm.add_symbol("sunode_like_" + _name, int(ffi.cast("uintptr_t", ffi.addressof(lib, _name))))
_registry_get, _pool_solve, _pool_gradient, _report_once = (
    types.ExternalFunction("sunode_like_" + name, sig) for name, sig in _SIGNATURES.items())

NO_POOL = -9002  # the key has no registered pool in this process (a bug: please report)


@numba.njit(cache=True, nogil=True)
def _address(array):
    return np.int64(array.ctypes.data) if array.size > 0 else np.int64(0)


@numba.njit(cache=True, nogil=True)
def _pool_and_inputs(key, y0, params, tvals):
    """The pool registered under key (0: none) and the inputs as C-contiguous arrays."""
    return (_registry_get(key), np.ascontiguousarray(y0), np.ascontiguousarray(params),
            np.ascontiguousarray(tvals))


@numba.njit(cache=True, nogil=True)
def _dose_struct(time, amount, rate, states):
    """An sl_doses over the C-contiguous arrays as its 5 words (n, then the addresses of
    time, amount, rate and states), or an empty array (NULL) without doses. The arrays
    must outlive its use: they are arguments of the kernel that calls the pool, and the
    struct itself an argument of `_call_solve`/`_call_gradient`."""
    if states.shape[0] == 0:
        return np.empty(0, np.int64)
    words = np.empty(5, np.int64)
    words[0] = states.shape[0]
    words[1], words[2], words[3] = _address(time), _address(amount), _address(rate)
    words[4] = _address(states)
    return words


# The C calls take addresses, which hold no reference: numba frees an array after its last
# use, so `_pool_solve(..., _address(np.empty(5)), ...)` frees the array before the call and C
# reads freed memory (the pool's doses struct was overwritten by the solve's own allocations:
# SL_MEM_FAIL, or worse, wrong doses). Every array whose address C reads is therefore an
# argument of these two functions, which the caller keeps alive until they return.
@numba.njit(cache=True, nogil=True)
def _call_solve(pool, t0, y0, params, tvals, doses, y_out, sens_out, dydt0_out, fy_out):
    return _pool_solve(pool, t0, _address(y0), _address(params), tvals.shape[0], _address(tvals),
                       _address(doses), _address(y_out), _address(sens_out),
                       _address(dydt0_out), _address(fy_out), 0)


@numba.njit(cache=True, nogil=True)
def _call_gradient(pool, t0, y0, params, tvals, doses, grads, dy0, dparams, dt0, dtvals,
                   dose_grads):
    with_doses = dose_grads.shape[1] > 0
    return _pool_gradient(pool, t0, _address(y0), _address(params), tvals.shape[0],
                          _address(tvals), _address(doses), _address(grads), _address(dy0),
                          _address(dparams), _address(dt0), _address(dtvals),
                          _address(dose_grads[0]) if with_doses else 0,
                          _address(dose_grads[1]) if with_doses else 0,
                          _address(dose_grads[2]) if with_doses else 0, 0)


@numba.njit(cache=True, nogil=True)
def _failed(pool, a, b, c, d):
    """Fill the outputs of a failed call with NaN and report the pool's first failure once."""
    a[...] = np.nan
    b[...] = np.nan
    c[...] = np.nan
    d[...] = np.nan
    if pool != 0:
        _report_once(pool)


@numba.njit(cache=True, nogil=True)
def solve_kernel(key, y0, params, tvals, t0, y_out, sens_out, dydt0_out, fy_out):
    """`dose_solve_kernel` without doses."""
    empty = np.empty(0)
    return dose_solve_kernel(key, y0, params, tvals, t0, empty, empty, empty,
                             np.empty(0, np.int64), y_out, sens_out, dydt0_out, fy_out)


@numba.njit(cache=True, nogil=True)
def dose_solve_kernel(key, y0, params, tvals, t0, time, amount, rate, states, y_out, sens_out,
                      dydt0_out, fy_out):
    """Forward solve into y_out (n_t, n_states), with doses (C-contiguous time, amount, rate
    and int64 states; all empty: none); with a sensitivity pool also sens_out
    (n_t, n_sens, n_states), dydt0_out and fy_out (n_t, n_states); empty arrays skip them.
    Returns 0, or the failure flag after filling every output with NaN and reporting the
    pool's first failure once on stderr."""
    pool, y0, params, tvals = _pool_and_inputs(key, y0, params, tvals)
    flag = NO_POOL
    if pool != 0:
        flag = _call_solve(pool, t0, y0, params, tvals, _dose_struct(time, amount, rate, states),
                           y_out, sens_out, dydt0_out, fy_out)
    if flag != 0:
        _failed(pool, y_out, sens_out, dydt0_out, fy_out)
    return flag


@numba.njit(cache=True, nogil=True)
def gradient_kernel(key, y0, params, tvals, t0, grads, dy0, dparams, dt0, dtvals):
    """`dose_gradient_kernel` without doses."""
    empty = np.empty(0)
    return dose_gradient_kernel(key, y0, params, tvals, t0, empty, empty, empty,
                                np.empty(0, np.int64), grads, dy0, dparams, dt0, dtvals,
                                np.empty((3, 0)))


@numba.njit(cache=True, nogil=True)
def dose_gradient_kernel(key, y0, params, tvals, t0, time, amount, rate, states, grads, dy0,
                         dparams, dt0, dtvals, dose_grads):
    """Vector-Jacobian product for grads (n_t, n_states) after a solve with doses (as
    `dose_solve_kernel`'s): writes dy0, dparams, dt0 (shape (1,)) and dtvals (both empty: not
    computed), and dose_grads (3, n_doses) = dL/d(time, amount, rate). Returns 0, or the
    failure flag after filling them with NaN."""
    pool, y0, params, tvals = _pool_and_inputs(key, y0, params, tvals)
    grads = np.ascontiguousarray(grads)
    flag = NO_POOL
    if pool != 0:
        flag = _call_gradient(pool, t0, y0, params, tvals, _dose_struct(time, amount, rate, states),
                              grads, dy0, dparams, dt0, dtvals, dose_grads)
    if flag != 0:
        _failed(pool, dy0, dparams, dt0, dtvals)
        dose_grads[...] = np.nan
    return flag


def _dose_arrays(dose_states):
    """A numba function of an Op's dose inputs (time, amount, rate; none without doses)
    giving C-contiguous (time, amount, rate, states) for the kernels (all empty without)."""
    from pytensor.link.numba.dispatch.basic import numba_njit

    states_tuple, n_doses = tuple(dose_states), len(dose_states)
    if not n_doses:
        @numba_njit
        def no_doses():
            empty = np.empty(0)
            return empty, empty, empty, np.empty(0, np.int64)

        return no_doses

    @numba_njit
    def dose_arrays(time, amount, rate):
        states = np.empty(n_doses, np.int64)
        for k in range(n_doses):
            states[k] = states_tuple[k]
        return (np.ascontiguousarray(time), np.ascontiguousarray(amount),
                np.ascontiguousarray(rate), states)

    return dose_arrays


def register(solve_op_type, gradient_op_type):
    """Register numba implementations of the two Op types with PyTensor."""
    from pytensor.link.numba.dispatch.basic import numba_njit, register_funcify_and_cache_key

    @register_funcify_and_cache_key(solve_op_type)
    def funcify_solve(op, node=None, **kwargs):
        key, n, n_sens, with_sens = op.pool_key, op.problem.n_states, op.n_sens, op.mode == "sens"
        op.ensure_pool()  # every process that compiles or loads the function registers it
        dose_arrays = _dose_arrays(op.dose_states)

        if with_sens:
            @numba_njit
            def solve(y0, params, tvals, t0, *doses):
                n_t = tvals.shape[0]
                y, sens = np.empty((n_t, n)), np.empty((n_t, n_sens, n))
                dydt0, fy = np.empty((n_t, n)), np.empty((n_t, n))
                d = dose_arrays(*doses)
                dose_solve_kernel(key, y0, params, tvals, t0[()], d[0], d[1], d[2], d[3], y, sens,
                                  dydt0, fy)
                return y, sens, dydt0, fy
        else:
            @numba_njit
            def solve(y0, params, tvals, t0, *doses):
                y = np.empty((tvals.shape[0], n))
                empty2, empty3 = np.empty((0, 0)), np.empty((0, 0, 0))
                d = dose_arrays(*doses)
                dose_solve_kernel(key, y0, params, tvals, t0[()], d[0], d[1], d[2], d[3], y,
                                  empty3, empty2, empty2)
                return y

        return solve, f"sunode_like.Solve.{key}.{op.dose_states}.v6"

    @register_funcify_and_cache_key(gradient_op_type)
    def funcify_gradient(op, node=None, **kwargs):
        key, n, n_params, with_times = op.pool_key, op.problem.n_states, op.problem.n_params, op.with_times
        op.ensure_pool()
        n_doses = len(op.dose_states)
        dose_arrays = _dose_arrays(op.dose_states)

        @numba_njit
        def gradient(y0, params, tvals, t0, grads, d):
            dy0, dparams = np.empty(n), np.empty(n_params)
            dt0, dtvals, no_times = np.zeros(1), np.zeros(tvals.shape[0]), np.empty(0)
            dose_grads = np.empty((3, n_doses))
            if dose_gradient_kernel(key, y0, params, tvals, t0[()], d[0], d[1], d[2], d[3], grads,
                                    dy0, dparams, dt0 if with_times else no_times,
                                    dtvals if with_times else no_times, dose_grads) != 0:
                dt0[:] = np.nan
                dtvals[:] = np.nan
            return dy0, dparams, dtvals, dt0.reshape(()), dose_grads

        if n_doses:
            @numba_njit
            def solve_gradient(y0, params, tvals, t0, time, amount, rate, grads, y):  # y: an order
                dy0, dparams, dtvals, dt0, dose_grads = gradient(
                    y0, params, tvals, t0, grads, dose_arrays(time, amount, rate))
                return dy0, dparams, dtvals, dt0, dose_grads[0], dose_grads[1], dose_grads[2]
        else:
            @numba_njit
            def solve_gradient(y0, params, tvals, t0, grads, y):  # y: only an order
                return gradient(y0, params, tvals, t0, grads, dose_arrays())[:4]

        return solve_gradient, f"sunode_like.SolveGrad.{key}.{with_times}.{op.dose_states}.v7"
