"""Cold and warm build times of three models, where the time goes, and the run-time cost.

A *build* is what a user waits for after the imports: the SympyProblem, the Solver (sympy
derivatives, kernel source, numba compile; or loading them from the disk cache), the first
solve, then the AdjointSolver and its first gradient. Each build runs in a fresh process;
*cold* starts from an empty cache directory, *warm* reuses it.

Every model is built three times: by the current code generator ("new"), by it with
LLVM's optimisation off ("new-O0", NUMBA_OPT=0: what a lower optimisation level would
save and cost), and by the code generator of commit REFERENCE_COMMIT or ``--reference``
("reference", read with ``git show`` and installed the way benchmarks/gradients.py
installs its hand-written kernels); the solve and gradient times of the three sets of
kernels are then measured in one process, interleaved, so that they see the same machine
load.

Models: Fisher-KPP reaction-diffusion on 100 points (band Jacobian), the 93-state /
180-parameter multisite phosphorylation network (benchmarks/phosphorylation_network.py),
Lotka-Volterra.

    python benchmarks/build_time.py                 # all models, new and reference
    python benchmarks/build_time.py --models lv --no-reference   # new only, no run times
    python benchmarks/build_time.py --reference main              # against another commit
    python benchmarks/build_time.py --builds 5      # the fastest of 5 builds (a busy machine)
    python benchmarks/build_time.py --variants new,new-eager,new-gc --no-reference  # each change's share
"""
import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's sunode_like, whatever is installed
REFERENCE_COMMIT = "38fa43d"  # the code generator before issue 13 (sympy.cse, njit + carray)
MODELS = ("fisher_kpp", "network", "lv")


# -- the models ------------------------------------------------------------------------------
def fisher_kpp(n=100):
    """u' = D (u[i-1] - 2 u[i] + u[i+1]) / dx^2 + r u (1 - u) on [0, 1], mirrored ends."""
    import numpy as np
    import sunode_like as sl

    def rhs(t, y, p):
        u, dx = y.u, 1.0 / (n - 1)
        left = [u[1]] + [u[i - 1] for i in range(1, n)]
        right = [u[i + 1] for i in range(n - 1)] + [u[n - 2]]
        return {"u": np.array([p.D * (left[i] - 2 * u[i] + right[i]) / dx**2 + p.r * u[i] * (1 - u[i])
                               for i in range(n)])}

    problem = sl.SympyProblem(params={"D": (), "r": ()}, states={"u": (n,)}, rhs_sympy=rhs)
    x = np.linspace(0.0, 1.0, n)
    return problem, {"D": 1e-3, "r": 2.0}, np.exp(-50 * x**2), np.linspace(0.0, 5.0, 11), "band"


def network():
    import numpy as np
    sys.path.insert(0, str(HERE))
    from phosphorylation_network import phosphorylation_problem, phosphorylation_values

    params, y0 = phosphorylation_values()
    return phosphorylation_problem(), params, y0, np.linspace(0.0, 10.0, 11), "dense"


def lv():
    import numpy as np
    import sunode_like as sl

    problem = sl.SympyProblem(
        params={"alpha": (), "beta": (), "gamma": (), "delta": ()}, states={"hares": (), "lynx": ()},
        rhs_sympy=lambda t, y, p: {"hares": p.alpha * y.hares - p.beta * y.hares * y.lynx,
                                   "lynx": p.delta * y.hares * y.lynx - p.gamma * y.lynx})
    params = {"alpha": 0.52, "beta": 0.026, "gamma": 0.84, "delta": 0.026}
    return problem, params, np.array([34.0, 5.9]), np.linspace(0.0, 20.0, 21), "dense"


# -- one build in this process ---------------------------------------------------------------
REFERENCE_MODULES = ("_symbolic", "_lowering", "_kernel_cache", "_codegen")  # dependencies first


