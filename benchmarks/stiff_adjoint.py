"""Stiff adjoint benchmark (issue 15): value + gradient with the BDF and the DIRK backward.

For each stiff problem, at rtol = atol = 1e-8 (dense linear solver, band for Fisher-KPP),
five calls timed in interleaved rounds:
  - the forward solve by BDF (``Solver.solve``),
  - value + gradient by the adjoint after a BDF forward solve with CVODES' BDF backward
    problem,
  - the same with ``solver_backward="DIRK"`` (implicit one-step steps over the recorded
    forward trajectory, csrc/sl_rk_adjoint.c),
  - the forward solve and the value + gradient with the default options (solver="auto":
    an explicit attempt given up on these stiff problems, then BDF; the DIRK backward),
for L = sum_ij w_ij y_j(t_i) (fixed random weights w in [0.5, 1.5], for Robertson divided
by max |y_j| so that y2 ~ 1e-5 counts), with respect to every param and y0. Ratios are medians of per-round ratios to
the forward solve. Problems:
  - POLLU (20 states, 25 params), tvals = linspace(0.5, 60, 8),
  - Robertson (3 states, 3 params), tvals = logspace(-2, 3, 6),
  - HIRES (8 states, 12 params), tvals = linspace(1, 321.8122, 8),
  - Fisher-KPP reaction-diffusion on n = 100 cells (``gradients.rd_problem``: 12 params),
    21 outputs on 0..10.
Also printed: forward and backward steps, the backward problem's rhs evaluations and error
test failures, and each gradient's error against forward sensitivities at rtol = 1e-12
(max |g - g_ref| / max |g_ref| over dL/dp and over dL/dy0; for Fisher-KPP the dL/dy0
reference is the BDF backward at rtol = 1e-12, its sensitivities being only for params).
``--tight`` adds, at rtol = 1e-10 and 1e-12 (atol scaled alike), both backward problems'
gradient errors entry by entry (as tests/test_dirk_adjoint.py measures them), their
backward steps and the ratio of their value + gradient times.

Run: ``python benchmarks/stiff_adjoint.py`` (about 2 minutes once the kernels are cached).
"""
import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's

import sunode_like as sl  # noqa: E402
from sunode_like.examples import test_set  # noqa: E402

from gradients import RD_D, RD_R, RD_S, RD_TVALS, interleaved, ratio, rd_problem  # noqa: E402


class Case:
    def __init__(self, name, problem, params, y0, tvals, options, atol_tight, scaled=False):
        self.name, self.problem, self.params, self.y0, self.tvals = name, problem, params, y0, tvals
        self.options, self.atol_tight = options, atol_tight
        y = self.forward_solver(options)[1]
        self.w = np.random.default_rng(0).uniform(0.5, 1.5, y.shape)
        if scaled:
            self.w /= np.abs(y).max(axis=0)

    def forward_solver(self, options, **extra):
        solver = sl.Solver(self.problem, **options, **extra)
        solver.set_params(self.params)
        buffers = solver.make_output_buffers(self.tvals)
        y = buffers[0] if isinstance(buffers, tuple) else buffers
        solver.solve(0.0, self.tvals, self.y0, *(buffers if isinstance(buffers, tuple) else (buffers,)))
        return solver, y, buffers

    def adjoint(self, **options):
        """A value + gradient call; its result: (dL/dp, dL/dy0); .solver: the AdjointSolver."""
        adj = sl.AdjointSolver(self.problem, **options)
        adj.set_params(self.params)
        y, g, lam = adj.make_output_buffers(self.tvals)

        def run():
            adj.solve_forward(0.0, self.tvals, self.y0, y)
            adj.solve_backward(self.tvals[-1], 0.0, self.tvals, self.w, g, lam)
            return g.copy(), -lam
        run.solver = adj
        return run

    def reference(self):
        """(dL/dp, dL/dy0) at rtol = 1e-12 by forward sensitivities (dL/dy0 of a problem
        with more than 50 states: by the BDF backward problem at that tolerance)."""
        tight = dict(self.options, solver="BDF", rtol=1e-12, atol=self.atol_tight)
        few = self.problem.n_states <= 50
        _, _, (y, sens) = self.forward_solver(tight, sens_mode="simultaneous", sens_y0=few)
        g = np.einsum("ikj,ij->k", sens, self.w)
        n_p = self.problem.n_dparams
        dy0 = g[n_p:] if few else self.adjoint(**tight)()[1]
        return g[:n_p], dy0


def error(got, reference):
    return max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(got, reference))


def entrywise_error(got, reference):
    """As tests/test_gradients.assert_gradients_close: entry by entry, with a floor of 1e-9
    of the field's largest entry."""
    return max(float(np.max(np.abs(a - b) / (np.abs(b) + 1e-9 * np.abs(b).max())))
               for a, b in zip(got, reference))


