"""The implicit one-step backward problem: ``AdjointSolver(solver_backward="DIRK")``.

Gradients against forward sensitivities (tight tolerances: 1e-6 relative) and, through
`test_gradients.check_all_ways`, against the staggered sensitivities and finite differences;
on Lotka-Volterra (non-stiff) and Robertson (stiff: the explicit backward fails there).
"""
import gc

import numpy as np
import pytest

import sunode_like as sl

import gradient_problems as gpm
from test_cvodes import _assert_no_growth
from test_gradients import (adjoint_gradients, assert_gradients_close, check_all_ways,
                            make_loss, sensitivity_gradients)


@pytest.fixture(scope="module")
def lv():
    gp = gpm.lotka_volterra()
    loss = make_loss("linear", gp)
    return gp, loss, sensitivity_gradients(gp, loss, "simultaneous")


@pytest.fixture(scope="module")
def robertson():
    gp = gpm.robertson()
    loss = make_loss("linear", gp)
    return gp, loss, sensitivity_gradients(gp, loss, "simultaneous")


@pytest.mark.parametrize("kind", ["linear", "squared"])
@pytest.mark.parametrize("factory", [gpm.lotka_volterra, gpm.robertson])
def test_all_ways(factory, kind):
    gp = factory()
    check_all_ways(gp, make_loss(kind, gp), solver_backward="DIRK")


@pytest.mark.parametrize("case", ["lv", "robertson"])
@pytest.mark.parametrize("linear_solver_backward", ["dense", "band", "sparse", "spgmr"])
def test_matches_forward_sensitivities(case, linear_solver_backward, request):
    # Measured: 3e-8 (LV), 7e-9 (Robertson), with every linear solver.
    gp, loss, reference = request.getfixturevalue(case)
    got = adjoint_gradients(gp, loss, solver_backward="DIRK",
                            linear_solver_backward=linear_solver_backward)
    assert_gradients_close(got, reference, rtol=1e-6, label=linear_solver_backward)


def test_stiff_where_explicit_fails(robertson):
    gp, loss, reference = robertson
    with pytest.raises(sl.SolverError, match="ARK_TOO_MUCH_WORK"):
        adjoint_gradients(gp, loss, solver_backward="ERK", max_steps_backward=20_000)
    got = adjoint_gradients(gp, loss, solver_backward="DIRK", max_steps_backward=20_000)
    assert_gradients_close(got, reference, rtol=1e-6)


def _solve(adj, gp, loss):
    y_out, grad_out, lambda_out = adj.make_output_buffers(gp.tvals)
    adj.solve_forward(gp.t0, gp.tvals, gp.y0, y_out)
    adj.solve_backward(gp.tvals[-1], gp.t0, gp.tvals, loss(y_out)[1], grad_out, lambda_out)
    return grad_out, lambda_out


def test_reused_solver_is_bit_identical_to_a_fresh_one(robertson):
    """The kernels' values cached between stages belong to one backward solve only."""
    gp_r, loss_r, _ = robertson
    reused = sl.AdjointSolver(gp_r.problem, solver_backward="DIRK", **gp_r.options)
    reused.set_params(gp_r.params)
    _solve(reused, gp_r, loss_r)
    reused.set_params(gp_r.params * 1.1)  # another forward trajectory in between
    _solve(reused, gp_r, loss_r)
    reused.set_params(gp_r.params)
    again = _solve(reused, gp_r, loss_r)
    fresh = sl.AdjointSolver(gp_r.problem, solver_backward="DIRK", **gp_r.options)
    fresh.set_params(gp_r.params)
    expected = _solve(fresh, gp_r, loss_r)
    for a, e in zip(again, expected):
        np.testing.assert_array_equal(a, e)


def test_quad_errcon_off_is_refused(lv):
    gp = lv[0]
    with pytest.raises(ValueError, match="quad_errcon"):
        sl.AdjointSolver(gp.problem, solver_backward="DIRK", quad_errcon=False)


