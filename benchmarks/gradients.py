"""Gradient benchmark: adjoint vs forward sensitivities vs finite differences.

Part 1, Lotka-Volterra (the problem of ``forward.py``: BDF dense, rtol=atol=1e-8, t=0..20):
value + gradient of L = sum_{i,j} w[i, j] y_j(t_i) (w fixed random weights) with respect
to the 4 params and the 2 initial states, by
  - adjoint: ``AdjointSolver.solve_forward`` + ``solve_backward``, with the default (BDF,
    CVODES) backward problem, ``solver_backward="ADAMS"``, ``solver_backward="ERK"``
    (ARKODE explicit Runge-Kutta over the recorded forward steps) and
    ``solver_backward="DIRK"`` (ARKODE implicit ESDIRK over the same record),
  - forward sensitivities: ``Solver(sens_mode="simultaneous" | "staggered")`` (6 sensitivities),
  - central finite differences: 1 + 2 * (4 + 2) forward solves,
each relative to one plain forward solve (``Solver.solve``) timed in the same rounds.

Part 1b, Robertson (stiff, 3 states, outputs at 1e-2 .. 1e3): value + gradient with the BDF
and the DIRK backward problem against a forward solve at rtol = 1e-8 and 1e-12, with the
gradients' errors against forward sensitivities at rtol = 1e-13 and the step counts.

Part 2, size sweep: 1-D reaction-diffusion on n cells with zero-flux ends,
    u_i' = D (u_{i-1} - 2 u_i + u_{i+1}) + r u_i (1 - u_i) + s_{b(i)},
b(i) = i * nb // n the block of cell i, nb = round(sqrt(n)) source params (so 2 + nb params),
t = 0..10 (21 outputs), rtol=atol=1e-8, sparse (KLU) and band linear solvers. Forward
sensitivities are only for the params (``sens_y0=False``) and skipped when
n_sens * n > ``--max-sens-size``. The adjoint is also run with ``solver_backward="ERK"``
(at most 5000 backward steps; reported as failing if the adjoint is too stiff for it).

The generated (sympy -> numba) kernels of this model are straight-line code whose numba
compile time grows faster than quadratically with n (about 2.5 s at n=10, 15 s at n=100,
minutes at n=200, hours at n=1000). So the sweep is run twice, each in its own process:
  - "generated": the library end to end, n = 10, 100;
  - "loop": the same model with hand-written loop kernels (equal values and sparsity
    pattern, checked against sympy for n <= 100), placed in a private cache directory under
    the name the library looks up, n = 10, 100, 1000. This measures the solvers' scaling,
    not the code generator.

Timing: methods are interleaved round by round (the machine is shared and noisy); times are
medians over rounds of per-call means of a batch, ratios the median over rounds of the
per-round ratio. Run: ``python benchmarks/gradients.py`` (about 2 minutes once the kernels
are cached; ``--quick`` for a smoke run).
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

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's sunode_like, whatever is installed
import sunode_like as sl  # noqa: E402
from sunode_like.examples import test_set  # noqa: E402

START = time.perf_counter()
LOOP_CACHE = HERE / ".build" / "loop_kernels"


# -- timing ---------------------------------------------------------------------------------
def interleaved(methods, rounds, batch_s, budget_s=None):
    """Per-call microseconds of each method, one batch per round, methods interleaved.

    Each method's batch size is chosen so a batch takes about ``batch_s`` seconds (one call
    if a call is slower); with ``budget_s`` the rounds are cut so that the timing takes
    about that long (at least 3 rounds). Returns {name: [us per call in round k]}.
    """
    sizes, per_round = {}, 0.0
    for name, fn in methods.items():
        start = time.perf_counter()
        fn()  # warm-up
        elapsed = time.perf_counter() - start
        if elapsed < batch_s:
            start = time.perf_counter()
            fn()
            elapsed = max(time.perf_counter() - start, 1e-7)
        sizes[name] = max(1, int(batch_s / elapsed))
        per_round += sizes[name] * elapsed
    if budget_s is not None:
        rounds = max(3, min(rounds, int(budget_s / per_round)))
    times = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            start = time.perf_counter()
            for _ in range(sizes[name]):
                fn()
            times[name].append((time.perf_counter() - start) / sizes[name] * 1e6)
    return times


def ratio(times, name, reference):
    return statistics.median(a / b for a, b in zip(times[name], times[reference]))


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# -- part 1: Lotka-Volterra -----------------------------------------------------------------
LV_PARAMS = {"alpha": 0.52, "beta": 0.026, "gamma": 0.84, "delta": 0.026}
LV_Y0 = np.array([34.0, 5.9])
LV_TVALS = np.arange(21.0)
LV_OPTIONS = dict(solver="BDF", linear_solver="dense", rtol=1e-8, atol=1e-8)


def lotka_volterra(t, y, p):
    return {"hares": p.alpha * y.hares - p.beta * y.hares * y.lynx,
            "lynx": p.delta * y.hares * y.lynx - p.gamma * y.lynx}


def lv_part(rounds, batch_s):
    problem = sl.SympyProblem(params={k: () for k in LV_PARAMS},
                              states={"hares": (), "lynx": ()}, rhs_sympy=lotka_volterra)
    t0, tv, y0 = 0.0, LV_TVALS, LV_Y0
    w = np.random.default_rng(0).uniform(0.5, 1.5, (len(tv), 2))
    p0 = problem.params.flatten(LV_PARAMS)

    solver = sl.Solver(problem, **LV_OPTIONS)
    solver.set_params(p0)
    y = solver.make_output_buffers(tv)

    def forward():
        solver.solve(t0, tv, y0, y)
        return float(np.sum(w * y))

    adj = sl.AdjointSolver(problem, **LV_OPTIONS)
    adj.set_params(p0)
    ya, g, lam = adj.make_output_buffers(tv)

    def adjoint_forward_only():
        adj.solve_forward(t0, tv, y0, ya)

    def adjoint():
        adj.solve_forward(t0, tv, y0, ya)
        adj.solve_backward(tv[-1], t0, tv, w, g, lam)
        return float(np.sum(w * ya)), np.concatenate([g, -lam])

    def adjoint_with(solver_backward):
        # Same forward solve; the backward problem (non-stiff here) with another method.
        a = sl.AdjointSolver(problem, solver_backward=solver_backward, **LV_OPTIONS)
        a.set_params(p0)
        ya_, g_, lam_ = a.make_output_buffers(tv)

        def run():
            a.solve_forward(t0, tv, y0, ya_)
            a.solve_backward(tv[-1], t0, tv, w, g_, lam_)
            return float(np.sum(w * ya_)), np.concatenate([g_, -lam_])
        run.solver = a
        return run

    def sens_method(mode, errcon=True):
        s = sl.Solver(problem, sens_mode=mode, sens_errcon=errcon, **LV_OPTIONS)
        s.set_params(p0)
        ys, sens = s.make_output_buffers(tv)

        def run():
            s.solve(t0, tv, y0, ys, sens)
            return float(np.sum(w * ys)), np.einsum("tkj,tj->k", sens, w)
        run.solver = s
        return run

    # The same with only two output times (0 and 20): no adjoint restarts in between.
    tv2, w2, y2, ya2 = tv[[0, -1]], w[[0, -1]], np.zeros((2, 2)), np.zeros((2, 2))

    def forward_2():
        solver.solve(t0, tv2, y0, y2)

    def adjoint_2():
        adj.solve_forward(t0, tv2, y0, ya2)
        adj.solve_backward(tv2[-1], t0, tv2, w2, g, lam)

    def fd():
        # Central differences in the 4 params and 2 initial states, relative step 1e-4.
        value, grad = forward(), np.empty(6)
        x0 = np.concatenate([p0, y0])
        for k in range(6):
            h = 1e-4 * abs(x0[k])
            ls = []
            for sign in (1, -1):
                x = x0.copy()
                x[k] += sign * h
                solver.set_params(x[:4])
                solver.solve(t0, tv, x[4:], y)
                ls.append(np.sum(w * y))
            grad[k] = (ls[0] - ls[1]) / (2 * h)
        solver.set_params(p0)
        return value, grad

    methods = {
        "forward solve": forward,
        "adjoint: solve_forward only": adjoint_forward_only,
        "adjoint: value + gradient": adjoint,
        "adjoint, backward ADAMS": adjoint_with("ADAMS"),
        "adjoint, backward ERK": adjoint_with("ERK"),
        "adjoint, backward DIRK": adjoint_with("DIRK"),
        "forward sens, simultaneous": sens_method("simultaneous"),
        "forward sens, staggered": sens_method("staggered"),
        "fwd sens, simult., no errcon": sens_method("simultaneous", errcon=False),
        "central FD (13 solves)": fd,
        "forward solve, tvals=[0, 20]": forward_2,
        "adjoint v+g, tvals=[0, 20]": adjoint_2,
    }
    # Reference gradient: forward sensitivities at rtol=atol=1e-12.
    exact = sl.Solver(problem, sens_mode="simultaneous", solver="BDF", rtol=1e-12, atol=1e-12)
    exact.set_params(p0)
    ye, se = exact.make_output_buffers(tv)
    exact.solve(t0, tv, y0, ye, se)
    value, reference = float(np.sum(w * ye)), np.einsum("tkj,tj->k", se, w)
    errors = {}
    for name in ("adjoint: value + gradient", "adjoint, backward ADAMS", "adjoint, backward ERK",
                 "adjoint, backward DIRK", "forward sens, simultaneous", "forward sens, staggered",
                 "fwd sens, simult., no errcon", "central FD (13 solves)"):
        v, grad = methods[name]()
        errors[name] = rel_err(grad, reference)
        if abs(v - value) > 1e-6 * abs(value) or errors[name] > 1e-4:
            raise RuntimeError(f"{name}: gradient {grad} differs from the reference {reference}")

    times = interleaved(methods, rounds, batch_s)
    ref = "forward solve"
    print("Part 1: Lotka-Volterra, value + gradient of L = sum(w * y) w.r.t. 4 params + 2 y0; "
          "BDF dense, rtol=atol=1e-8, 21 outputs")
    print(f"{rounds} interleaved rounds, batches of ~{batch_s:.2f} s per method")
    print(f"{'method':<30}{'median us':>11}{'min us':>10}{'x forward':>11}{'grad rel err':>14}")
    two = "forward solve, tvals=[0, 20]"
    for name in list(methods)[:-2]:  # the 2-output methods (last) are compared with each other below
        err = f"{errors[name]:.1e}" if name in errors else ""
        print(f"{name:<30}{statistics.median(times[name]):>11.1f}{min(times[name]):>10.1f}"
              f"{ratio(times, name, ref):>11.2f}{err:>14}")
    backward = [a - f for a, f in zip(times["adjoint: value + gradient"], times["adjoint: solve_forward only"])]
    print(f"{'  (of which BDF backward)':<30}{statistics.median(backward):>11.1f}{'':>10}"
          f"{statistics.median(b / f for b, f in zip(backward, times[ref])):>11.2f}")
    print("grad rel err: max |grad - reference| / max |reference|, reference: forward "
          "sensitivities at rtol=atol=1e-12")
    for name in (two, "adjoint v+g, tvals=[0, 20]"):
        print(f"{name:<30}{statistics.median(times[name]):>11.1f}{min(times[name]):>10.1f}"
              f"{ratio(times, name, two):>11.2f}   (x the 2-output forward solve)")
    adjoint_2()
    steps = {"adjoint backward, 2 outputs": adj.stats()["steps_backward"]}
    for fn in (forward, adjoint):  # stats are those of the last solve
        fn()
    steps |= {"forward": solver.stats()["steps"], "adjoint backward": adj.stats()["steps_backward"]}
    for name, label in (("adjoint, backward ADAMS", "adjoint backward ADAMS"),
                        ("adjoint, backward ERK", "adjoint backward ERK"),
                        ("adjoint, backward DIRK", "adjoint backward DIRK")):
        methods[name]()
        steps[label] = methods[name].solver.stats()["steps_backward"]
    for name, label in (("forward sens, simultaneous", "sens simultaneous"),
                        ("forward sens, staggered", "sens staggered"),
                        ("fwd sens, simult., no errcon", "sens no errcon")):
        steps[label] = methods[name].solver.stats()["steps"]
    print("steps (CVODES; ERK, DIRK: ARKODE): " + ", ".join(f"{k} {v}" for k, v in steps.items()))
    configs = {"default BDF backward": "adjoint: value + gradient",
               'solver_backward="ADAMS"': "adjoint, backward ADAMS",
               'solver_backward="ERK"': "adjoint, backward ERK",
               'solver_backward="DIRK"': "adjoint, backward DIRK"}
    ratios = {label: ratio(times, name, ref) for label, name in configs.items()}
    best = min(ratios, key=ratios.get)
    print(f"target: adjoint value+gradient <= 4x forward -> {'met' if ratios[best] <= 4 else 'NOT met'} "
          f"with {best} ({ratios[best]:.2f}x); default BDF backward {ratios['default BDF backward']:.2f}x")


# -- part 1b: Robertson (stiff) -----------------------------------------------------------
def robertson_part(rounds, batch_s):
    """Value + gradient with the BDF and the DIRK backward problem on Robertson, against a
    forward solve, at two tolerances (the backward ones are the forward ones)."""
    problem, p0, y0 = test_set.rober()[:3]
    t0, tv = 0.0, np.logspace(-2, 3, 6)
    exact = sl.Solver(problem, sens_mode="simultaneous", rtol=1e-13,
                      atol=np.array([1e-15, 1e-19, 1e-15]))
    exact.set_params(p0)
    ye, se = exact.make_output_buffers(tv)
    exact.solve(t0, tv, y0, ye, se)
    w = np.random.default_rng(0).uniform(0.5, 1.5, (len(tv), 3)) / np.abs(ye).max(axis=0)
    reference = np.einsum("tkj,tj->k", se, w)
    print("\nPart 1b: Robertson (stiff), value + gradient of L = sum(w * y) w.r.t. 3 rate "
          "constants + 3 y0; BDF dense, outputs 1e-2 .. 1e3")
    print(f"{'rtol':>8}{'method':>22}{'median us':>11}{'x forward':>11}{'grad rel err':>14}"
          f"{'steps fwd/bwd':>15}")
    for rtol, atol in ((1e-8, [1e-10, 1e-14, 1e-10]), (1e-12, [1e-14, 1e-18, 1e-14])):
        options = dict(rtol=rtol, atol=np.array(atol))
        solver = sl.Solver(problem, **options)
        solver.set_params(p0)
        y = solver.make_output_buffers(tv)
        methods = {"forward solve": lambda: solver.solve(t0, tv, y0, y)}
        adjoints = {}
        for backward in ("BDF", "DIRK"):
            adj = adjoints[backward] = sl.AdjointSolver(problem, solver_backward=backward, **options)
            adj.set_params(p0)
            buffers = adj.make_output_buffers(tv)

            def run(adj=adj, buffers=buffers):
                ya, g, lam = buffers
                adj.solve_forward(t0, tv, y0, ya)
                adj.solve_backward(tv[-1], t0, tv, w, g, lam)
                return np.concatenate([g, -lam])
            methods[f"adjoint, backward {backward}"] = run
        times = interleaved(methods, rounds, batch_s)
        methods["forward solve"]()
        steps_forward = solver.stats()["steps"]
        print(f"{rtol:>8.0e}{'forward solve':>22}{statistics.median(times['forward solve']):>11.1f}"
              f"{1.0:>11.2f}{'':>14}{steps_forward:>15}")
        for backward, adj in adjoints.items():
            name = f"adjoint, backward {backward}"
            err = rel_err(methods[name]()[:3], reference[:3])
            stats = adj.stats()
            print(f"{'':>8}{name:>22}{statistics.median(times[name]):>11.1f}"
                  f"{ratio(times, name, 'forward solve'):>11.2f}{err:>14.1e}"
                  f"{str(stats['steps']) + '/' + str(stats['steps_backward']):>15}")
    print("grad rel err: of dL/dk against forward sensitivities at rtol=1e-13; steps: CVODES "
          "forward steps, backward steps (CVODES BDF summed over intervals, ARKODE DIRK)")


# -- part 2: reaction-diffusion sweep -------------------------------------------------------
RD_D, RD_R, RD_S = 5.0, 1.0, 0.01
RD_TVALS = np.linspace(0.0, 10.0, 21)


def rd_problem(n):
    nb = int(round(np.sqrt(n)))
    block = [i * nb // n for i in range(n)]

    def rhs(t, y, p):
        u = y.u
        out = []
        for i in range(n):
            left = u[i - 1] if i > 0 else u[i]
            right = u[i + 1] if i < n - 1 else u[i]
            out.append(p.D * (left - 2 * u[i] + right) + p.r * u[i] * (1 - u[i]) + p.s[block[i]])
        return {"u": out}

    problem = sl.SympyProblem(params={"D": (), "r": (), "s": (nb,)}, states={"u": (n,)},
                              rhs_sympy=rhs)
    return problem, np.array(block)


def rd_patterns(n, block):
    """CSC patterns (as the library's code generator builds them) of df/du and df/dp."""
    nb = int(block.max()) + 1
    jac_rows = [[i for i in (j - 1, j, j + 1) if 0 <= i < n] for j in range(n)]
    dfdp_rows = [list(range(n)), list(range(n))] + [list(np.flatnonzero(block == b)) for b in range(nb)]

    def csc(cols):
        colptr = np.cumsum([0] + [len(c) for c in cols]).astype(np.int64)
        return colptr, np.array([i for c in cols for i in c], dtype=np.int64)

    jac_colptr, jac_r = csc(jac_rows)
    cols = np.repeat(np.arange(n), np.diff(jac_colptr))
    perm = np.lexsort((cols, jac_r)).astype(np.int64)
    jact_colptr = np.cumsum(np.concatenate([[0], np.bincount(jac_r, minlength=n)])).astype(np.int64)
    dfdp_colptr, dfdp_r = csc(dfdp_rows)
    return {"JAC_COLPTR": jac_colptr, "JAC_ROWS": jac_r, "JACT_COLPTR": jact_colptr,
            "JACT_ROWS": cols[perm].astype(np.int64), "JACT_PERM": perm,
            "DFDP_COLPTR": dfdp_colptr, "DFDP_ROWS": dfdp_r, "BLOCK": block.astype(np.int64)}


LOOP_KERNELS = '''
@numba.njit(cache=True)
def _status(out):
    for v in out:
        if not math.isfinite(v):
            return 1
    return 0


@numba.njit(cache=True, error_model="numpy")
def rhs(t, y, p, out):
    n = y.shape[0]
    for i in range(n):
        left = y[i - 1] if i > 0 else y[i]
        right = y[i + 1] if i < n - 1 else y[i]
        out[i] = p[0] * (left - 2.0 * y[i] + right) + p[1] * y[i] * (1.0 - y[i]) + p[2 + BLOCK[i]]
    return _status(out)


@numba.njit(cache=True, error_model="numpy")
def jac(t, y, p, out):
    n = y.shape[0]
    for j in range(n):
        for k in range(JAC_COLPTR[j], JAC_COLPTR[j + 1]):
            i = JAC_ROWS[k]
            if i != j:
                out[k] = p[0]
            else:
                out[k] = p[0] * (-1.0 if (i == 0 or i == n - 1) else -2.0) + p[1] * (1.0 - 2.0 * y[i])
    return _status(out)


@numba.njit(cache=True, error_model="numpy")
def dfdp(t, y, p, out):
    n = y.shape[0]
    for k in range(DFDP_COLPTR[0], DFDP_COLPTR[1]):
        i = DFDP_ROWS[k]
        left = y[i - 1] if i > 0 else y[i]
        right = y[i + 1] if i < n - 1 else y[i]
        out[k] = left - 2.0 * y[i] + right
    for k in range(DFDP_COLPTR[1], DFDP_COLPTR[2]):
        i = DFDP_ROWS[k]
        out[k] = y[i] * (1.0 - y[i])
    for k in range(DFDP_COLPTR[2], len(out)):
        out[k] = 1.0
    return _status(out)
'''

LOOP_CFUNC = '''

@numba.cfunc(KERNEL_SIGNATURE, cache=True)
def {name}_cfunc(t, y, p, out):
    return {name}(t, numba.carray(y, (N_STATES,)), numba.carray(p, (N_PARAMS,)),
                  numba.carray(out, ({n_out},)))
'''


def install_loop_kernels(problem, block):
    """Write the hand-written kernel module for this problem into LOOP_CACHE under the
    file name the library's `compile_model` looks for, and point SUNODE_LIKE_CACHE_DIR there."""
    from sunode_like import _codegen, _kernel_cache

    n = problem.n_states
    arrays = rd_patterns(n, block)
    source = ["# Hand-written loop kernels for benchmarks/gradients.py (reaction-diffusion).",
              "import math", "import numba", "import numpy as np",
              "from sunode_like._codegen import KERNEL_SIGNATURE", "",
              f"N_STATES = {n}", f"N_PARAMS = {problem.n_params}",
              "UPPER_BANDWIDTH = 1", "LOWER_BANDWIDTH = 1"]
    source += [f"{k} = np.array({v.tolist()!r}, dtype=np.int64)" for k, v in arrays.items()]
    source.append(LOOP_KERNELS)
    for name, n_out in (("rhs", n), ("jac", len(arrays["JAC_ROWS"])), ("dfdp", len(arrays["DFDP_ROWS"]))):
        source.append(LOOP_CFUNC.format(name=name, n_out=n_out))
    text = _kernel_cache.with_checksum("\n".join(source))
    LOOP_CACHE.mkdir(parents=True, exist_ok=True)
    path = LOOP_CACHE / f"model_{problem.content_hash}_v{_codegen.FORMAT_VERSION}.py"
    if not path.exists() or path.read_text() != text:  # rewriting would void numba's cache
        path.write_text(text)
    os.environ["SUNODE_LIKE_CACHE_DIR"] = str(LOOP_CACHE)
    return arrays


def check_loop_kernels(problem, arrays, model):
    """The loop kernels equal the sympy model: same patterns, same values at a random point."""
    import sympy
    from sunode_like import _symbolic

    rng = np.random.default_rng(1)
    y, p = rng.uniform(0.1, 1.0, problem.n_states), rng.uniform(0.5, 2.0, problem.n_params)
    syms = problem.state_symbols + problem.param_symbols
    jac = _symbolic.sparse_jacobian(problem.rhs_exprs, problem.state_symbols)
    dfdp = _symbolic.sparse_jacobian(problem.rhs_exprs, [problem.param_symbols[i] for i in problem.derivative_indices])
    jact = jac.transpose_pattern()
    expected = {"JAC_COLPTR": jac.colptr, "JAC_ROWS": jac.rows, "JACT_COLPTR": jact[0],
                "JACT_ROWS": jact[1], "JACT_PERM": jact[2], "DFDP_COLPTR": dfdp.colptr,
                "DFDP_ROWS": dfdp.rows}
    for key, value in expected.items():
        if not np.array_equal(arrays[key], value):
            raise RuntimeError(f"loop kernels: pattern {key} differs from the sympy model")
    for name, exprs in (("rhs", problem.rhs_exprs), ("jac", jac.values), ("dfdp", dfdp.values)):
        want = np.array(sympy.lambdify(syms, exprs)(*y, *p), dtype=float)
        got = np.empty(len(exprs))
        getattr(model, name)(0.0, y, p, got)
        if not np.allclose(got, want, rtol=1e-13, atol=1e-13):
            raise RuntimeError(f"loop kernels: {name} values differ from the sympy model")


def rd_case(n, kernels, linear_solver, rounds, batch_s, budget_s, max_sens_size):
    """Build, check and time one sweep case; returns a dict of results."""
    start = time.perf_counter()
    problem, block = rd_problem(n)
    if kernels == "loop":
        arrays = install_loop_kernels(problem, block)
    options = dict(solver="BDF", linear_solver=linear_solver, rtol=1e-8, atol=1e-8)
    params = {"D": RD_D, "r": RD_R, "s": np.full(block.max() + 1, RD_S)}
    solver = sl.Solver(problem, **options)
    build_s = time.perf_counter() - start
    if kernels == "loop" and n <= 100:
        check_loop_kernels(problem, arrays, solver._model)
    solver.set_params_dict(params)
    adj = sl.AdjointSolver(problem, **options)
    adj.set_params_dict(params)
    # Explicit RK backward; capped so that a stiff adjoint fails fast instead of crawling.
    erk = sl.AdjointSolver(problem, solver_backward="ERK", max_steps_backward=5000, **options)
    erk.set_params_dict(params)

    tv, t0 = RD_TVALS, 0.0
    x = np.arange(n) / n
    y0 = 0.1 + 0.08 * np.sin(2 * np.pi * 3 * x)
    w = np.random.default_rng(0).uniform(0.5, 1.5, (len(tv), n))
    y = solver.make_output_buffers(tv)
    ya, g, lam = adj.make_output_buffers(tv)
    ye, ge, lame = erk.make_output_buffers(tv)

    def forward():
        solver.solve(t0, tv, y0, y)

    def adjoint():
        adj.solve_forward(t0, tv, y0, ya)
        adj.solve_backward(tv[-1], t0, tv, w, g, lam)

    # Only the first and last output time: the backward solve needs no restarts.
    tv2, w2, y2, ya2 = tv[[0, -1]], w[[0, -1]], np.zeros((2, n)), np.zeros((2, n))

    def forward_2():
        solver.solve(t0, tv2, y0, y2)

    def adjoint_2():
        adj.solve_forward(t0, tv2, y0, ya2)
        adj.solve_backward(tv2[-1], t0, tv2, w2, g, lam)

    def adjoint_erk():
        erk.solve_forward(t0, tv, y0, ye)
        erk.solve_backward(tv[-1], t0, tv, w, ge, lame)

    methods = {"forward": forward, "adjoint": adjoint, "forward_2": forward_2, "adjoint_2": adjoint_2}
    try:
        adjoint_erk()
        methods["erk"] = adjoint_erk
    except sl.SolverError:
        pass
    n_sens = problem.n_dparams
    if n_sens * n <= max_sens_size:
        sens_solver = sl.Solver(problem, sens_mode="simultaneous", sens_y0=False, **options)
        sens_solver.set_params_dict(params)
        ys, sens = sens_solver.make_output_buffers(tv)

        def sensitivities():
            sens_solver.solve(t0, tv, y0, ys, sens)
            np.einsum("tkj,tj->k", sens, w)
        methods["sens"] = sensitivities

    times = interleaved(methods, rounds, batch_s, budget_s)
    forward()  # buffers and stats then belong to the 21-output solves again
    adjoint()
    if not np.allclose(ya, y, rtol=1e-6, atol=1e-9):
        raise RuntimeError(f"n={n}: AdjointSolver.solve_forward differs from Solver.solve")
    result = dict(n=n, kernels=kernels, linear_solver=linear_solver, n_params=n_sens,
                  build_s=build_s, y_end=y[-1].tolist(), grad_p=g.tolist(),
                  grad_y0=(-lam).tolist(), steps=solver.stats()["steps"],
                  steps_backward=adj.stats()["steps_backward"])
    if "erk" in methods:
        adjoint_erk()
        result["erk_err"] = rel_err(np.concatenate([ge, lame]), np.concatenate([g, lam]))
        result["steps_erk"] = erk.stats()["steps_backward"]
    if "sens" in methods:
        result["sens_err"] = rel_err(np.einsum("tkj,tj->k", sens, w), g)
        result["steps_sens"] = sens_solver.stats()["steps"]
    for name in methods:
        result[f"{name}_us"] = statistics.median(times[name])
        if name not in ("forward", "forward_2"):
            result[f"{name}_ratio"] = ratio(times, name, "forward_2" if name.endswith("_2") else "forward")
    return result


def sweep(kernels, sizes, solvers, rounds, batch_s, budget_s, max_sens_size):
    return [rd_case(n, kernels, linear_solver, rounds, batch_s, budget_s, max_sens_size)
            for n in sizes for linear_solver in solvers]


def print_sweep(results):
    print(f"{'kernels':<10}{'n':>5}{'linsolv':>8}{'params':>7}{'build s':>8}{'fwd ms':>9}"
          f"{'adj ms':>9}{'adj/fwd':>8}{'2 outs':>7}{'adj us/state':>13}{'ERK/fwd':>14}{'ERK err':>8}"
          f"{'sens ms':>9}{'sens/fwd':>9}{'sens err':>9}{'steps fwd/bwd/ERK/sens':>24}")
    for r in results:
        erk = (f"{r['erk_ratio']:>14.2f}{r['erk_err']:>8.0e}" if "erk_us" in r
               else f"{'fails (stiff)':>14}{'':>8}")
        sens = (f"{r['sens_us'] / 1e3:>9.2f}{r['sens_ratio']:>9.2f}{r['sens_err']:>9.0e}"
                if "sens_us" in r else f"{'skipped':>9}{'':>9}{'':>9}")
        steps = f"{r['steps']}/{r['steps_backward']}/{r.get('steps_erk', '-')}/{r.get('steps_sens', '-')}"
        print(f"{r['kernels']:<10}{r['n']:>5}{r['linear_solver']:>8}{r['n_params']:>7}"
              f"{r['build_s']:>8.2f}{r['forward_us'] / 1e3:>9.3f}{r['adjoint_us'] / 1e3:>9.2f}"
              f"{r['adjoint_ratio']:>8.2f}{r['adjoint_2_ratio']:>7.2f}{r['adjoint_us'] / r['n']:>13.2f}"
              f"{erk}{sens}{steps:>24}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch-s", type=float, default=0.08, help="seconds per timed batch")
    parser.add_argument("--max-sens-size", type=int, default=50_000,
                        help="skip sensitivities when n_params * n_states is larger")
    parser.add_argument("--case-budget-s", type=float, default=8.0,
                        help="about how long to time one sweep case (fewer rounds if slow)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-sweep", action="store_true", help="parts 1 and 1b only")
    parser.add_argument("--sweep", choices=["generated", "loop"], help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--solvers", nargs="+", default=["sparse"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.batch_s, args.case_budget_s = 3, 0.02, 1.0

    if args.sweep:  # a child process: one kernel kind, results as JSON on stdout
        results = sweep(args.sweep, args.sizes, args.solvers, args.rounds, args.batch_s,
                        args.case_budget_s, args.max_sens_size)
        print(json.dumps(results))
        return

    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    lv_part(args.rounds, args.batch_s)
    robertson_part(args.rounds, args.batch_s)
    if args.no_sweep:
        return

    common = ["--rounds", str(args.rounds), "--batch-s", str(args.batch_s),
              "--max-sens-size", str(args.max_sens_size), "--case-budget-s", str(args.case_budget_s)]
    results = []
    for kind, sizes, solvers in (("generated", [10, 100], ["sparse"]),
                                 ("loop", [10, 100, 1000], ["sparse", "band"])):
        cmd = [sys.executable, __file__, "--sweep", kind, "--sizes", *map(str, sizes),
               "--solvers", *solvers, *common]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results += json.loads(out.strip().splitlines()[-1])

    # The loop kernels must reproduce the library's generated kernels end to end.
    generated = {(r["n"], r["linear_solver"]): r for r in results if r["kernels"] == "generated"}
    for r in results:
        g = generated.get((r["n"], r["linear_solver"]))
        if r["kernels"] == "loop" and g:
            for key in ("y_end", "grad_p", "grad_y0"):
                if rel_err(np.array(r[key]), np.array(g[key])) > 1e-8:
                    raise RuntimeError(f"n={r['n']}: loop kernels give a different {key}")

    print("\nPart 2: reaction-diffusion u_i' = D (u_{i-1} - 2u_i + u_{i+1}) + r u_i (1 - u_i) + "
          "s_b(i), t=0..10, 21 outputs, BDF rtol=atol=1e-8")
    print("L = sum(w * u) over all outputs; adjoint = value + gradient w.r.t. params and u0; "
          "sens = simultaneous forward sensitivities w.r.t. params only")
    print_sweep(results)
    print("build s: problem + first Solver in that process (numba kernels from the disk cache "
          "if present); sens err: max rel. difference of dL/dp to the adjoint;")
    print("2 outs: adj/fwd with only t=0 and t=10 as output times (no backward restarts); "
          "ERK: adjoint with solver_backward=\"ERK\", ERK err: its max rel. difference of "
          "(dL/dp, dL/du0) to the BDF adjoint;")
    print("steps: CVODES steps of the forward solve, of the backward solve (summed over the 20 "
          "output intervals), ARKODE steps of the ERK backward solve and CVODES steps of the "
          "sensitivity solve")

    print(f"load average at end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"total {time.perf_counter() - START:.0f} s")


if __name__ == "__main__":
    main()