def write_reference(workdir, commit):
    """The code generator of ``commit`` (those of REFERENCE_MODULES it has, from git) into
    ``workdir`` as ``reference_<module>.py``, importing each other under those names."""
    for name in REFERENCE_MODULES:
        out = subprocess.run(["git", "-C", str(HERE), "show", f"{commit}:sunode_like/{name}.py"],
                             capture_output=True, text=True)
        if out.returncode == 0:
            source = re.sub(r"^from \. import (.+)$", lambda m: "import " + ", ".join(
                f"reference{module} as {module}" for module in m.group(1).split(", ")), out.stdout, flags=re.M)
            (pathlib.Path(workdir) / f"reference{name}.py").write_text(source)


def reference_codegen(workdir):
    """The reference `_codegen` module (written by `write_reference`), importable as
    ``reference_codegen`` as the modules it generates expect."""
    import importlib.util

    for name in REFERENCE_MODULES:
        path = pathlib.Path(workdir) / f"reference{name}.py"
        if path.exists():
            spec = importlib.util.spec_from_file_location(f"reference{name}", path)
            module = sys.modules[f"reference{name}"] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
    return module


def install_reference(problem, codegen):
    """Generate the model's module with the reference code generator and put it where
    `compile_model` looks for it. Returns the seconds the reference generator took."""
    from sunode_like import _codegen, _kernel_cache

    start = time.perf_counter()
    text = codegen._module_source(problem)
    seconds = time.perf_counter() - start
    text = text.replace("from sunode_like._codegen import", "from reference_codegen import")
    key = f"model_{problem.content_hash}_v{_codegen.FORMAT_VERSION}"
    (_kernel_cache.cache_dir() / f"{key}.py").write_text(_kernel_cache.with_checksum(text))
    return seconds


def _outer_spans(buffer):
    """Total seconds of the outermost start/end pairs of numba events."""
    total, depth = 0.0, 0
    for timestamp, ev in buffer:
        if ev.is_start:
            if depth == 0:
                start = timestamp
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                total += timestamp - start
    return total


def child(model, variant, workdir):
    start = time.perf_counter()
    import numpy as np
    from numba.core import event

    import sunode_like as sl
    from sunode_like import _codegen
    imported = time.perf_counter()
    times = {"import": imported - start}
    undo_change(variant, _codegen)
    cpu = time.process_time()
    with event.install_recorder("numba:llvm_lock") as llvm:
        problem, params, y0, tvals, linear_solver = globals()[model]()
        times["problem"] = time.perf_counter() - imported
        key = "model_" + problem.content_hash
        cached = (_codegen._kernel_cache.cache_dir() / f"{key}_v{_codegen.FORMAT_VERSION}.py").exists()
        if variant == "reference":
            codegen = reference_codegen(workdir)
            if not cached:
                times["reference source"] = install_reference(problem, codegen)
        t = time.perf_counter()
        solver = sl.Solver(problem, linear_solver=linear_solver, rtol=1e-8, atol=1e-8)
        solver.set_params_dict(params)
        y_out = solver.make_output_buffers(tvals)
        solver.solve(tvals[0], tvals, y0, y_out)
        times["solver + first solve"] = time.perf_counter() - t
        times["build cpu"] = time.process_time() - cpu  # less sensitive to a busy machine
        stages = dict(_codegen.build_stages.get(key, {}))
        t = time.perf_counter()
        adj = sl.AdjointSolver(problem, linear_solver=linear_solver, rtol=1e-8, atol=1e-8)
        adj.set_params_dict(params)
        ya, grad, lam = adj.make_output_buffers(tvals)
        grads = np.ones_like(ya)
        adj.solve_forward(tvals[0], tvals, y0, ya)
        adj.solve_backward(tvals[-1], tvals[0], tvals, grads, grad, lam)
        times["adjoint + first gradient"] = time.perf_counter() - t
    times["llvm"] = _outer_spans(llvm.buffer)
    print(json.dumps({"times": times, "stages": stages, "y_last": y_out[-1].tolist(), "grad": grad.tolist()}))


