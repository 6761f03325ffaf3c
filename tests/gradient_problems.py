"""Problems for the gradient tests: a model, its params, initial state and output times.

Each factory returns a `GradientProblem`. ``params`` is the flat float64 vector of all
params (``problem.params`` layout), ``y0`` the flat initial state, ``options`` the solver
options (tolerances, method, linear solver) the gradients are checked at. ``fd_options``
are the (tighter) options of the finite-difference solves and ``y0_steps`` their steps in
y0 (default: 1e-3 * max(|y0|, 1)).
"""
from typing import NamedTuple

import numpy as np
import sympy

import sunode_like as sl
from sunode_like.examples import test_set


class GradientProblem(NamedTuple):
    problem: sl.SympyProblem
    params: np.ndarray
    y0: np.ndarray
    t0: float
    tvals: np.ndarray
    options: dict
    fd_options: dict = None
    y0_steps: np.ndarray = None


def _lv_rhs(t, y, p):
    return {"hares": p.alpha * y.hares - p.beta * y.hares * y.lynx,
            "lynx": p.delta * y.hares * y.lynx - p.gamma * y.lynx}


LV_PARAMS = {"alpha": 0.52, "beta": 0.026, "gamma": 0.84, "delta": 0.026}


def lotka_volterra(t0=0.0, derivative_params=None):
    """Lotka-Volterra, 2 states, 4 params, tvals 0, 1, ..., 20 (t0 may lie before 0)."""
    problem = sl.SympyProblem(params={name: () for name in LV_PARAMS},
                              states={"hares": (), "lynx": ()}, rhs_sympy=_lv_rhs,
                              derivative_params=derivative_params)
    return GradientProblem(problem, problem.params.flatten(LV_PARAMS), np.array([34.0, 5.9]),
                           float(t0), np.arange(21.0), dict(rtol=1e-10, atol=1e-10),
                           fd_options=dict(rtol=1e-12, atol=1e-12))


def robertson():
    """Robertson's stiff chemical kinetics, 3 states, rate constants k1, k2, k3 as params.

    y2 stays below 4e-5, so its atol is far below the others'. Late on, y2' is a small
    difference of large terms (rtol=1e-10 leaves it 1e-4 wrong at t=1e3), so dL/dtvals
    needs rtol=1e-12 to be good to 1e-5. A negative y2(0) below
    -sqrt(k1 / k2) ~ -4e-5 blows up, and L varies on that scale in y2(0): its finite
    difference step is 1e-6 and needs rtol=1e-13 solves to beat the solver's noise.
    """
    rober = test_set.rober()
    return GradientProblem(rober.problem, rober.params, rober.y0, 0.0, np.logspace(-2, 3, 6),
                           dict(solver="BDF", rtol=1e-12, atol=np.array([1e-14, 1e-18, 1e-14])),
                           fd_options=dict(rtol=1e-13, atol=np.array([1e-15, 1e-19, 1e-15])),
                           y0_steps=np.array([1e-3, 1e-6, 1e-3]))


def pollu():
    """The test set's POLLU (20 species, 25 rate constants as params) at 8 output times."""
    pollu = test_set.pollu()
    return GradientProblem(pollu.problem, pollu.params, pollu.y0, 0.0, np.linspace(0.5, 60.0, 8),
                           dict(rtol=1e-10, atol=1e-14))


def chain(n=20, derivative_params=None):
    """A chain of n compartments with per-compartment transfer rates k_i and a shared
    quadratic loss d:  x_i' = k_{i-1} x_{i-1} - k_i x_i - d x_i^2  (no inflow into x_0).

    n states, n + 1 params (k of shape (n,), then d); the Jacobian is lower bidiagonal.
    """
    def rhs(t, y, p):
        x, k = y.x, p.k
        return {"x": [(k[i - 1] * x[i - 1] if i else 0) - k[i] * x[i] - p.d * x[i] ** 2
                      for i in range(n)]}

    problem = sl.SympyProblem(params={"k": (n,), "d": ()}, states={"x": (n,)}, rhs_sympy=rhs,
                              derivative_params=derivative_params)
    k = 1.0 + 0.5 * np.sin(np.arange(n))
    y0 = np.linspace(2.0, 0.5, n)
    return GradientProblem(problem, np.append(k, 0.3), y0, 0.0, np.linspace(0.5, 6.0, 12),
                           dict(linear_solver="sparse", rtol=1e-10, atol=1e-10),
                           fd_options=dict(linear_solver="sparse", rtol=1e-12, atol=1e-12))


def forced_oscillator():
    """A damped oscillator driven at frequency w: x' = v, v' = -k x - c v + A sin(w t).

    f depends on t explicitly, so dL/dt0 and dL/dtvals are not those of an autonomous
    system shifted in time. The param ``unused`` does not appear in f: dL/dunused = 0.
    """
    problem = sl.SympyProblem(
        params={"k": (), "c": (), "A": (), "w": (), "unused": ()}, states={"x": (), "v": ()},
        rhs_sympy=lambda t, y, p: {"x": y.v,
                                   "v": -p.k * y.x - p.c * y.v + p.A * sympy.sin(p.w * t)})
    return GradientProblem(problem, np.array([2.0, 0.3, 1.5, 2.5, 7.0]), np.array([1.0, 0.0]),
                           0.3, np.linspace(1.0, 10.0, 10), dict(rtol=1e-10, atol=1e-10),
                           fd_options=dict(rtol=1e-12, atol=1e-12))
