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

With ``--diffrax``, diffrax's Tsit5 (PIDController at the same tolerances, jit'd, float64 on
the CPU) is timed in the same rounds: its forward solve and value + gradient with
BacksolveAdjoint and with its default RecursiveCheckpointAdjoint. It runs in a worker
process of a venv with jax and diffrax, made on first use under benchmarks/.venv-diffrax
(not tracked), that times one batch per request, so its batches interleave with ours.

With ``--tables``: the forward solve with each explicit table this build has
(``erk_table``: Dormand-Prince, Tsitouras, Verner 6(5) .. 9(8) on SUNDIALS >= 7) at
rtol = atol = 1e-8 and 1e-10, against the default table, with steps and errors.

With ``--stiff``: the Bari test set's ROBER (tvals 40, 1e11), HIRES (t = 321.8122) and
POLLU (tvals = linspace(0.5, 60, 8)) at rtol = 1e-8, atol = 1e-12: forward solves by
``solver="DIRK"`` and ``"auto"`` against BDF, and value + gradient (L = sum of y at the
output times, dL/dp for every rate constant, dL/dy0) by DIRK forward + DIRK backward and
BDF forward + DIRK backward against CVODES' BDF adjoint, each also against its own forward
solve; errors of y against the test set's reference (the last output time, in units of
atol + rtol |y|) and of the gradient against CVODES' forward sensitivities at rtol = 1e-12.

Run: ``python benchmarks/one_step.py [--diffrax] [--tables] [--stiff]`` (about a minute
per part once the venv exists; ``--quick`` for a smoke run).
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np
import scipy.integrate

HERE = pathlib.Path(__file__).resolve().parent
# This checkout's sunode_like (not an installed one), and gradients.py beside this file.
sys.path[:0] = [str(HERE.parent), str(HERE)]

import sunode_like as sl  # noqa: E402
from sunode_like.examples import test_set  # noqa: E402
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


DIFFRAX_VENV = HERE / ".venv-diffrax"
# The worker: per request line "<method> <seconds>", one timed batch of that method as
# a JSON line {"us": per-call microseconds}; first a line with its results and steps.
DIFFRAX_WORKER = """
import json, sys, time
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import diffrax, numpy as np
P = jnp.array(PARAMS); Y0 = jnp.array(Y0_); TVALS = jnp.array(TVALS_); W = jnp.array(W_)
T_LAST = TVALS_[-1]
term = diffrax.ODETerm(lambda t, y, p: jnp.stack([p[0] * y[0] - p[1] * y[0] * y[1],
                                                  p[3] * y[0] * y[1] - p[2] * y[1]]))
def solve(p, y0, adjoint=diffrax.RecursiveCheckpointAdjoint()):
    return diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, T_LAST, None, y0, args=p,
                               saveat=diffrax.SaveAt(ts=TVALS), adjoint=adjoint, max_steps=100_000,
                               stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL))
def value_and_grad(adjoint):
    return jax.jit(jax.value_and_grad(lambda p, y0: jnp.sum(W * solve(p, y0, adjoint).ys),
                                      argnums=(0, 1)))
methods = {"forward": jax.jit(lambda p, y0: solve(p, y0).ys),
           "backsolve": value_and_grad(diffrax.BacksolveAdjoint()),
           "checkpoint": value_and_grad(diffrax.RecursiveCheckpointAdjoint())}
stats = solve(P, Y0).stats
_, (gp, gy0) = methods["backsolve"](P, Y0)
_, (cp, cy0) = methods["checkpoint"](P, Y0)
print(json.dumps({"y": np.asarray(methods["forward"](P, Y0)).tolist(),
                  "backsolve": np.concatenate([gp, gy0]).tolist(),
                  "checkpoint": np.concatenate([cp, cy0]).tolist(),
                  "accepted": int(stats["num_accepted_steps"]),
                  "rejected": int(stats["num_rejected_steps"]), "jax": jax.__version__,
                  "diffrax": diffrax.__version__}), flush=True)
for line in sys.stdin:
    name, seconds = line.split()
    fn, n, start = methods[name], 0, time.perf_counter()
    while time.perf_counter() - start < float(seconds):
        jax.block_until_ready(fn(P, Y0))
        n += 1
    print(json.dumps({"us": (time.perf_counter() - start) / n * 1e6}), flush=True)
"""


