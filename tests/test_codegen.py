"""Generated kernels: split kernels give the same numbers; a kernel that raises fails the solve."""
import numpy as np
import pytest
import scipy.linalg
import sympy

import sunode_like
from sunode_like import _codegen


@pytest.fixture
def tiny_parts(monkeypatch, tmp_path):
    """Split every kernel after 4 statements, in a fresh cache so nothing is reused."""
    monkeypatch.setattr(_codegen, "STATEMENTS_PER_FUNCTION", 4)
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