def cases(only=None):
    """The problems (only: the one of that name)."""
    if only in (None, "POLLU"):
        pollu = test_set.pollu()
        yield Case("POLLU", pollu.problem, pollu.params, pollu.y0, np.linspace(0.5, 60.0, 8), {},
                   1e-20)
    if only in (None, "Robertson"):
        rober = test_set.rober()
        yield Case("Robertson", rober.problem, rober.params, rober.y0, np.logspace(-2, 3, 6), {},
                   np.array([1e-16, 1e-20, 1e-16]), scaled=True)
    if only in (None, "HIRES"):
        hires = test_set.hires()
        yield Case("HIRES", hires.problem, hires.params, hires.y0, np.linspace(1.0, 321.8122, 8),
                   {}, 1e-16)
    if only in (None, "Fisher-KPP n=100"):
        rd, _ = rd_problem(100)
        nb = rd.params.leaves[-1].shape[0]
        x = np.arange(100) / 100
        yield Case("Fisher-KPP n=100", rd, np.concatenate([[RD_D, RD_R], np.full(nb, RD_S)]),
                   0.1 + 0.08 * np.sin(2 * np.pi * 3 * x), RD_TVALS, dict(linear_solver="band"),
                   1e-14)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batch-s", type=float, default=0.15, help="seconds per timed batch")
    parser.add_argument("--tight", action="store_true", help="also the errors at rtol 1e-10, 1e-12")
    args = parser.parse_args()
    print(f"{'problem':<18}{'method':<16}{'median ms':>10}{'x forward':>10}{'steps':>7}"
          f"{'rhs evals':>10}{'err fails':>10}{'grad err':>10}")
    for case in cases():
        solvers = {"forward": case.forward_solver(dict(case.options, solver="BDF"))[0],
                   "forward default": case.forward_solver(case.options)[0]}
        y = solvers["forward"].make_output_buffers(case.tvals)
        methods = {name: (lambda s=s: s.solve(0.0, case.tvals, case.y0, y)) for name, s in solvers.items()}
        for backward in ("BDF", "DIRK"):
            methods[f"v+g {backward} bwd"] = case.adjoint(solver="BDF", solver_backward=backward,
                                                          **case.options)
        methods["v+g default"] = case.adjoint(**case.options)
        reference = case.reference()
        errors = {name: error(fn(), reference) for name, fn in methods.items() if name not in solvers}
        times = interleaved(methods, args.rounds, args.batch_s)
        for name, fn in methods.items():
            forward = name in solvers
            stats = (solvers[name] if forward else fn.solver).stats()
            steps = stats["steps"] if forward else stats["steps_backward"]
            extra = (f"{stats['rhs_evals']:>10}" if forward else
                     f"{stats['rhs_evals_backward']:>10}{stats['error_test_fails_backward']:>10}"
                     f"{errors[name]:>10.1e}")
            print(f"{case.name:<18}{name:<16}{statistics.median(times[name]) / 1e3:>10.3f}"
                  f"{ratio(times, name, 'forward'):>10.2f}{steps:>7}{extra}")
        dirk, bdf = (ratio(times, f"v+g {b} bwd", "forward") for b in ("DIRK", "BDF"))
        print(f"{'':<18}DIRK / BDF backward, value + gradient: {dirk / bdf:.2f}; default options, "
              f"value + gradient / forward: {ratio(times, 'v+g default', 'forward default'):.2f}")
        if args.tight:
            for rtol in (1e-10, 1e-12):
                tight = dict(case.options, solver="BDF", rtol=rtol, atol=case.atol_tight * rtol / 1e-12)
                runs = {b: case.adjoint(solver_backward=b, **tight) for b in ("BDF", "DIRK")}
                errs = {b: entrywise_error(run(), reference) for b, run in runs.items()}
                steps = {b: run.solver.stats()["steps_backward"] for b, run in runs.items()}
                times = interleaved(runs, 3, args.batch_s)
                print(f"{'':<18}rtol {rtol:.0e}: entrywise gradient error BDF {errs['BDF']:.1e}, "
                      f"DIRK {errs['DIRK']:.1e}; backward steps {steps['BDF']}, {steps['DIRK']}; "
                      f"v+g DIRK / BDF {ratio(times, 'DIRK', 'BDF'):.2f}")
    print("steps: forward steps, or the backward problem's (CVODES: summed over intervals); "
          "grad err: max |g - g_ref| / max |g_ref| over dL/dp and dL/dy0, g_ref by forward "
          "sensitivities at rtol=1e-12")


if __name__ == "__main__":
    main()
