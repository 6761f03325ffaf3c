"""A loop of DIRK backward solves on a stiff problem of stiff_adjoint.py, to profile.

Usage: ``python benchmarks/stiff_profile.py CASE [SECONDS] [RTOL]``, CASE one of ``pollu``,
``rober``, ``hires``, ``fkpp`` (default options, rtol = atol = 1e-8 unless RTOL is given,
atol then scaled as stiff_adjoint.py's --tight). Prints the time per backward solve, the
forward solve's and the counts. The breakdown in benchmarks/README.md was made with

    OPENBLAS_NUM_THREADS=1 perf record -D 8000 -g -o pollu.data python benchmarks/stiff_profile.py pollu 10
    perf report -i pollu.data --no-children --sort dso,sym
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]  # this checkout's sunode_like; stiff_adjoint.py

from stiff_adjoint import cases  # noqa: E402


def per_call(run, seconds):
    run()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run()
        calls += 1
    return (time.perf_counter() - start) / calls * 1e6


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "pollu"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    rtol = float(sys.argv[3]) if len(sys.argv) > 3 else None
    names = {"pollu": "POLLU", "rober": "Robertson", "hires": "HIRES", "fkpp": "Fisher-KPP n=100"}
    case = next(c for c in cases(only=names[name]))
    options = dict(case.options)
    if rtol is not None:
        options.update(rtol=rtol, atol=case.atol_tight * rtol / 1e-12)
    solver = case.forward_solver(options)[0]
    y = solver.make_output_buffers(case.tvals)
    forward = per_call(lambda: solver.solve(0.0, case.tvals, case.y0, y), 0.2 * seconds)
    adjoint = case.adjoint(solver_backward="DIRK", **options)
    adjoint()
    adj = adjoint.solver
    _, g, lam = adj.make_output_buffers(case.tvals)
    backward = per_call(lambda: adj.solve_backward(case.tvals[-1], 0.0, case.tvals, case.w, g, lam),
                        seconds)
    stats = adj.stats()
    print(f"{case.name}: forward {forward:.1f} us, DIRK backward {backward:.1f} us "
          f"({backward / forward:.2f}x); forward steps {stats['steps']}, backward steps "
          f"{stats['steps_backward']}, rhs evals {stats['rhs_evals_backward']}, error test fails "
          f"{stats['error_test_fails_backward']}")


if __name__ == "__main__":
    main()
