"""A hierarchical model's logp + dlogp: subjects whose Ops share props share one solver pool.

    python benchmarks/pool_reuse.py [--subjects 4] [--rounds 9] [--solver-backward ERK] [--reference TREE]

Lotka-Volterra with per-subject params (BDF forward, the adjoint's backward problem BDF or
``--solver-backward``, rtol = atol = 1e-8, 21 output times), one
PyTensor function (PyTensor's default backend) computing the sum of the subjects' squared
errors and its gradient by the adjoint. Per evaluation it prints the time and the forward
solves run (`op.n_forward_solves`; with full reuse one per subject; each round's first
evaluation, the first after forward-only calls, is not counted), and for a forward-only
function (values only, as in posterior predictive sampling; every call at new params) the
time per call and the solvers the pool holds afterwards.

``--reference TREE`` also runs the same measurement with the sunode_like of TREE (a checkout
with its extension built in place, e.g. a worktree of main), each tree in its own process,
the two interleaved round by round; times are CPU times, the minimum over rounds.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH_SECONDS = 0.3


def lv_rhs(t, y, p):
    return {"hares": p.alpha * y.hares - p.beta * y.hares * y.lynx,
            "lynx": p.delta * y.hares * y.lynx - p.gamma * y.lynx}


def seconds_per_call(fn, args_of):
    """The mean CPU seconds (of this thread, which runs the solves: less disturbed by other
    processes than wall time) per call of ``fn(*args_of(i))`` over a batch of about
    BATCH_SECONDS."""
    n, start, cpu = 0, time.perf_counter(), time.thread_time()
    while time.perf_counter() - start < BATCH_SECONDS:
        fn(*args_of(n))
        n += 1
    return (time.thread_time() - cpu) / n


def worker(n_subjects, solver_backward):
    """Build the functions, then answer each line on stdin with one round's measurements."""
    import pytensor
    import pytensor.tensor as pt

    import sunode_like as sl
    from sunode_like._sundials import lib
    from sunode_like.wrappers.as_pytensor import SolveODE

    problem = sl.SympyProblem(params={n: () for n in ("alpha", "beta", "gamma", "delta")},
                              states={"hares": (), "lynx": ()}, rhs_sympy=lv_rhs)
    op = SolveODE(problem, dict(rtol=1e-8, atol=1e-8, solver_backward=solver_backward), "adjoint")
    tvals, y0 = np.arange(21.0), np.array([34.0, 5.9])
    base = np.array([0.52, 0.026, 0.84, 0.026])
    params = [pt.dvector(f"p{k}") for k in range(n_subjects)]
    values = [op(y0, p, tvals, 0.0) for p in params]
    loss = sum(((y - 20.0) ** 2).sum() for y in values)
    logp_dlogp = pytensor.function(params, [loss, *pytensor.grad(loss, params)])
    forward_only = pytensor.function(params, values)

    def points(i):  # a new point every call, as in sampling
        return [base * (1 + 0.01 * k + 1e-6 * i) for k in range(n_subjects)]

    for _ in sys.stdin:
        logp_dlogp(*points(-1))  # after forward-only calls, the first one solves 2 K - 1 times
        before, n_calls = op.n_forward_solves, 20
        for i in range(n_calls):
            logp_dlogp(*points(i))
        solves = (op.n_forward_solves - before) / n_calls
        result = {"logp_dlogp": seconds_per_call(logp_dlogp, points), "forward_solves": solves,
                  "forward_only": seconds_per_call(forward_only, lambda i: points(i + 0.5))}
        has_size = hasattr(lib, "sl_pool_size")
        result["pool_size"] = int(lib.sl_pool_size(op._ptr)) if has_size else None
        print(json.dumps(result), flush=True)


def start(tree, args):
    env = dict(os.environ, PYTHONPATH=tree)
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker",
                             "--subjects", str(args.subjects), "--solver-backward",
                             args.solver_backward], cwd=tree, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--solver-backward", default="BDF", choices=["BDF", "ADAMS", "ERK"])
    parser.add_argument("--reference", help="a sunode_like checkout, built in place")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.subjects, args.solver_backward)
    trees = {"new": os.path.dirname(HERE)}
    if args.reference:
        trees["reference"] = os.path.abspath(args.reference)
    workers = {name: start(tree, args) for name, tree in trees.items()}
    results = {name: [] for name in trees}
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for _ in range(args.rounds):
        for name, w in workers.items():
            w.stdin.write("\n")
            w.stdin.flush()
            results[name].append(json.loads(w.stdout.readline()))
    for w in workers.values():
        w.stdin.close()
        w.wait()
    print(f"{args.subjects} subjects sharing one Op's props, solver_backward={args.solver_backward}, "
          f"{args.rounds} interleaved rounds (CPU times: minimum over rounds)")
    print(f"{'tree':10} {'logp+dlogp us':>14} {'forward solves':>15} {'forward-only us':>16} "
          f"{'pool size':>10}")
    for name, rounds in results.items():
        print(f"{name:10} {1e6 * min(r['logp_dlogp'] for r in rounds):14.1f} "
              f"{rounds[-1]['forward_solves']:15.1f} {1e6 * min(r['forward_only'] for r in rounds):16.1f} "
              f"{str(rounds[-1]['pool_size']):>10}")
    if "reference" in results:
        ratio = {key: min(r[key] for r in results["new"]) / min(r[key] for r in results["reference"])
                 for key in ("logp_dlogp", "forward_only")}
        print(f"new / reference: logp+dlogp {ratio['logp_dlogp']:.3f}, "
              f"forward-only {ratio['forward_only']:.3f}")


if __name__ == "__main__":
    main()
