"""Generated kernels: split kernels give the same numbers; a kernel that raises fails the solve."""
import logging
import pathlib
import sys

import numpy as np
import pytest
import scipy.linalg
import sympy

import sunode_like
from sunode_like import _codegen, _lowering

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "benchmarks"))
from build_time import fisher_kpp  # noqa: E402  (the build-time benchmark's models)
from phosphorylation_network import phosphorylation_problem  # noqa: E402


@pytest.fixture
def tiny_parts(monkeypatch, tmp_path):
    """Split every kernel after 4 statements, in a fresh cache so nothing is reused."""
    monkeypatch.setattr(_lowering, "STATEMENTS_PER_FUNCTION", 4)
    monkeypatch.setattr(_lowering, "MIN_LOOP", 10**9)  # straight-line code only
    monkeypatch.setenv("SUNODE_LIKE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_codegen, "_loaded", {})
    return tmp_path


def test_split_kernels_match_matrix_exponential(tiny_parts):
    n = 6
    rates = np.linspace(0.3, 1.3, n)
    a = np.diag(-rates) + np.diag(rates[:-1] * 0.7, -1) + np.diag(np.full(n - 1, 0.05), 1)

    def rhs(t, y, p):
        return {"x": np.array([sum(p.a[i, j] * y.x[j] for j in range(n) if a[i, j]) for i in range(n)])}

    problem = sunode_like.SympyProblem(params={"a": (n, n)}, states={"x": (n,)}, rhs_sympy=rhs)
    adj = sunode_like.AdjointSolver(problem, rtol=1e-11, atol=1e-12)
    source = next(tiny_parts.glob("model_*.py")).read_text()
    assert "def jac_part1(" in source and "def rhs_part1(" in source

    y0 = np.linspace(1.0, 2.0, n)
    tvals = np.array([0.5, 1.0, 2.0])
    adj.set_params_dict({"a": a})
    y_out, grad_out, lambda_out = adj.make_output_buffers(tvals)
    adj.solve_forward(0.0, tvals, y0, y_out)
    expected = np.array([scipy.linalg.expm(a * t) @ y0 for t in tvals])
    np.testing.assert_allclose(y_out, expected, rtol=1e-8)

    # L = w . y(T): dL/dy0 = expm(A T)^T w.
    weights = np.zeros_like(y_out)
    weights[-1] = np.arange(1.0, n + 1)
    adj.solve_backward(tvals[-1], 0.0, tvals, weights, grad_out, lambda_out)
    np.testing.assert_allclose(-lambda_out, scipy.linalg.expm(a * 2.0).T @ weights[-1], rtol=1e-8)
    # dL/dA against central differences of the matrix exponential.
    fd = np.zeros((n, n))
    for i, j in zip(*np.nonzero(a)):
        step = np.zeros_like(a)
        step[i, j] = 1e-6
        plus = scipy.linalg.expm((a + step) * 2.0) @ y0
        minus = scipy.linalg.expm((a - step) * 2.0) @ y0
        fd[i, j] = weights[-1] @ (plus - minus) / 2e-6
    np.testing.assert_allclose(grad_out.reshape(n, n), fd, rtol=1e-6, atol=1e-9)


def _problem_with_rhs(rhs_expr_of):
    """A one-state problem whose rhs is ``rhs_expr_of(t, x, a)``, set after the problem is
    built, so it reaches the code generator even if the problem would reject it."""
    problem = sunode_like.SympyProblem(params={"a": ()}, states={"x": ()},
                                       rhs_sympy=lambda t, y, p: {"x": -p.a * y.x})
    problem.rhs_exprs = [rhs_expr_of(problem.t_symbol, *problem.state_symbols, *problem.param_symbols)]
    problem.content_hash = "raising_" + problem.content_hash
    return problem


def test_kernel_that_raises_fails_the_solve_instead_of_returning_stale_values():
    # Undefined for t >= 1 (no otherwise branch): evaluating it there raises in numba.
    problem = _problem_with_rhs(lambda t, x, a: sympy.Piecewise((-a * x, t < 1)))
    solver = sunode_like.Solver(problem, rtol=1e-10, atol=1e-10)
    solver.set_params_dict({"a": 0.5})
    before = np.array([0.25, 0.5, 0.75])
    y_out = solver.make_output_buffers(before)
    solver.solve(0.0, before, np.array([2.0]), y_out)
    np.testing.assert_allclose(y_out[:, 0], 2.0 * np.exp(-0.5 * before), rtol=1e-8)

    model = _codegen.compile_model(problem)
    out = np.full(1, 7.0)
    status = model.rhs_cfunc.ctypes(1.5, *(a.ctypes.data_as(model.rhs_cfunc.ctypes.argtypes[1])
                                           for a in (np.array([2.0]), np.array([0.5]), out)))
    assert status == _codegen.KERNEL_RAISED < 0 and out[0] == 7.0
    with pytest.raises(ValueError, match="`rhs` is undefined at t = 1.5"):  # the Python caller
        model.rhs(1.5, np.array([2.0]), np.array([0.5]), out)

    tvals = np.array([0.5, 2.0])
    y_out = solver.make_output_buffers(tvals)
    with pytest.raises(sunode_like.SolverError, match="RHSFUNC_FAIL") as info:
        solver.solve(0.0, tvals, np.array([2.0]), y_out)
    assert 0.5 <= info.value.t <= 1.0 + 1e-12

    # The adjoint's kernels (the Jacobian raises too) fail the same way.
    adj = sunode_like.AdjointSolver(problem, rtol=1e-10, atol=1e-10)
    adj.set_params_dict({"a": 0.5})
    y_out, _, _ = adj.make_output_buffers(tvals)
    with pytest.raises(sunode_like.SolverError, match="FAIL"):
        adj.solve_forward(0.0, tvals, np.array([2.0]), y_out)


def test_dae_kernel_that_raises_fails_the_solve():
    problem = sunode_like.DAEProblem(params={"a": ()}, states={"x": ()},
                                     residual_sympy=lambda t, y, yp, p: {"x": yp.x + p.a * y.x})
    (x,), (xp,), (a,) = problem.state_symbols, problem.yp_symbols, problem.param_symbols
    problem.residual_exprs = [xp + sympy.Piecewise((a * x, problem.t_symbol < 1))]
    problem.content_hash = "raising_" + problem.content_hash
    solver = sunode_like.DAESolver(problem, rtol=1e-10, atol=1e-10)
    solver.set_params_dict({"a": 0.5})
    tvals = np.array([0.5, 2.0])
    y_out = solver.make_output_buffers(tvals)
    with pytest.raises(sunode_like.SolverError, match="RES_FAIL|RESFUNC") as info:
        solver.solve(0.0, tvals, np.array([2.0]), y_out)
    assert 0.5 <= info.value.t <= 1.0 + 1e-12


# -- kernel values against sympy's own evaluation (issue 13: models built the new way) ----
def _fisher_kpp(n):
    return fisher_kpp(n)[0]


def _functions():
    """Shared subexpressions inside functions, a Piecewise, powers, a chain of loops
    over temporaries, and a state that is a constant."""
    n = 8

    def rhs(t, y, p):
        x = y.x
        out = [sympy.exp(-p.k[i] * x[i]) * sympy.sqrt(1 + x[(i + 1) % n] ** 2) * sympy.sin(t)
               + sympy.Piecewise((x[i] ** 3, x[i] < p.c), (p.c * sympy.log(1 + x[i] ** 2), True))
               + (p.k[i] * x[i] + p.c) ** sympy.Rational(3, 2) / (1 + sympy.exp(-p.k[i] * x[i]))
               for i in range(n)]
        return {"x": np.array(out), "z": sympy.Integer(2)}
    return sunode_like.SympyProblem(params={"k": (n,), "c": ()}, states={"x": (n,), "z": ()}, rhs_sympy=rhs)


def _lotka_volterra():
    return sunode_like.SympyProblem(
        params={"alpha": (), "beta": (), "gamma": (), "delta": ()}, states={"hares": (), "lynx": ()},
        rhs_sympy=lambda t, y, p: {"hares": p.alpha * y.hares - p.beta * y.hares * y.lynx,
                                   "lynx": p.delta * y.hares * y.lynx - p.gamma * y.lynx})


MODELS = {"fisher_kpp": lambda: _fisher_kpp(30), "network": lambda: phosphorylation_problem(9),
          "functions": _functions, "lotka_volterra": _lotka_volterra}


@pytest.fixture(params=["whole", "parts"])
def fresh_cache(request, monkeypatch, tmp_path):
    """A fresh cache; "parts" splits every kernel after 5 statements, so loops and
    straight-line code pass temporaries between functions."""
    if request.param == "parts":
        monkeypatch.setattr(_lowering, "STATEMENTS_PER_FUNCTION", 5)
    monkeypatch.setenv("SUNODE_LIKE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_codegen, "_loaded", {})
    return request.param


@pytest.mark.parametrize("name", MODELS)
def test_kernels_match_sympy(name, fresh_cache):
    problem = MODELS[name]()
    model = _codegen.compile_model(problem)
    source = pathlib.Path(model.__file__).read_text()
    if name in ("fisher_kpp", "network"):
        assert "for k in range(" in source  # the repeated expressions became loops
    if name == "network":
        assert " += " in source  # and the enzymes' long balances accumulating loops
    if fresh_cache == "parts" and problem.n_states > 2:
        assert "def jac_part1(" in source

    rng = np.random.default_rng(3)
    y = rng.uniform(0.2, 1.5, problem.n_states)
    p = rng.uniform(0.3, 1.2, problem.n_params)
    t = 0.7
    point = {problem.t_symbol: sympy.Float(t)}
    point |= {s: sympy.Float(v) for s, v in zip(problem.state_symbols, y)}
    point |= {s: sympy.Float(v) for s, v in zip(problem.param_symbols, p)}

    def value(expr):
        return float(expr.xreplace(point).evalf(30))

    f = problem.rhs_exprs
    jac = np.array([[value(sympy.diff(fi, s)) for s in problem.state_symbols] for fi in f])
    dparams = [problem.param_symbols[i] for i in problem.derivative_indices]
    dfdp = np.array([[value(sympy.diff(fi, s)) for s in dparams] for fi in f])

    out = np.empty(problem.n_states)
    assert model.rhs(t, y, p, out) == 0
    np.testing.assert_allclose(out, [value(fi) for fi in f], rtol=1e-13, atol=1e-13)
    for kernel, colptr, rows, dense in (("jac", model.JAC_COLPTR, model.JAC_ROWS, jac),
                                        ("dfdp", model.DFDP_COLPTR, model.DFDP_ROWS, dfdp)):
        values = np.empty(len(rows))
        assert getattr(model, kernel)(t, y, p, values) == 0
        got = np.zeros_like(dense)
        for j in range(dense.shape[1]):
            got[rows[colptr[j]:colptr[j + 1]], j] = values[colptr[j]:colptr[j + 1]]
        np.testing.assert_allclose(got, dense, rtol=1e-13, atol=1e-13, err_msg=kernel)
        # The pattern holds every structural nonzero.
        assert np.all(dense[got == 0] == 0)


def _dae_models():
    """A DAE whose dF/dy' depends on y, y' and t (jac_yp_dot, the union pattern), and
    Robertson's semi-explicit form (dF/dy' the identity on the differential equations)."""
    implicit = sunode_like.DAEProblem(
        params={"a": (), "b": (2,)}, states={"x": (), "w": (), "z": ()},
        residual_sympy=lambda t, y, yp, p: {
            "x": (1 + y.x ** 2 + p.b[0] * sympy.sin(t)) * yp.x + p.a * y.x * y.w,
            "w": yp.w * y.x + yp.x * y.z - p.b[1] * y.w + sympy.exp(-t * y.z),
            "z": y.x + y.w * y.z - p.a})
    robertson = sunode_like.DAEProblem(
        params={"k1": (), "k2": (), "k3": ()}, differential_states={"y1": (), "y2": ()},
        algebraic_states={"y3": ()},
        rhs_sympy=lambda t, x, z, p: {"y1": -p.k1 * x.y1 + p.k3 * x.y2 * z.y3,
                                      "y2": p.k1 * x.y1 - p.k3 * x.y2 * z.y3 - p.k2 * x.y2 ** 2},
        algebraic_sympy=lambda t, x, z, p: {"y3": x.y1 + x.y2 + z.y3 - 1})
    return {"implicit": implicit, "robertson": robertson}


def _sparse_to_dense(model, pattern, values, shape):
    colptr, rows = getattr(model, pattern + "_COLPTR"), getattr(model, pattern + "_ROWS")
    dense = np.zeros(shape)
    for j in range(shape[1]):
        dense[rows[colptr[j]:colptr[j + 1]], j] = values[colptr[j]:colptr[j + 1]]
    return dense


@pytest.mark.parametrize("name", ["implicit", "robertson"])
def test_dae_kernels_match_sympy(name, fresh_cache):
    problem = _dae_models()[name]
    model = _codegen.compile_dae_model(problem, kernels=("res",))  # the others on first use
    n = problem.n_states
    rng = np.random.default_rng(5)
    y, yp = rng.uniform(0.2, 1.5, n), rng.uniform(-1.0, 1.0, n)
    p = rng.uniform(0.3, 1.2, problem.n_params)
    t = 0.6
    point = {problem.t_symbol: sympy.Float(t)}
    for symbols, values in ((problem.state_symbols, y), (problem.yp_symbols, yp), (problem.param_symbols, p)):
        point |= {s: sympy.Float(v) for s, v in zip(symbols, values)}

    def value(expr):
        return float(expr.xreplace(point).evalf(30))

    res = problem.residual_exprs
    jy = np.array([[value(sympy.diff(f, s)) for s in problem.state_symbols] for f in res])
    jyp_exprs = [[sympy.diff(f, s) for s in problem.yp_symbols] for f in res]
    jyp = np.array([[value(e) for e in row] for row in jyp_exprs])
    # d/dt of dF/dy' along the solution: its explicit t-derivative plus sum_j d/dy_j * y'_j.
    jyp_dot = np.array([[value(sympy.diff(e, problem.t_symbol)) + sum(
        value(sympy.diff(e, s)) * v for s, v in zip(problem.state_symbols, yp)) for e in row] for row in jyp_exprs])
    dparams = [problem.param_symbols[i] for i in problem.derivative_indices]
    dfdp = np.array([[value(sympy.diff(f, s)) for s in dparams] for f in res])
    dfdt = np.array([value(sympy.diff(f, problem.t_symbol)) for f in res])

    yyp = np.concatenate([y, yp])

    def evaluate(kernel, size):
        out = np.empty(size)
        assert getattr(model, kernel)(t, yyp, p, out) == 0
        return out

    np.testing.assert_allclose(evaluate("res", n), [value(f) for f in res], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(evaluate("dfdt", n), dfdt, rtol=1e-13, atol=1e-13)
    for kernel, pattern, dense in (("jac_y", "JY", jy), ("jac_yp", "JYP", jyp), ("jac_yp_dot", "JYP", jyp_dot),
                                   ("dfdp", "DFDP", dfdp)):
        values = evaluate(kernel, len(getattr(model, pattern + "_ROWS")))
        got = _sparse_to_dense(model, pattern, values, dense.shape)
        np.testing.assert_allclose(got, dense, rtol=1e-13, atol=1e-13, err_msg=kernel)
        if kernel != "jac_yp_dot":
            assert np.all(dense[got == 0] == 0)  # the pattern holds every structural nonzero
    # The union pattern P holds both Jacobians, each entry where its map says.
    for pattern in ("JY", "JYP"):
        rows = getattr(model, pattern + "_ROWS")
        cols = np.repeat(np.arange(n), np.diff(getattr(model, pattern + "_COLPTR")))
        positions = getattr(model, pattern + "_MAP")
        assert np.all(model.JAC_ROWS[positions] == rows)
        assert np.all(np.searchsorted(model.JAC_COLPTR, positions, side="right") - 1 == cols)
    assert model.JAC_YP_CONSTANT == (name == "robertson")
    assert model.JAC_YP_IDENTITY == (name == "robertson")
    assert model.JAC_YP_DEPENDS_ON_YP is False


def test_forward_solver_compiles_no_dfdp_and_later_solvers_get_it(fresh_cache):
    """x' = A(a, b, c) x: a forward-only Solver compiles rhs and jac only; a sensitivity
    Solver and an AdjointSolver on the same problem in the same process then compile df/dp
    and give the derivatives of the matrix exponential."""
    def matrix(a, b, c):
        return np.array([[-a, b], [a, -b - c]])

    problem = sunode_like.SympyProblem(
        params={"a": (), "b": (), "c": ()}, states={"x": (2,)},
        rhs_sympy=lambda t, y, p: {"x": np.array([-p.a * y.x[0] + p.b * y.x[1],
                                                  p.a * y.x[0] - (p.b + p.c) * y.x[1]])})
    params, y0, tvals = np.array([0.7, 0.3, 0.2]), np.array([1.0, 0.4]), np.array([0.5, 1.5, 3.0])
    expected = np.array([scipy.linalg.expm(matrix(*params) * t) @ y0 for t in tvals])

    solver = sunode_like.Solver(problem, rtol=1e-11, atol=1e-12)
    model = _codegen.compile_model(problem, kernels=())
    assert "dfdp_cfunc" not in vars(model) and "jac_cfunc" in vars(model)
    solver.set_params(params)
    y_out = solver.make_output_buffers(tvals)
    solver.solve(0.0, tvals, y0, y_out)
    np.testing.assert_allclose(y_out, expected, rtol=1e-8)
    assert "dfdp_cfunc" not in vars(model)

    def fd(k):  # central differences of expm(A t) y0 in params[k]
        step = np.eye(3)[k] * 1e-6
        return np.array([(scipy.linalg.expm(matrix(*(params + step)) * t)
                          - scipy.linalg.expm(matrix(*(params - step)) * t)) @ y0 / 2e-6 for t in tvals])

    sens_solver = sunode_like.Solver(problem, sens_mode="simultaneous", sens_y0=False, rtol=1e-11, atol=1e-12)
    sens_solver.set_params(params)
    y_out, sens_out = sens_solver.make_output_buffers(tvals)
    sens_solver.solve(0.0, tvals, y0, y_out, sens_out)
    for k in range(3):
        np.testing.assert_allclose(sens_out[:, k, :], fd(k), rtol=1e-6, atol=1e-9)

    adj = sunode_like.AdjointSolver(problem, rtol=1e-11, atol=1e-12)
    adj.set_params(params)
    ya, grad, lam = adj.make_output_buffers(tvals)
    adj.solve_forward(0.0, tvals, y0, ya)
    weights = np.array([[1.0, 2.0], [0.5, -1.0], [3.0, 1.0]])  # L = sum(weights * y(tvals))
    adj.solve_backward(tvals[-1], 0.0, tvals, weights, grad, lam)
    np.testing.assert_allclose(grad, [np.sum(weights * fd(k)) for k in range(3)], rtol=1e-6)


def test_long_build_logs_its_stages(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("SUNODE_LIKE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_codegen, "_loaded", {})
    monkeypatch.setattr(_codegen, "PROGRESS_AFTER", 0.0)  # every build counts as long
    problem = _fisher_kpp(12)
    with caplog.at_level(logging.INFO, logger="sunode_like"):
        _codegen.compile_model(problem)
    messages = [r.getMessage() for r in caplog.records if r.name == "sunode_like"]
    assert any(m.startswith(f"building model {problem.content_hash} (12 states): ") for m in messages)
    done = messages[-1]
    assert done.startswith(f"built model {problem.content_hash} (12 states) in ")
    for stage in ("derivatives", "kernel source", "numba compile"):
        assert f"{stage} " in done
    stages = _codegen.build_stages["model_" + problem.content_hash]
    assert list(stages) == ["cache load", "derivatives", "kernel source", "numba compile"]

    # A warm build has a single stage and, being short, logs nothing.
    monkeypatch.setattr(_codegen, "PROGRESS_AFTER", 60.0)
    _codegen._loaded.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sunode_like"):
        _codegen.compile_model(problem)
    assert list(_codegen.build_stages["model_" + problem.content_hash]) == ["cache load"]
    assert not [r for r in caplog.records if r.name == "sunode_like"]


def test_coth_is_accurate_for_large_arguments_and_composes():
    # Printed through exp, coth(800.3) was inf/inf = NaN, and coth(sec(x)) did not compile
    # (sympy rewrote the inner sec as complex exponentials).
    problem = sunode_like.SympyProblem(
        params={"a": ()}, states={"x": ()},
        rhs_sympy=lambda t, y, p: {"x": sympy.coth(p.a * y.x) + sympy.coth(sympy.sec(y.x))})
    model = _codegen.compile_model(problem)
    for x, a in ((1.0, 800.3), (0.3, 2.0), (-0.7, 1.5)):
        out = np.empty(1)
        model.rhs(0.0, np.array([x]), np.array([a]), out)
        expected = 1 / np.tanh(a * x) + 1 / np.tanh(1 / np.cos(x))
        np.testing.assert_allclose(out, [expected], rtol=1e-14)


def test_dae_with_constant_dfdyp_never_compiles_its_time_derivative():
    """x' = -k z, 0 = z - x (dF/dy' constant): x = exp(-k t), solved without jac_yp_dot."""
    problem = sunode_like.DAEProblem(
        params={"k": ()}, differential_states={"x": ()}, algebraic_states={"z": ()},
        rhs_sympy=lambda t, x, z, p: {"x": -p.k * z.z},
        algebraic_sympy=lambda t, x, z, p: {"z": z.z - x.x})
    solver = sunode_like.DAESolver(problem, rtol=1e-10, atol=1e-12)
    model = _codegen.compile_dae_model(problem, kernels=())
    assert model.JAC_YP_CONSTANT
    solver.set_params(np.array([0.8]))
    tvals = np.array([0.5, 2.0])
    y_out = solver.make_output_buffers(tvals)
    solver.solve(0.0, tvals, np.array([1.0, 1.0]), y_out)
    np.testing.assert_allclose(y_out[:, 0], np.exp(-0.8 * tvals), rtol=1e-8)
    assert "jac_yp_dot_cfunc" not in vars(model)
