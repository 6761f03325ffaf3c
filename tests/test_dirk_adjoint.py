"""The implicit one-step backward problem: ``AdjointSolver(solver_backward="DIRK")``.

Gradients against forward sensitivities (tight tolerances: 1e-6 relative, entry by entry)
with each linear solver, on Lotka-Volterra (non-stiff), the stiff Robertson (where the
explicit backward fails), POLLU, HIRES and a chain with a bidiagonal Jacobian; against
the staggered sensitivities and finite differences through `test_gradients.check_all_ways`
on Lotka-Volterra and Robertson, and against central differences of dL/dp and dL/dy0 on
POLLU and HIRES.
"""

import numpy as np
import pytest

import sunode_like as sl
from sunode_like.examples import test_set

import gradient_problems as gpm
import helpers
from test_gradients import (_central, adjoint_gradients, assert_gradients_close,
                            check_all_ways, linear_loss, make_loss, sensitivity_gradients)


def _with_reference(gp, loss):
    """A fixture's (problem, loss, forward-sensitivity gradients of the loss)."""
    return gp, loss, sensitivity_gradients(gp, loss, "simultaneous")


@pytest.fixture(scope="module")
def lv():
    gp = gpm.lotka_volterra()
    loss = make_loss("linear", gp)
    return _with_reference(gp, loss)


@pytest.fixture(scope="module")
def robertson():
    gp = gpm.robertson()
    loss = make_loss("linear", gp)
    return _with_reference(gp, loss)


@pytest.mark.parametrize("kind", ["linear", "squared"])
@pytest.mark.parametrize("factory", [gpm.lotka_volterra, gpm.robertson])
def test_all_ways(factory, kind):
    gp = factory()
    check_all_ways(gp, make_loss(kind, gp), solver_backward="DIRK")


def _hires():
    """The test set's HIRES (8 states, 12 rate constants as params) at 8 output times."""
    hires = test_set.hires()
    return gpm.GradientProblem(hires.problem, hires.params, hires.y0, 0.0,
                               np.linspace(1.0, hires.t_end, 8), dict(rtol=1e-10, atol=1e-14))


def _uniform_loss(gp):
    """L = sum(w * y) with w uniform in [0.5, 1.5]: POLLU's species down to 1e-18 stay
    unweighted (by 1 / max |y| the loss would be its noisiest species)."""
    shape = (len(gp.tvals), gp.problem.n_states)
    return linear_loss(np.random.default_rng(1).uniform(0.5, 1.5, shape))


@pytest.fixture(scope="module")
def pollu():
    gp = gpm.pollu()
    loss = _uniform_loss(gp)
    return _with_reference(gp, loss)


@pytest.fixture(scope="module")
def chain():
    """Lower bidiagonal J: the backward problem's M = I + gamma J^T is upper bidiagonal."""
    gp = gpm.chain()
    loss = make_loss("linear", gp)
    return _with_reference(gp, loss)


@pytest.fixture(scope="module")
def hires():
    gp = _hires()
    loss = _uniform_loss(gp)
    return _with_reference(gp, loss)


# GMRES without a preconditioner needs many iterations on POLLU's stiffness: 2-3 s.
@pytest.mark.parametrize("case, linear_solver_backward", [
    pytest.param(case, solver, marks=[pytest.mark.slow] if (case, solver) == ("pollu", "spgmr") else [])
    for case in ("lv", "robertson", "pollu", "hires", "chain")
    for solver in ("dense", "band", "sparse", "spgmr")])
def test_matches_forward_sensitivities(case, linear_solver_backward, request):
    # Measured, the largest relative error of an entry over the linear solvers: 3e-8 (LV),
    # 6e-7 (Robertson, dL/dtvals; 2e-9 for y0 and params), 7e-8 (POLLU), 5e-8 (HIRES),
    # 9e-8 (the chain).
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


# -- POLLU and HIRES of the Bari test set ---------------------------------------------------
def test_pollu_forward_matches_the_test_set_reference(pollu):
    gp = pollu[0]
    solver = sl.Solver(gp.problem, rtol=1e-12, atol=1e-20)
    solver.set_params(gp.params)
    y_out = solver.make_output_buffers(gp.tvals)
    solver.solve(gp.t0, gp.tvals, gp.y0, y_out)
    np.testing.assert_allclose(y_out[-1], test_set.pollu().reference, rtol=1e-7)


@pytest.mark.parametrize("case, step", [("pollu", 1e-3), ("hires", 1e-5)])
def test_stiff_matches_finite_differences(case, step, request):
    """dL/dp and dL/dy0 against central differences of forward solves at rtol 1e-12, with
    steps of ``step`` times each param: HIRES' L curves enough in k9 that at 1e-3 the
    difference is 4e-3 off (-139.77 against -139.2676, which 1e-4 and 1e-5 agree on), and
    POLLU's smallest rate constants (3.5e-4) leave steps of 1e-5 in the solver's noise."""
    gp, loss, _ = request.getfixturevalue(case)
    got = adjoint_gradients(gp, loss, solver_backward="DIRK")
    solver = sl.Solver(gp.problem, rtol=1e-12, atol=1e-16)
    y_out = solver.make_output_buffers(gp.tvals)

    def L(params, y0):
        solver.set_params(params)
        solver.solve(gp.t0, gp.tvals, y0, y_out)
        return loss(y_out)[0]

    unit = np.eye(max(len(gp.params), gp.problem.n_states))
    dp = [_central(lambda h: L(gp.params + h * unit[j, :len(gp.params)], gp.y0),
                   step * gp.params[j]) for j in range(len(gp.params))]
    dy0 = [_central(lambda h: L(gp.params, gp.y0 + h * unit[i, :gp.problem.n_states]), 1e-6)
           for i in range(gp.problem.n_states)]
    for name, fd, adjoint in (("params", dp, got.params), ("y0", dy0, got.y0)):
        np.testing.assert_allclose(adjoint, fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max(),
                                   err_msg=f"{case}: dL/d{name}")
