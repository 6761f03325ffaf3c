"""One-step forward methods: solver="ERK" (ARKODE's explicit Runge-Kutta) against BDF.

Lotka-Volterra (the problem of ``forward.py`` and ``gradients.py``), rtol = atol = 1e-8,
tvals = 0, 1, ..., 20, L = sum_{i,j} w[i, j] y_j(t_i) with the fixed random weights of
``gradients.py``. Timed interleaved, round by round (the machine is shared and noisy):
  - forward solves: ``Solver(solver="BDF")`` and ``Solver(solver="ERK")``;
  - value + gradient (dL/dp for the 4 params, dL/dy0) by the adjoint: BDF forward with the
    ERK backward (today's fastest, ``solver_backward="ERK"``), and ERK forward with the ERK
    and the DIRK backward (no CVODES at all);
  - forward sensitivities (6), BDF and ERK.
Ratios are medians over rounds of the per-round ratio. Each method's steps and its error
(y against scipy's DOP853 at rtol = 1e-13, gradients against CVODES' forward sensitivities
at rtol = 1e-12) are printed with it.

Run: ``python benchmarks/one_step.py`` (about a minute; ``--quick`` for a smoke run).
"""
import argparse
import os
import pathlib
import sys
import time

import numpy as np
import scipy.integrate

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sunode_like as sl  # noqa: E402
from gradients import LV_PARAMS, LV_TVALS, LV_Y0, interleaved, lotka_volterra, ratio, rel_err  # noqa: E402

START = time.perf_counter()
TOLERANCES = dict(rtol=1e-8, atol=1e-8)


def references(problem, w):
    """y(tvals) from DOP853 at rtol = atol = 1e-13, and (dL/dp, dL/dy0) from CVODES'
    forward sensitivities at rtol = atol = 1e-12."""
    p = LV_PARAMS

    def f(t, y):
        return [p["alpha"] * y[0] - p["beta"] * y[0] * y[1], p["delta"] * y[0] * y[1] - p["gamma"] * y[1]]

    y_ref = scipy.integrate.solve_ivp(f, (0.0, LV_TVALS[-1]), LV_Y0, method="DOP853", t_eval=LV_TVALS,
                                      rtol=1e-13, atol=1e-13).y.T
    solver = sl.Solver(problem, sens_mode="simultaneous", rtol=1e-12, atol=1e-12)
    solver.set_params_dict(LV_PARAMS)
    y_out, sens_out = solver.make_output_buffers(LV_TVALS)
    solver.solve(0.0, LV_TVALS, LV_Y0, y_out, sens_out)
    return y_ref, np.einsum("tkj,tj->k", sens_out, w)


def forward(problem, solver):
    s = sl.Solver(problem, solver=solver, **TOLERANCES)
    s.set_params_dict(LV_PARAMS)
    y = s.make_output_buffers(LV_TVALS)

    def run():
        s.solve(0.0, LV_TVALS, LV_Y0, y)
        return y, None
    run.solver = s
    return run


def adjoint(problem, w, solver, solver_backward):
    a = sl.AdjointSolver(problem, solver=solver, solver_backward=solver_backward, **TOLERANCES)
    a.set_params_dict(LV_PARAMS)
    y, g, lam = a.make_output_buffers(LV_TVALS)

    def run():
        a.solve_forward(0.0, LV_TVALS, LV_Y0, y)
        a.solve_backward(LV_TVALS[-1], 0.0, LV_TVALS, w, g, lam)
        return y, np.concatenate([g, -lam])
    run.solver = a
    return run


def sensitivities(problem, w, solver):
    s = sl.Solver(problem, solver=solver, sens_mode="simultaneous", **TOLERANCES)
    s.set_params_dict(LV_PARAMS)
    y, sens = s.make_output_buffers(LV_TVALS)

    def run():
        s.solve(0.0, LV_TVALS, LV_Y0, y, sens)
        return y, np.einsum("tkj,tj->k", sens, w)
    run.solver = s
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few short rounds (smoke run)")
    args = parser.parse_args()
    rounds, batch_s = (3, 0.05) if args.quick else (15, 0.3)

    problem = sl.SympyProblem(params={k: () for k in LV_PARAMS}, states={"hares": (), "lynx": ()},
                              rhs_sympy=lotka_volterra)
    w = np.random.default_rng(0).uniform(0.5, 1.5, (len(LV_TVALS), 2))  # as gradients.py
    y_ref, grad_ref = references(problem, w)
    methods = {
        "forward BDF": forward(problem, "BDF"),
        "forward ERK": forward(problem, "ERK"),
        "v+g BDF fwd + ERK bwd": adjoint(problem, w, "BDF", "ERK"),
        "v+g ERK fwd + ERK bwd": adjoint(problem, w, "ERK", "ERK"),
        "v+g ERK fwd + DIRK bwd": adjoint(problem, w, "ERK", "DIRK"),
        "fwd sens (6) BDF": sensitivities(problem, w, "BDF"),
        "fwd sens (6) ERK": sensitivities(problem, w, "ERK"),
    }
    times = interleaved(methods, rounds, batch_s)

    version = f"{sl._sundials.lib.SUNDIALS_VERSION_MAJOR}.{sl._sundials.lib.SUNDIALS_VERSION_MINOR}"
    print(f"Lotka-Volterra, rtol = atol = 1e-8, 21 output times, SUNDIALS {version}, "
          f"{rounds} interleaved rounds")
    print(f"{'method':26s} {'us/call':>9s} {'steps fwd':>9s} {'bwd':>5s} {'rhs fwd':>8s} "
          f"{'y err':>8s} {'grad err':>8s}")
    for name, run in methods.items():
        y, grad = run()
        stats = run.solver.stats()
        grad_err = f"{rel_err(grad, grad_ref):8.1e}" if grad is not None else f"{'':8s}"
        median = sorted(times[name])[len(times[name]) // 2]
        print(f"{name:26s} {median:9.1f} {stats['steps']:9d} {stats['steps_backward']:5d} "
              f"{stats['rhs_evals']:8d} {rel_err(y, y_ref):8.1e} {grad_err}")
    print("\nratios (median over rounds of the per-round ratio):")
    for name, reference in [("forward ERK", "forward BDF"),
                            ("v+g ERK fwd + ERK bwd", "v+g BDF fwd + ERK bwd"),
                            ("v+g ERK fwd + DIRK bwd", "v+g BDF fwd + ERK bwd"),
                            ("v+g ERK fwd + ERK bwd", "forward ERK"),
                            ("v+g BDF fwd + ERK bwd", "forward BDF"),
                            ("fwd sens (6) ERK", "fwd sens (6) BDF")]:
        print(f"  {name} / {reference}: {ratio(times, name, reference):.2f}")
    print(f"load average at end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"total {time.perf_counter() - START:.0f} s")


if __name__ == "__main__":
    main()