def startup_child():
    """Seconds of numba's one-time start-up in a fresh process after the imports (what its
    first compile or cache load does first: loading its typing and lowering registries,
    whose linalg support imports scipy.linalg), split into that import and the rest."""
    import sunode_like  # noqa: F401  (the imports a build starts from)
    from numba.core.registry import cpu_target

    start, cpu = time.perf_counter(), time.process_time()
    import scipy.linalg  # noqa: F401
    scipy_linalg = time.perf_counter() - start
    cpu_target.target_context.refresh()
    print(json.dumps({"scipy.linalg": scipy_linalg, "total": time.perf_counter() - start,
                      "cpu": time.process_time() - cpu}))


def runtime_child(model, workdir, repeats, *caches):
    """Solve and gradient times of each variant's kernels (``caches``: "variant=cache dir")
    in one process, interleaved so that all see the same machine load; prints the minima."""
    import numpy as np
    import sunode_like as sl
    from sunode_like import _codegen

    problem, params, y0, tvals, linear_solver = globals()[model]()
    calls = {}
    for variant, cache in (entry.split("=", 1) for entry in caches):
        os.environ["SUNODE_LIKE_CACHE_DIR"] = cache
        _codegen._loaded.clear()  # the same model hash: load this variant's module
        if variant == "reference":
            reference_codegen(workdir)
        solver = sl.Solver(problem, linear_solver=linear_solver, rtol=1e-8, atol=1e-8)
        adj = sl.AdjointSolver(problem, linear_solver=linear_solver, rtol=1e-8, atol=1e-8)
        solver.set_params_dict(params)
        adj.set_params_dict(params)
        y_out = solver.make_output_buffers(tvals)
        ya, grad, lam = adj.make_output_buffers(tvals)
        grads = np.ones_like(ya)

        def solve(solver=solver, y_out=y_out):
            solver.solve(tvals[0], tvals, y0, y_out)

        def gradient(adj=adj, ya=ya, grad=grad, lam=lam, grads=grads):
            adj.solve_forward(tvals[0], tvals, y0, ya)
            adj.solve_backward(tvals[-1], tvals[0], tvals, grads, grad, lam)

        calls[variant] = {"solve": solve, "gradient": gradient}
    best = {f"{variant} {what}": np.inf for variant in calls for what in ("solve", "gradient")}
    variants = list(calls)
    for round_ in range(repeats):
        for what in ("solve", "gradient"):
            # Who goes first changes every round: the second runs on warmer caches.
            for variant in variants[round_ % len(variants):] + variants[:round_ % len(variants)]:
                t = time.perf_counter()
                calls[variant][what]()
                best[f"{variant} {what}"] = min(best[f"{variant} {what}"], time.perf_counter() - t)
    print(json.dumps(best))


# -- the driver ------------------------------------------------------------------------------
VARIANT_ENV = {"new": {}, "new-O0": {"NUMBA_OPT": "0"}, "reference": {}, "new-eager": {}, "new-gc": {}}


def undo_change(variant, codegen):
    """What one change of the build saves (``--variants new,new-eager,new-gc``): "new-eager"
    compiles df/dp with the forward Solver, as before kernels were compiled on first use;
    "new-gc" leaves the garbage collector running during builds."""
    import contextlib

    if variant == "new-eager":
        codegen.compile_model.__defaults__ = (("rhs", "jac", "dfdp"),)
    elif variant == "new-gc":
        codegen._gc_paused = contextlib.nullcontext


