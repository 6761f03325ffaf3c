"""Time the benchmark Lotka-Volterra forward solve with SciPy's integrators
(solve_ivp LSODA/BDF/RK45 and odeint), as peers for our library's solve.

Problem (identical to lv_direct.c): alpha=0.52, beta=0.026, gamma=0.84,
delta=0.026, y0=(34.0, 5.9), output times 0,1,...,20, rtol=atol=1e-8,
analytic Jacobian wherever the method uses one.
"""
import statistics
import time

import numpy as np
from scipy.integrate import odeint, solve_ivp

ALPHA, BETA, GAMMA, DELTA = 0.52, 0.026, 0.84, 0.026
Y0 = np.array([34.0, 5.9])
TVALS = np.arange(21.0)
RTOL = ATOL = 1e-8


def rhs(t, y):
    hares, lynx = y
    return np.array([ALPHA * hares - BETA * hares * lynx,
                     DELTA * hares * lynx - GAMMA * lynx])


def jac(t, y):
    hares, lynx = y
    return np.array([[ALPHA - BETA * lynx, -BETA * hares],
                     [DELTA * lynx, DELTA * hares - GAMMA]])


def _solvers():
    """name -> zero-argument function doing one solve, returning the (21, 2) trajectory."""
    def ivp(method, use_jac):
        kwargs = {"jac": jac} if use_jac else {}
        return lambda: solve_ivp(rhs, (TVALS[0], TVALS[-1]), Y0, method=method, t_eval=TVALS,
                                 rtol=RTOL, atol=ATOL, **kwargs).y.T
    return {
        "solve_ivp_LSODA": ivp("LSODA", True),
        "solve_ivp_BDF": ivp("BDF", True),
        "solve_ivp_RK45": ivp("RK45", False),
        "odeint": lambda: odeint(rhs, Y0, TVALS, Dfun=jac, tfirst=True, rtol=RTOL, atol=ATOL),
    }


def time_scipy_peers(n_reps: int = 70, n_batches: int = 5) -> dict[str, tuple[float, np.ndarray]]:
    """For each SciPy method: (microseconds per solve, state at t=20), the time
    being the median over n_batches batches of n_reps // n_batches solves."""
    per_batch = max(1, n_reps // n_batches)
    results = {}
    for name, solve in _solvers().items():
        final_state = solve()[-1]  # warm-up
        batch_us = []
        for _ in range(n_batches):
            start = time.perf_counter()
            for _ in range(per_batch):
                solve()
            batch_us.append((time.perf_counter() - start) / per_batch * 1e6)
        results[name] = (statistics.median(batch_us), np.asarray(final_state))
    return results
