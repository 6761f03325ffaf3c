"""The implicit one-step backward problem: ``AdjointSolver(solver_backward="DIRK")``.

Gradients against forward sensitivities (tight tolerances: 1e-6 relative) and, through
`test_gradients.check_all_ways`, against the staggered sensitivities and finite differences;
on Lotka-Volterra (non-stiff) and Robertson (stiff: the explicit backward fails there).
"""

import numpy as np
import pytest

import sunode_like as sl
from sunode_like.examples import test_set

import gradient_problems as gpm
import helpers
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

    helpers.assert_no_memory_growth(memory, run, 30, 300)
    grad_out, lambda_out = _solve(adj, gp, loss)
    np.testing.assert_allclose(grad_out, reference.params, rtol=1e-3)


# -- POLLU: the air pollution model of the Bari test set (Verwer 1994), 20 states ----------
@pytest.fixture(scope="module")
def pollu():
    gp = gpm.pollu()
    weights = np.random.default_rng(1).uniform(0.5, 1.5, (len(gp.tvals), 20))
    loss = lambda y: (float(np.sum(weights * y)), weights)  # noqa: E731
    return gp, loss, sensitivity_gradients(gp, loss, "simultaneous")


def test_pollu_forward_matches_the_test_set_reference(pollu):
    gp = pollu[0]
    solver = sl.Solver(gp.problem, rtol=1e-12, atol=1e-20)
    solver.set_params(gp.params)
    y_out = solver.make_output_buffers(gp.tvals)
    solver.solve(gp.t0, gp.tvals, gp.y0, y_out)
    np.testing.assert_allclose(y_out[-1], test_set.pollu().reference, rtol=1e-7)


@pytest.mark.parametrize("linear_solver_backward", ["dense", "sparse"])
def test_pollu_gradient(pollu, linear_solver_backward):
    gp, loss, reference = pollu
    got = adjoint_gradients(gp, loss, solver_backward="DIRK",
                            linear_solver_backward=linear_solver_backward)
    assert_gradients_close(got, reference, rtol=1e-6, label=linear_solver_backward)
