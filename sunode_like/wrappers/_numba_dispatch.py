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
    "sl_pool_solve": types.intc(_i64, _f64, *[_i64] * 9),
    "sl_pool_gradient": types.intc(_i64, _f64, *[_i64] * 10),
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
    """Forward solve into y_out (n_t, n_states); with a sensitivity pool also sens_out
    (n_t, n_sens, n_states), dydt0_out and fy_out (n_t, n_states); empty arrays skip them.
    Returns 0, or the failure flag after filling every output with NaN and reporting the
    pool's first failure once on stderr."""
    pool, y0, params, tvals = _pool_and_inputs(key, y0, params, tvals)
    flag = NO_POOL
    if pool != 0:
        flag = _pool_solve(pool, t0, _address(y0), _address(params), tvals.shape[0],
                           _address(tvals), _address(y_out), _address(sens_out),
                           _address(dydt0_out), _address(fy_out), 0)
    if flag != 0:
        _failed(pool, y_out, sens_out, dydt0_out, fy_out)
    return flag


@numba.njit(cache=True, nogil=True)
def gradient_kernel(key, y0, params, tvals, t0, grads, dy0, dparams, dt0, dtvals):
    """Vector-Jacobian product for grads (n_t, n_states): writes dy0, dparams, dt0 (shape
    (1,)) and dtvals (both empty: not computed). Returns 0, or the failure flag after
    filling them with NaN."""
    pool, y0, params, tvals = _pool_and_inputs(key, y0, params, tvals)
    grads = np.ascontiguousarray(grads)
    flag = NO_POOL
    if pool != 0:
        flag = _pool_gradient(pool, t0, _address(y0), _address(params), tvals.shape[0],
                              _address(tvals), _address(grads), _address(dy0),
                              _address(dparams), _address(dt0), _address(dtvals), 0)
    if flag != 0:
        _failed(pool, dy0, dparams, dt0, dtvals)
    return flag


def register(solve_op_type, gradient_op_type):
    """Register numba implementations of the two Op types with PyTensor."""
    from pytensor.link.numba.dispatch.basic import numba_njit, register_funcify_and_cache_key

    @register_funcify_and_cache_key(solve_op_type)
    def funcify_solve(op, node=None, **kwargs):
        key, n, n_sens, with_sens = op.pool_key, op.problem.n_states, op.n_sens, op.mode == "sens"
        op.ensure_pool()  # every process that compiles or loads the function registers it

        if with_sens:
            @numba_njit
            def solve(y0, params, tvals, t0):
                n_t = tvals.shape[0]
                y, sens = np.empty((n_t, n)), np.empty((n_t, n_sens, n))
                dydt0, fy = np.empty((n_t, n)), np.empty((n_t, n))
                solve_kernel(key, y0, params, tvals, t0[()], y, sens, dydt0, fy)
                return y, sens, dydt0, fy
        else:
            @numba_njit
            def solve(y0, params, tvals, t0):
                y = np.empty((tvals.shape[0], n))
                empty2, empty3 = np.empty((0, 0)), np.empty((0, 0, 0))
                solve_kernel(key, y0, params, tvals, t0[()], y, empty3, empty2, empty2)
                return y

        return solve, f"sunode_like.Solve.{key}.v3"

    @register_funcify_and_cache_key(gradient_op_type)
    def funcify_gradient(op, node=None, **kwargs):
        key, n, n_params, with_times = op.pool_key, op.problem.n_states, op.problem.n_params, op.with_times
        op.ensure_pool()

        @numba_njit
        def solve_gradient(y0, params, tvals, t0, grads, y):  # y: only an order
            dy0, dparams = np.empty(n), np.empty(n_params)
            dt0, dtvals, no_times = np.zeros(1), np.zeros(tvals.shape[0]), np.empty(0)
            if gradient_kernel(key, y0, params, tvals, t0[()], grads, dy0, dparams,
                               dt0 if with_times else no_times,
                               dtvals if with_times else no_times) != 0:
                dt0[:] = np.nan
                dtvals[:] = np.nan
            return dy0, dparams, dtvals, dt0.reshape(())

        return solve_gradient, f"sunode_like.SolveGrad.{key}.{with_times}.v4"