def run(cache, *args, env=None):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"} | (env or {})
    env["SUNODE_LIKE_CACHE_DIR"] = str(cache)
    out = subprocess.run([sys.executable, __file__, *map(str, args)], env=env, capture_output=True,
                         text=True, timeout=3600)
    if out.returncode:
        raise RuntimeError(f"{args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_seconds(result):
    """(problem + solver + first solve, adjoint solver + first gradient) in seconds."""
    t = result["times"]
    return t["problem"] + t["solver + first solve"], t["adjoint + first gradient"]


def report(model, variants, tmp, repeats, builds):
    results = {}
    for variant in variants:
        # The fastest of ``builds`` cold and warm builds (each cold one in a new cache dir):
        # on a shared machine the others waited for other processes.
        colds, warms = [], []
        for number in range(builds):
            cache = tmp / f"cache-{variant}" if number == builds - 1 else tmp / f"cache-{variant}-{number}"
            colds.append(run(cache, "--child", model, variant, tmp, env=VARIANT_ENV[variant]))
            warms.append(run(cache, "--child", model, variant, tmp, env=VARIANT_ENV[variant]))
        cold = min(colds, key=lambda result: build_seconds(result)[0])
        warm = min(warms, key=lambda result: build_seconds(result)[0])
        results[variant] = cold
        (build, adjoint), (warm_build, warm_adjoint) = build_seconds(cold), build_seconds(warm)
        print(f"{model:10s} {variant:9s}  cold build {build:6.2f} s (CPU {cold['times']['build cpu']:5.2f} s, "
              f"+adjoint {adjoint:4.2f} s)   "
              f"warm build {warm_build:5.2f} s (+adjoint {warm_adjoint:4.2f} s)   "
              f"import {cold['times']['import']:.2f} s")
        stages = dict(cold["stages"])
        if "reference source" in cold["times"]:
            stages = {"reference source (sympy)": cold["times"]["reference source"]}
        stages["problem (user's sympy)"] = cold["times"]["problem"]
        stages["of which LLVM"] = cold["times"]["llvm"]
        print("    cold stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()))
    if "reference" in results:
        ref = results["reference"]
        t = run(tmp / "cache-new", "--runtime", model, tmp, repeats,
                *(f"{variant}={tmp / f'cache-{variant}'}" for variant in results))
        print(f"    run time (minima of {repeats}, interleaved in one process): " + ", ".join(
            f"{variant} solve {t[variant + ' solve'] * 1e3:.3f} ms, gradient {t[variant + ' gradient'] * 1e3:.3f} ms"
            for variant in results))
        for variant, result in results.items():
            if variant == "reference":
                continue
            same = max(abs(a - b) / max(abs(b), 1e-300)
                       for a, b in zip(result["y_last"] + result["grad"], ref["y_last"] + ref["grad"]))
            print(f"    {variant} / reference: cold build {build_seconds(result)[0] / build_seconds(ref)[0]:.3f}, "
                  f"solve {t[variant + ' solve'] / t['reference solve']:.2f}, "
                  f"gradient {t[variant + ' gradient'] / t['reference gradient']:.2f}; "
                  f"max relative difference of y(T) and the gradient {same:.1e}")
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--reference", default=REFERENCE_COMMIT,
                        help="the commit whose code generator the reference kernels come from")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per variant (the minimum is kept)")
    parser.add_argument("--variants", help=f"comma-separated, of {', '.join(VARIANT_ENV)}")
    parser.add_argument("--builds", type=int, default=1, help="cold and warm builds per variant (the fastest is shown)")
    args = parser.parse_args()
    variants = args.variants.split(",") if args.variants else ["new"] + ([] if args.no_reference else ["new-O0", "reference"])
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; reference = commit {args.reference}")
    print("build = SympyProblem + Solver + first solve (after the imports, fresh process); "
          "+adjoint = AdjointSolver + first gradient after that")
    startup = [run(tempfile.gettempdir(), "--startup") for _ in range(3)]
    best = min(startup, key=lambda r: r["total"])
    print(f"numba's start-up in a fresh process (part of every build's first compile or cache load; best of 3): "
          f"{best['total']:.2f} s (CPU {best['cpu']:.2f} s), of which importing scipy.linalg "
          f"{best['scipy.linalg']:.2f} s\n")
    for model in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            write_reference(tmp, args.reference)
            report(model, variants, pathlib.Path(tmp), args.repeats, args.builds)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:5])
    elif sys.argv[1:2] == ["--startup"]:
        startup_child()
    elif sys.argv[1:2] == ["--runtime"]:
        runtime_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), *sys.argv[5:])
    else:
        main()
