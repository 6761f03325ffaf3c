"""Forward-solve benchmark: our `Solver.solve` against CVODES called directly from C.

Problem (identical to ``lv_direct.c`` and ``_scipy_peers.py``): Lotka-Volterra,
alpha=0.52, beta=0.026, gamma=0.84, delta=0.026, y0=(34, 5.9), t0=0, tvals=0,1,...,20,
BDF with the dense linear solver and the analytic Jacobian, rtol=atol=1e-8.

The machine is shared and noisy, so our batches and the C program's batches are
interleaved round by round: each round times a batch of our solves (flat y0, dict y0)
and then runs the C program (which reports the median of its own 7 batches). The ratio
to direct C is the median over rounds of the per-round ratio, so a slow spell hits both
sides of a ratio. Then the time to build problem + solver in a fresh process, with a
cold model cache (new SUNODE_LIKE_CACHE_DIR) and with the same cache warm.

Run: ``python benchmarks/forward.py`` (about 1 minute on a quiet machine; ``--quick`` for a
smoke run).
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import sunode_like as sl

HERE = pathlib.Path(__file__).resolve().parent
START = time.perf_counter()

PARAMS = {"alpha": 0.52, "beta": 0.026, "gamma": 0.84, "delta": 0.026}
Y0 = np.array([34.0, 5.9])
Y0_DICT = {"hares": 34.0, "lynx": 5.9}
TVALS = np.arange(21.0)


def lotka_volterra(t, y, p):
    return {"hares": p.alpha * y.hares - p.beta * y.hares * y.lynx,
            "lynx": p.delta * y.hares * y.lynx - p.gamma * y.lynx}


def make_problem():
    return sl.SympyProblem(params={name: () for name in PARAMS},
                           states={"hares": (), "lynx": ()}, rhs_sympy=lotka_volterra)


def make_solver(problem):
    solver = sl.Solver(problem, solver="BDF", linear_solver="dense", rtol=1e-8, atol=1e-8)
    solver.set_params_dict(PARAMS)
    return solver


def batch_us(fn, n):
    """Microseconds per call of fn over one batch of n calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


# Run in a fresh interpreter: import, problem, solver, first solve, each timed.
BUILD_SCRIPT = f"""
import json, sys, time
t = [time.perf_counter()]
import numpy as np
sys.path.insert(0, {str(HERE)!r})
import sunode_like as sl
from forward import make_problem, make_solver, TVALS, Y0
t.append(time.perf_counter())
problem = make_problem()
t.append(time.perf_counter())
solver = make_solver(problem)
t.append(time.perf_counter())
y = solver.make_output_buffers(TVALS)
solver.solve(0.0, TVALS, Y0, y)
t.append(time.perf_counter())
print(json.dumps(dict(import_s=t[1] - t[0], problem_s=t[2] - t[1], solver_s=t[3] - t[2],
                      first_solve_s=t[4] - t[3])))
"""


def time_build(cache_dir):
    env = dict(os.environ, SUNODE_LIKE_CACHE_DIR=str(cache_dir))
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", BUILD_SCRIPT], env=env, check=True,
                         capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--per-batch", type=int, default=200, help="our solves per batch")
    parser.add_argument("--scipy-reps", type=int, default=60)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    # Imported here so that the fresh build processes (which import this module) do not
    # pay for scipy.
    sys.path.insert(0, str(HERE))
    from _direct_c import build_direct_c, time_direct_c
    from _scipy_peers import time_scipy_peers
    if args.quick:
        args.rounds, args.per_batch, args.scipy_reps = 3, 50, 10

    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    build_direct_c()
    solver = make_solver(make_problem())
    y_flat = solver.make_output_buffers(TVALS)
    y_dict = solver.make_output_buffers(TVALS)
    ours = {
        "ours, flat y0": lambda: solver.solve(0.0, TVALS, Y0, y_flat),
        "ours, dict y0": lambda: solver.solve(0.0, TVALS, Y0_DICT, y_dict),
    }
    for fn in ours.values():  # warm-up
        batch_us(fn, 10)

    times = {name: [] for name in ours}
    c_times = []
    for _ in range(args.rounds):
        for name, fn in ours.items():
            times[name].append(batch_us(fn, args.per_batch))
        # About two of our batches' worth of C solves, in its own 7 batches.
        us, c_final = time_direct_c(2 * args.per_batch)
        c_times.append(us)

    # Same algorithm and settings as the C program: the trajectories must agree closely.
    for name, y in (("ours, flat y0", y_flat), ("ours, dict y0", y_dict)):
        if not np.allclose(y[-1], c_final, rtol=1e-9, atol=0):
            raise RuntimeError(f"{name}: final state {y[-1]} differs from direct C {c_final}")

    c_median = statistics.median(c_times)
    rows = []
    for name, ts in times.items():
        ratio = statistics.median(t / c for t, c in zip(ts, c_times))
        rows.append((name, statistics.median(ts), min(ts), ratio, y_flat[-1]))
    rows.append(("direct C (CVODES)", c_median, min(c_times), 1.0, c_final))
    for name, (us, final) in time_scipy_peers(args.scipy_reps, 5).items():
        if not np.allclose(final, c_final, rtol=1e-5):
            raise RuntimeError(f"{name}: final state {final} differs from direct C {c_final}")
        rows.append((f"scipy {name}", us, float("nan"), us / c_median, final))

    print(f"Lotka-Volterra forward solve, BDF dense rtol=atol=1e-8, 21 output times; "
          f"{args.rounds} interleaved rounds of {args.per_batch} solves per method "
          f"(C: median of 7 batches of {2 * args.per_batch // 7} per round)")
    print(f"{'method':<26}{'median us':>11}{'min us':>10}{'x direct C':>12}   state at t=20")
    for name, med, low, ratio, final in rows:
        low_s = "" if np.isnan(low) else f"{low:.1f}"
        print(f"{name:<26}{med:>11.1f}{low_s:>10}{ratio:>12.2f}   "
              f"{final[0]:.10f} {final[1]:.10f}")
    print("ratio for ours: median over rounds of (our batch / C in the same round); "
          "scipy: median / median of direct C")
    print("target: ours <= 1.2x direct C ->",
          "met" if rows[0][3] <= 1.2 else "NOT met")

    print("\nbuild problem + Solver in a fresh process (seconds)")
    print(f"{'cache':<14}{'import':>9}{'problem':>9}{'solver':>9}{'1st solve':>11}{'process':>9}")
    with tempfile.TemporaryDirectory() as cache_dir:
        runs = [("cold", time_build(cache_dir))]
        runs += [(f"warm #{i + 1}", time_build(cache_dir)) for i in range(3)]
    for label, r in runs:
        print(f"{label:<14}{r['import_s']:>9.2f}{r['problem_s']:>9.2f}{r['solver_s']:>9.2f}"
              f"{r['first_solve_s']:>11.3f}{r['process_s']:>9.2f}")
    print("cold: empty SUNODE_LIKE_CACHE_DIR (sympy derivatives, codegen, numba compile); "
          "warm: same dir again (generated module + numba cache reused)")

    print(f"load average at end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"total {time.perf_counter() - START:.0f} s")


if __name__ == "__main__":
    main()
