"""A loop of Lotka-Volterra solves to profile (``perf record -g``), rtol = atol = 1e-8.

Modes: ``fwd`` (``Solver(solver="ERK")``), ``adj`` (ERK forward + ERK backward: value +
gradient), ``bwd`` (the ERK backward alone, after one forward solve). Prints the time per
call and the solver's counts. The breakdown in benchmarks/README.md ("Where the time goes")
was made with

    OPENBLAS_NUM_THREADS=1 perf record -D 4000 -g -o fwd.data python benchmarks/lv_profile.py fwd 9
    perf report -i fwd.data --no-children --sort dso,sym

(-D 4000: leave out the imports and the build).
"""
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]  # this checkout's sunode_like; gradients.py

import sunode_like as sl  # noqa: E402
from gradients import LV_PARAMS, LV_TVALS, LV_Y0, lotka_volterra  # noqa: E402


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "adj"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    problem = sl.SympyProblem(params={k: () for k in LV_PARAMS}, states={"hares": (), "lynx": ()},
                              rhs_sympy=lotka_volterra)
    w = np.random.default_rng(0).uniform(0.5, 1.5, (len(LV_TVALS), 2))  # as gradients.py
    if mode == "fwd":
        solver = sl.Solver(problem, solver="ERK", rtol=1e-8, atol=1e-8)
        solver.set_params_dict(LV_PARAMS)
        y = solver.make_output_buffers(LV_TVALS)

        def run():
            solver.solve(0.0, LV_TVALS, LV_Y0, y)
    elif mode in ("adj", "bwd"):
        solver = sl.AdjointSolver(problem, solver="ERK", solver_backward="ERK", rtol=1e-8, atol=1e-8)
        solver.set_params_dict(LV_PARAMS)
        y, g, lam = solver.make_output_buffers(LV_TVALS)
        solver.solve_forward(0.0, LV_TVALS, LV_Y0, y)

        def run():
            if mode == "adj":
                solver.solve_forward(0.0, LV_TVALS, LV_Y0, y)
            solver.solve_backward(LV_TVALS[-1], 0.0, LV_TVALS, w, g, lam)
    else:
        raise SystemExit(f"mode {mode!r}: expected fwd, adj or bwd")
    run()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run()
        calls += 1
    print(f"{mode}: {(time.perf_counter() - start) / calls * 1e6:.1f} us per call, {solver.stats()}")


if __name__ == "__main__":
    main()
