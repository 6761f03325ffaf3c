"""solver="auto" (csrc/sl_auto.h), the default: ERK within a step budget, else BDF from t0;
solver_backward="auto", the default: ERK after ERK, DIRK after BDF (BDF through GMRES or with
CVODES' checkpoint options). Which they pick, that their results are the picked methods' own,
that nothing carries over between solves, and the options that make them BDF."""

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


def adjoint_result(case, grads, **options):
    adj = solved(sl.AdjointSolver, case, case.tvals, **options)
    y_out, grad_out, lambda_out = adj.make_output_buffers(case.tvals)
    adj.solve_forward(case.t0, case.tvals, case.y0, y_out)
    adj.solve_backward(case.tvals[-1], case.t0, case.tvals, grads, grad_out, lambda_out)
    return adj, (y_out, grad_out, lambda_out)


@pytest.mark.parametrize("factory, forward_method, backward_method", [
    (helpers.lotka_volterra, "ERK", "ERK"), (helpers.robertson, "BDF", "DIRK")])
def test_adjoint_defaults_pick_per_forward_method(factory, forward_method, backward_method):
    """The defaults' results are bit for bit those of the methods they pick, named."""
    case = factory()
    grads = np.linspace(-1.0, 1.5, case.tvals.size * case.y0.size).reshape(case.tvals.size, -1)
    adj, default = adjoint_result(case, grads, rtol=1e-8, atol=1e-12)
    assert adj.method_used() == forward_method
    _, named = adjoint_result(case, grads, rtol=1e-8, atol=1e-12, solver=forward_method,
                              solver_backward=backward_method)
    for a, b in zip(default, named):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("options, backward_method", [
    ({"solver": "BDF"}, "DIRK"), ({"solver": "BDF", "linear_solver": "band", "bandwidths": (1, 1)}, "DIRK"),
    ({"solver": "BDF", "linear_solver": "spgmr"}, "BDF"), ({"solver": "ADAMS"}, "DIRK"),
    ({"solver": "BDF", "checkpoint_steps": 50}, "BDF"), ({"solver": "BDF", "quad_errcon": False}, "BDF"),
    ({"solver": "DIRK"}, "DIRK"), ({"solver": "auto", "quad_errcon": False, "rtol": 1e-9}, None),
])
def test_automatic_backward_method(options, backward_method):
    """solver_backward's default after a named forward method: the gradients are bit for bit
    those of the backward method it stands for (None: solver="auto" on the non-stiff
    Lotka-Volterra, ERK forward and backward)."""
    case = helpers.lotka_volterra()
    grads = np.ones((case.tvals.size, 2))
    _, default = adjoint_result(case, grads, **options)
    named_options = dict(options, solver_backward=backward_method or "ERK")
    if backward_method is None:
        named_options["solver"] = "ERK"
    _, named = adjoint_result(case, grads, **named_options)
    for a, b in zip(default, named):
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


def test_none_asks_for_the_automatic_choice():
    case = helpers.robertson()
    grads = np.ones((case.tvals.size, 3))
    _, default = adjoint_result(case, grads)
    _, with_none = adjoint_result(case, grads, solver=None, solver_backward=None)
    for a, b in zip(default, with_none):
        np.testing.assert_array_equal(a, b)