def diffrax_worker(w):
    """The worker process (see DIFFRAX_WORKER) and its first line, after creating the venv
    with jax and diffrax if there is none."""
    python = DIFFRAX_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DIFFRAX_VENV)], check=True)
        (DIFFRAX_VENV / ".gitignore").write_text("*\n")
        subprocess.run([str(python), "-m", "pip", "install", "-q", "jax", "diffrax"], check=True)
    constants = dict(PARAMS=[LV_PARAMS[k] for k in ("alpha", "beta", "gamma", "delta")],
                     Y0_=LV_Y0.tolist(), TVALS_=LV_TVALS.tolist(), W_=w.tolist(),
                     RTOL=TOLERANCES["rtol"], ATOL=TOLERANCES["atol"])
    source = "".join(f"{k} = {v!r}\n" for k, v in constants.items()) + DIFFRAX_WORKER
    worker = subprocess.Popen([str(python), "-c", source], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    return worker, json.loads(worker.stdout.readline())


def diffrax_method(worker, name, batch_s):
    """A method for `interleaved` that times one batch in the worker; its per-call time is
    the worker's (interleaved calls it once per round: batch size 1)."""
    def run():
        worker.stdin.write(f"{name} {batch_s}\n")
        worker.stdin.flush()
        run.us.append(json.loads(worker.stdout.readline())["us"])
    run.us = []
    return run


def tables_part(problem, rounds, batch_s):
    """Each available erk_table against the default one on Lotka-Volterra's forward solve."""
    from sunode_like._options import available_erk_tables

    y_ref, _ = references(problem, np.ones((len(LV_TVALS), 2)))
    for tol in (1e-8, 1e-10):
        methods = {}
        for table in [None] + available_erk_tables():
            s = sl.Solver(problem, solver="ERK", erk_table=table, rtol=tol, atol=tol)
            s.set_params_dict(LV_PARAMS)
            y = s.make_output_buffers(LV_TVALS)
            run = (lambda s, y: lambda: s.solve(0.0, LV_TVALS, LV_Y0, y))(s, y)
            run.solver, run.y = s, y
            methods[table or "default"] = run
        times = interleaved(methods, rounds, batch_s)
        print(f"\nLotka-Volterra forward, erk_table, rtol = atol = {tol:g}")
        print(f"{'table':16s} {'us/call':>9s} {'/ default':>9s} {'steps':>6s} {'rhs':>6s} {'y err':>8s}")
        for name, run in methods.items():
            run()
            stats = run.solver.stats()
            print(f"{name:16s} {statistics.median(times[name]):9.1f} {ratio(times, name, 'default'):9.2f} "
                  f"{stats['steps']:6d} {stats['rhs_evals']:6d} {rel_err(run.y, y_ref):8.1e}")


def stiff_cases():
    """(name, test-set problem, tvals) of ROBER, HIRES and POLLU."""
    rober, hires, pollu = test_set.rober(), test_set.hires(), test_set.pollu()
    return [("ROBER", rober, np.array([40.0, rober.t_end])), ("HIRES", hires, np.array([hires.t_end])),
            ("POLLU", pollu, np.linspace(0.5, pollu.t_end, 8))]


def stiff_part(rounds, batch_s):
    tolerances = dict(rtol=1e-8, atol=1e-12)
    for name, case, tvals in stiff_cases():
        w = np.ones((len(tvals), case.y0.size))
        exact = sl.Solver(case.problem, sens_mode="simultaneous", rtol=1e-12, atol=1e-16)
        exact.set_params(case.params)
        y_exact, sens = exact.make_output_buffers(tvals)
        exact.solve(0.0, tvals, case.y0, y_exact, sens)
        grad_ref = np.einsum("tkj,tj->k", sens, w)

        def forward_run(method):
            s = sl.Solver(case.problem, solver=method, **tolerances)
            s.set_params(case.params)
            y = s.make_output_buffers(tvals)

            def run():
                s.solve(0.0, tvals, case.y0, y)
                return y, None
            run.solver = s
            return run

        def adjoint_run(method, backward):
            a = sl.AdjointSolver(case.problem, solver=method, solver_backward=backward, **tolerances)
            a.set_params(case.params)
            y, g, lam = a.make_output_buffers(tvals)

            def run():
                a.solve_forward(0.0, tvals, case.y0, y)
                a.solve_backward(tvals[-1], 0.0, tvals, w, g, lam)
                return y, np.concatenate([g, -lam])
            run.solver = a
            return run

        methods = {"forward BDF": forward_run("BDF"), "forward DIRK": forward_run("DIRK"),
                   "forward auto": forward_run("auto"),
                   "v+g BDF + BDF": adjoint_run("BDF", "BDF"),
                   "v+g BDF + DIRK": adjoint_run("BDF", "DIRK"),
                   "v+g DIRK + DIRK": adjoint_run("DIRK", "DIRK")}
        times = interleaved(methods, rounds, batch_s)
        print(f"\n{name} ({case.y0.size} states, {len(tvals)} output times), rtol = 1e-8, atol = 1e-12")
        print(f"{'method':18s} {'us/call':>9s} {'steps fwd':>9s} {'bwd':>6s} {'y err/tol':>9s} {'grad err':>8s}")
        for label, run in methods.items():
            y, grad = run()
            stats = run.solver.stats()
            grad_err = f"{rel_err(grad, grad_ref):8.1e}" if grad is not None else f"{'':8s}"
            # In units of the tolerance (ROBER's y2(1e11) = 8e-14 is below atol).
            y_err = np.max(np.abs(y[-1] - case.reference) / (1e-12 + 1e-8 * np.abs(case.reference)))
            print(f"{label:18s} {statistics.median(times[label]):9.1f} {stats['steps']:9d} "
                  f"{stats['steps_backward']:6d} {y_err:9.2f} {grad_err}")
        for label, reference in [("forward DIRK", "forward BDF"), ("forward auto", "forward BDF"),
                                 ("v+g DIRK + DIRK", "v+g BDF + BDF"), ("v+g BDF + DIRK", "v+g BDF + BDF"),
                                 ("v+g BDF + BDF", "forward BDF"), ("v+g DIRK + DIRK", "forward BDF"),
                                 ("v+g DIRK + DIRK", "forward DIRK")]:
            print(f"  {label} / {reference}: {ratio(times, label, reference):.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few short rounds (smoke run)")
    parser.add_argument("--diffrax", action="store_true",
                        help="time diffrax's Tsit5 in the same rounds (makes a venv on first use)")
    parser.add_argument("--tables", action="store_true", help="also every erk_table on Lotka-Volterra")
    parser.add_argument("--stiff", action="store_true", help="also DIRK and auto on ROBER, HIRES, POLLU")
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
    peers = {}
    if args.diffrax:
        worker, diffrax_results = diffrax_worker(w)
        peers = {f"diffrax {name}": diffrax_method(worker, name, batch_s)
                 for name in ("forward", "backsolve", "checkpoint")}
    times = interleaved({**methods, **peers}, rounds, batch_s)
    for name, run in peers.items():
        times[name] = run.us[-rounds:]  # the worker's per-call times (warm-up calls dropped)

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
    if peers:
        print(f"diffrax {diffrax_results['diffrax']} (jax {diffrax_results['jax']}) Tsit5: "
              f"{diffrax_results['accepted']} accepted + {diffrax_results['rejected']} rejected "
              f"steps, y err {rel_err(np.array(diffrax_results['y']), y_ref):.1e}, gradient err "
              f"BacksolveAdjoint {rel_err(np.array(diffrax_results['backsolve']), grad_ref):.1e}, "
              f"RecursiveCheckpointAdjoint {rel_err(np.array(diffrax_results['checkpoint']), grad_ref):.1e}")
        for name in peers:
            print(f"{name:26s} {sorted(times[name])[len(times[name]) // 2]:9.1f}")
        worker.stdin.close()
        worker.wait()
    print("\nratios (median over rounds of the per-round ratio):")
    comparisons = [("forward ERK", "diffrax forward"), ("forward BDF", "diffrax forward"),
                   ("v+g ERK fwd + ERK bwd", "diffrax backsolve"),
                   ("v+g BDF fwd + ERK bwd", "diffrax backsolve"),
                   ("v+g ERK fwd + ERK bwd", "diffrax checkpoint")] if peers else []
    for name, reference in comparisons + [("forward ERK", "forward BDF"),
                            ("v+g ERK fwd + ERK bwd", "v+g BDF fwd + ERK bwd"),
                            ("v+g ERK fwd + DIRK bwd", "v+g BDF fwd + ERK bwd"),
                            ("v+g ERK fwd + ERK bwd", "forward ERK"),
                            ("v+g BDF fwd + ERK bwd", "forward BDF"),
                            ("fwd sens (6) ERK", "fwd sens (6) BDF")]:
        print(f"  {name} / {reference}: {ratio(times, name, reference):.2f}")
    if args.tables:
        tables_part(problem, rounds, batch_s)
    if args.stiff:
        stiff_part(rounds, batch_s)
    print(f"load average at end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"total {time.perf_counter() - START:.0f} s")


if __name__ == "__main__":
    main()
