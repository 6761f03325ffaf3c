"""The same solves against different builds of SUNDIALS: what the build costs per step.

Debian's libsundials (6.4.1 in Debian 12, 7.1.1 in Debian 13) is compiled without
optimisation: its debian/rules passes ``-DCMAKE_C_FLAGS=-fcommon``, which replaces the
``-g -O2 ...`` that dpkg exports in CFLAGS, and the build type is None, which adds no -O
flag, so gcc builds at -O0 (docs/installation.md). This script measures what that costs.

Lotka-Volterra as in ``gradients.py`` (rtol = atol = 1e-8, tvals = 0, 1, ..., 20), timed:
  - forward BDF (``Solver``, dense), forward ERK (``Solver(solver="ERK")``);
  - value + gradient by the adjoint, BDF forward and BDF backward (``AdjointSolver``).
Each build is a source tree whose extension was built in place against one SUNDIALS
(``SUNDIALS_DIR=<prefix> python3 setup.py build_ext --inplace``). ``--swap LABEL=LIBDIR``
runs this tree's extension with ``LD_LIBRARY_PATH=LIBDIR``: the same compiled extension
against another build of the same SUNDIALS version (same sonames), so only the library's
compilation differs. Every round starts one fresh process per build, builds in alternating
order; a process times a few batches of each method. Reported: the best batch over all
rounds (us per call), the median of the processes' best batches, and the ratio of the best
to the first build's best. Each process also reports the library it loaded (from
/proc/self/maps), its steps and its results, printed as the largest difference from the
first build's, so a timing is never of the wrong library or of a different solve.

Run (about 40 s for four builds), e.g. with a copy of the tracked files built against a
Release SUNDIALS 7.5 in /tmp/s75 and a Release SUNDIALS 6.4.1 installed in /tmp/sundials-6.4.1:
``python benchmarks/sundials_builds.py --build 7.5-release=/tmp/s75 --swap 6.4.1-release=/tmp/sundials-6.4.1/lib``
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
TREE = HERE.parent


def methods():
    """{name: run}, each run() solving once and returning its outputs as one flat array."""
    import numpy as np
    import sunode_like as sl
    from gradients import LV_PARAMS, LV_TVALS, LV_Y0, lotka_volterra

    problem = sl.SympyProblem(params={k: () for k in LV_PARAMS}, states={"hares": (), "lynx": ()},
                              rhs_sympy=lotka_volterra)
    w = np.random.default_rng(0).uniform(0.5, 1.5, (len(LV_TVALS), 2))  # as gradients.py

    def forward(solver):
        s = sl.Solver(problem, solver=solver, rtol=1e-8, atol=1e-8)
        s.set_params_dict(LV_PARAMS)
        y = s.make_output_buffers(LV_TVALS)

        def run():
            s.solve(0.0, LV_TVALS, LV_Y0, y)
            return y.ravel()
        run.solver = s
        return run

    a = sl.AdjointSolver(problem, rtol=1e-8, atol=1e-8)
    a.set_params_dict(LV_PARAMS)
    y, g, lam = a.make_output_buffers(LV_TVALS)

    def adjoint():
        a.solve_forward(0.0, LV_TVALS, LV_Y0, y)
        a.solve_backward(LV_TVALS[-1], 0.0, LV_TVALS, w, g, lam)
        return np.concatenate([y.ravel(), g, lam])
    adjoint.solver = a
    return {"forward BDF": forward("BDF"), "forward ERK": forward("ERK"), "v+g BDF/BDF": adjoint}


def loaded_cvodes():
    """The path of the libsundials_cvodes this process mapped."""
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "libsundials_cvodes" in line}
    return ", ".join(sorted(paths))


def worker(batch_s, batches):
    """Time `batches` batches of each method in this process; print one JSON line."""
    import sunode_like as sl
    from gradients import interleaved
    lib = sl._sundials.lib
    report = {"module": sl.__file__, "cvodes": loaded_cvodes(),
              "version": f"{lib.SUNDIALS_VERSION_MAJOR}.{lib.SUNDIALS_VERSION_MINOR}.{lib.SUNDIALS_VERSION_PATCH}"}
    runs = methods()
    times = interleaved(runs, batches, batch_s)
    for name, run in runs.items():
        stats = run.solver.stats()
        report[name] = {"us": times[name], "steps": stats["steps"],
                        "steps_backward": stats["steps_backward"], "out": run().tolist()}
    print(json.dumps(report))


def run_build(tree, libdir, batch_s, batches):
    env = dict(os.environ, PYTHONPATH=str(tree))
    if libdir:
        env["LD_LIBRARY_PATH"] = str(libdir)
    result = subprocess.run([sys.executable, __file__, "--worker", str(batch_s), str(batches)],
                            env=env, cwd=tree, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"error: the worker for {tree} (LD_LIBRARY_PATH={libdir}) failed:\n{result.stderr}")
    report = json.loads(result.stdout.splitlines()[-1])
    if not pathlib.Path(report["module"]).is_relative_to(tree):
        sys.exit(f"error: the worker for {tree} imported {report['module']}; build the extension "
                 f"in place there (python3 setup.py build_ext --inplace).")
    if libdir and not report["cvodes"].startswith(str(libdir)):
        sys.exit(f"error: LD_LIBRARY_PATH={libdir} did not take: the worker loaded {report['cvodes']} "
                 f"(the extension has a RUNPATH, or {libdir} has no libsundials_cvodes of that soname).")
    return report


def label_spec(text, option):
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        sys.exit(f"error: `{option} {text}` is not LABEL=PATH; got {text!r}, expected e.g. "
                 f"{option} 7.5-release=/tmp/s75.")
    path = pathlib.Path(path).resolve()
    if not path.is_dir():
        sys.exit(f"error: `{option} {text}`: {path} is not a folder.")
    return label, path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="append", default=[], metavar="LABEL=TREE",
                        help="a source tree with its extension built in place (repeatable)")
    parser.add_argument("--swap", action="append", default=[], metavar="LABEL=LIBDIR",
                        help="this tree's extension with LD_LIBRARY_PATH=LIBDIR (repeatable)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-s", type=float, default=0.2, help="seconds per batch")
    parser.add_argument("--batches", type=int, default=3, help="batches per method and process")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(float(args.worker[0]), int(args.worker[1]))

    builds = [("this tree", TREE, None)]
    builds += [(label, tree, None) for label, tree in (label_spec(b, "--build") for b in args.build)]
    builds += [(label, TREE, lib) for label, lib in (label_spec(s, "--swap") for s in args.swap)]
    start = time.perf_counter()
    reports = {label: [] for label, _, _ in builds}
    for k in range(args.rounds):
        for label, tree, libdir in builds if k % 2 == 0 else builds[::-1]:
            reports[label].append(run_build(tree, libdir, args.batch_s, args.batches))

    first = builds[0][0]
    names = [n for n in reports[first][0] if isinstance(reports[first][0][n], dict)]
    print(f"Lotka-Volterra, rtol = atol = 1e-8, 21 output times; {args.rounds} rounds, one process "
          f"per build and round, {args.batches} batches of {args.batch_s} s per method")
    for label, _, _ in builds:
        r = reports[label][0]
        print(f"  {label}: SUNDIALS {r['version']}, {r['cvodes']}")
    import numpy as np
    for name in names:
        print(f"\n{name:18s} {'best us':>8s} {'median':>8s} {'/ ' + first:>12s} {'steps':>6s} "
              f"{'bwd':>5s} {'max diff vs ' + first:>20s}")
        ref = reports[first][0][name]
        best_first = min(min(r[name]["us"]) for r in reports[first])
        for label, _, _ in builds:
            per_process = [min(r[name]["us"]) for r in reports[label]]
            r = reports[label][0][name]
            diff = np.max(np.abs(np.subtract(r["out"], ref["out"])) / (np.abs(ref["out"]) + 1e-8))
            print(f"  {label:16s} {min(per_process):8.1f} {np.median(per_process):8.1f} "
                  f"{min(per_process) / best_first:12.2f} {r['steps']:6d} {r['steps_backward']:5d} "
                  f"{diff:20.1e}")
    print(f"\nload average at end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