@pytest.mark.parametrize("linear_solver_backward", ["dense", "sparse", "spgmr"])
def test_repeated_solves_and_solvers_do_not_grow_memory(memory, lv, linear_solver_backward):
    gp, loss, reference = lv
    options = dict(gp.options, solver_backward="DIRK", rtol=1e-6, atol=1e-6,
                   linear_solver_backward=linear_solver_backward)
    adj = sl.AdjointSolver(gp.problem, **options)
    adj.set_params(gp.params)

    def run(n):
        for _ in range(n):
            _solve(adj, gp, loss)
        for _ in range(n // 10):
            other = sl.AdjointSolver(gp.problem, **options)
            other.set_params(gp.params)
            _solve(other, gp, loss)

    run(30)
    gc.collect()
    before = memory()
    run(300)
    gc.collect()
    _assert_no_growth(before, memory())
    grad_out, lambda_out = _solve(adj, gp, loss)
    np.testing.assert_allclose(grad_out, reference.params, rtol=1e-3)


# -- POLLU: the air pollution model of the Bari test set (Verwer 1994), 20 states ----------
POLLU_K = [0.35, 26.6, 1.23e4, 8.6e-4, 8.2e-4, 1.5e4, 1.3e-4, 2.4e4, 1.65e4, 9e3, 2.2e-2,
           1.2e4, 1.88, 1.63e4, 4.8e6, 3.5e-4, 1.75e-2, 1e8, 4.44e11, 1.24e3, 2.1, 5.78,
           4.74e-2, 1.78e3, 3.12]
# y(60), from the test set's reference solution.
POLLU_Y60 = [5.646255480022769e-2, 0.1342484130422339, 4.139734331099427e-9,
             5.523140207484359e-3, 2.018977262302196e-7, 1.464541863493966e-7,
             7.784249118997964e-2, 0.3245075353396018, 7.494013383880406e-3,
             1.622293157301561e-8, 1.135863833257075e-8, 2.230505975721359e-3,
             2.087162882798630e-4, 1.396921016840158e-5, 8.964884856898295e-3,
             4.352846369330103e-18, 6.899219696263405e-3, 1.007803037365946e-4,
             1.772146513969984e-6, 5.682943292316392e-5]


def _pollu_rhs(t, y, p):
    y, k = [None] + list(y.y), [None] + list(p.k)  # 1-based, as in the test set
    r = [None, k[1] * y[1], k[2] * y[2] * y[4], k[3] * y[5] * y[2], k[4] * y[7], k[5] * y[7],
         k[6] * y[7] * y[6], k[7] * y[9], k[8] * y[9] * y[6], k[9] * y[11] * y[2],
         k[10] * y[11] * y[1], k[11] * y[13], k[12] * y[10] * y[2], k[13] * y[14],
         k[14] * y[1] * y[6], k[15] * y[3], k[16] * y[4], k[17] * y[4], k[18] * y[16],
         k[19] * y[16], k[20] * y[17] * y[6], k[21] * y[19], k[22] * y[19],
         k[23] * y[1] * y[4], k[24] * y[19] * y[1], k[25] * y[20]]
    dy = [-r[1] - r[10] - r[14] - r[23] - r[24] + r[2] + r[3] + r[9] + r[11] + r[12] + r[22] + r[25],
          -r[2] - r[3] - r[9] - r[12] + r[1] + r[21],
          -r[15] + r[1] + r[17] + r[19] + r[22],
          -r[2] - r[16] - r[17] - r[23] + r[15],
          -r[3] + 2 * r[4] + r[6] + r[7] + r[13] + r[20],
          -r[6] - r[8] - r[14] - r[20] + r[3] + 2 * r[18],
          -r[4] - r[5] - r[6] + r[13],
          r[4] + r[5] + r[6] + r[7],
          -r[7] - r[8],
          -r[12] + r[7] + r[9],
          -r[9] - r[10] + r[8] + r[11],
          r[9],
          -r[11] + r[10],
          -r[13] + r[12],
          r[14],
          -r[18] - r[19] + r[16],
          -r[20],
          r[20],
          -r[21] - r[22] - r[24] + r[23] + r[25],
          -r[25] + r[24]]
    return {"y": dy}


@pytest.fixture(scope="module")
def pollu():
    problem = sl.SympyProblem(params={"k": (25,)}, states={"y": (20,)}, rhs_sympy=_pollu_rhs)
    y0 = np.zeros(20)
    y0[[1, 3, 6, 7, 8, 16]] = [0.2, 0.04, 0.1, 0.3, 0.01, 0.007]
    gp = gpm.GradientProblem(problem, np.array(POLLU_K), y0, 0.0, np.linspace(0.5, 60.0, 8),
                             dict(rtol=1e-10, atol=1e-14))
    weights = np.random.default_rng(1).uniform(0.5, 1.5, (len(gp.tvals), 20))
    loss = lambda y: (float(np.sum(weights * y)), weights)  # noqa: E731
    return gp, loss, sensitivity_gradients(gp, loss, "simultaneous")


def test_pollu_forward_matches_the_test_set_reference(pollu):
    gp = pollu[0]
    solver = sl.Solver(gp.problem, rtol=1e-12, atol=1e-20)
    solver.set_params(gp.params)
    y_out = solver.make_output_buffers(gp.tvals)
    solver.solve(gp.t0, gp.tvals, gp.y0, y_out)
    np.testing.assert_allclose(y_out[-1], POLLU_Y60, rtol=1e-7)


@pytest.mark.slow  # ~20 s: about 30x the forward steps backward, see sl_rk_adjoint.c
@pytest.mark.parametrize("linear_solver_backward", ["dense", "sparse"])
def test_pollu_gradient(pollu, linear_solver_backward):
    gp, loss, reference = pollu
    got = adjoint_gradients(gp, loss, solver_backward="DIRK",
                            linear_solver_backward=linear_solver_backward)
    assert_gradients_close(got, reference, rtol=1e-6, label=linear_solver_backward)
