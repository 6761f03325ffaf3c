"""solver="auto" (csrc/sl_auto.h): ERK within a step budget, else BDF from t0; the backward
method follows the forward solve's. Which it picks, that its results are the picked method's
own, that nothing carries over between solves, and the options that make it BDF."""

import numpy as np
import pytest

import helpers
import sunode_like as sl


def solved(solver_class, case, tvals, **options):
    solver = solver_class(case.problem, **options)
    solver.set_params_dict(case.params)
    return solver


def forward(solver, case, tvals):
    y_out = np.zeros((len(tvals), case.y0.size))
    (solver.solve_forward if isinstance(solver, sl.AdjointSolver) else solver.solve)(
        case.t0, tvals, case.y0, y_out)
    return y_out


@pytest.mark.parametrize("factory, picked", [(helpers.lotka_volterra, "ERK"), (helpers.robertson, "BDF")])
def test_picks_and_returns_the_picked_methods_result(factory, picked):
    case = factory()
    auto = solved(sl.Solver, case, case.tvals, solver="auto", rtol=1e-8, atol=1e-12)
    y_auto = forward(auto, case, case.tvals)
    assert auto.method_used() == picked
    own = solved(sl.Solver, case, case.tvals, solver=picked, rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(y_auto, forward(own, case, case.tvals))
    assert auto.stats() == own.stats()


def test_no_state_carries_over_between_solves():
    """Robertson is not stiff yet over [0, 1e-3] (ERK), it is to 1e11 (BDF); after the BDF
    solve the short one is ERK's again, bit for bit."""
    case = helpers.robertson()
    auto = solved(sl.Solver, case, case.tvals, solver="auto")
    short = np.array([1e-4, 1e-3])
    first = forward(auto, case, short)
    assert auto.method_used() == "ERK"
    forward(auto, case, case.tvals)
    assert auto.method_used() == "BDF"
    np.testing.assert_array_equal(forward(auto, case, short), first)
    assert auto.method_used() == "ERK"


@pytest.mark.parametrize("factory, picked", [(helpers.lotka_volterra, "ERK"), (helpers.robertson, "BDF")])
def test_adjoint_follows_the_forward_method(factory, picked):
    case = factory()
    grads = np.linspace(-1.0, 1.5, case.tvals.size * case.y0.size).reshape(case.tvals.size, -1)
    results = []
    for method in ("auto", picked):
        adj = solved(sl.AdjointSolver, case, case.tvals, solver=method, rtol=1e-8, atol=1e-12)
        y_out, grad_out, lambda_out = adj.make_output_buffers(case.tvals)
        adj.solve_forward(case.t0, case.tvals, case.y0, y_out)
        adj.solve_backward(case.tvals[-1], case.t0, case.tvals, grads, grad_out, lambda_out)
        results.append((y_out, grad_out, lambda_out))
        assert adj.method_used() == picked
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_a_one_step_backward_is_kept():
    """solver_backward="DIRK" with solver="auto": the backward method given, after ERK."""
    case = helpers.lotka_volterra()
    grads = np.ones((case.tvals.size, 2))
    results = []
    for method in ("auto", "ERK"):
        adj = solved(sl.AdjointSolver, case, case.tvals, solver=method, solver_backward="DIRK")
        results.append(adj.gradients(case.t0, case.tvals, case.y0, forward(adj, case, case.tvals), grads))
    np.testing.assert_array_equal(results[0].params, results[1].params)
    np.testing.assert_array_equal(results[0].y0, results[1].y0)


@pytest.mark.parametrize("solver_class, options", [
    (sl.AdjointSolver, {"solver_backward": "BDF"}), (sl.AdjointSolver, {"checkpoint_steps": 50}),
    (sl.AdjointSolver, {"interpolation": "polynomial"}), (sl.Solver, {"constraints": 1}),
    (sl.Solver, {"sens_mode": "staggered"}),
])
def test_options_only_cvodes_has_make_it_bdf(solver_class, options):
    case = helpers.lotka_volterra()
    solver = solved(solver_class, case, case.tvals, solver="auto", **options)
    if options.get("sens_mode"):
        solver.solve(case.t0, case.tvals, case.y0, *solver.make_output_buffers(case.tvals))
    else:
        forward(solver, case, case.tvals)
    assert solver.method_used() == "BDF"


def test_auto_backward_needs_auto_forward():
    with pytest.raises(ValueError, match="`solver_backward='auto'`"):
        sl.AdjointSolver(helpers.lotka_volterra_problem(), solver_backward="auto")
