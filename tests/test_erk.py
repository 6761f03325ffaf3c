"""solver="ERK": forward solves, forward sensitivities and adjoints by ARKODE's explicit
Runge-Kutta method (csrc/sl_arkode.c), against closed forms, a tight scipy reference,
CVODES' sensitivities and finite differences; work, determinism, far times, errors and
memory."""

import numpy as np
import pytest
import sympy

import helpers
import sunode_like as sl
import test_far_times as far
from sunode_like._options import ERK_TABLES, available_erk_tables

TIGHT = {"rtol": 1e-10, "atol": 1e-10}
# L = sum_i WEIGHTS_LV[i] . y(tvals[i]) on Lotka-Volterra (21 output times, 2 states).
WEIGHTS_LV = np.linspace(-1.0, 1.5, 42).reshape(21, 2)


def solve(case, **options):
    """A solve by solver="ERK" unless options name another."""
    solver = sl.Solver(case.problem, **{"solver": "ERK", **options})
    solver.set_params_dict(case.params)
    out = solver.make_output_buffers(case.tvals)
    out = out if isinstance(out, tuple) else (out,)
    solver.solve(case.t0, case.tvals, case.y0, *out)
    return solver, out


def adjoint(case, backward, **options):
    adj = sl.AdjointSolver(case.problem, solver="ERK", solver_backward=backward, **options)
    adj.set_params_dict(case.params)
    return adj


def gradients(adj, case, tvals, y0, grads):
    """(y_out, grad_out, lambda_out) of a forward and a backward solve."""
    y_out, grad_out, lambda_out = adj.make_output_buffers(tvals)
    adj.solve_forward(case.t0, tvals, y0, y_out)
    adj.solve_backward(tvals[-1], case.t0, tvals, grads, grad_out, lambda_out)
    return y_out, grad_out, lambda_out


# -- accuracy -------------------------------------------------------------------------------
@pytest.mark.parametrize("factory", [helpers.exponential_decay, helpers.harmonic_oscillator,
                                     helpers.linear_system])
def test_closed_forms(factory):
    case = factory()
    _, (y_out,) = solve(case, **TIGHT)
    np.testing.assert_allclose(y_out, case.reference, rtol=1e-8, atol=1e-9)


def test_lotka_volterra_against_dop853():
    case = helpers.lotka_volterra()  # reference: DOP853 at rtol = atol = 1e-13
    _, (y_out,) = solve(case, **TIGHT)
    assert helpers.relative_error(y_out, case.reference) < 1e-9  # measured 2e-11


@pytest.mark.parametrize("table", available_erk_tables())
def test_tables_against_dop853(table):
    """Each Butcher table this build has (measured on SUNDIALS 7.5 at rtol = 1e-10: 4e-11 to
    7e-10; Verner's pairs step to the output times, as between their long steps ARKODE's
    dense output missed by up to 3e-6)."""
    case = helpers.lotka_volterra()
    solver, (y_out,) = solve(case, erk_table=table, rtol=1e-10, atol=1e-10)
    assert helpers.relative_error(y_out, case.reference) < 3e-9
    if table.startswith("verner"):  # 208 steps (verner6) .. 63 (verner9) against 311 (tsitouras)
        assert solver.stats()["steps"] < solve(case, rtol=1e-10, atol=1e-10)[0].stats()["steps"]


def test_tables_this_build_lacks():
    missing = [name for name in ERK_TABLES if name and name not in available_erk_tables()]
    if not missing:
        pytest.skip("this SUNDIALS has every table")
    with pytest.raises(ValueError, match=f"`erk_table='{missing[0]}'` is not in this build"):
        sl.Solver(helpers.lotka_volterra_problem(), solver="ERK", erk_table=missing[0])
    with pytest.raises(ValueError, match="`erk_table='dormand_prince'` is the table of solver='ERK'"):
        sl.Solver(helpers.lotka_volterra_problem(), solver="BDF", erk_table="dormand_prince")


@pytest.mark.parametrize("method", ["ERK", "DIRK", "auto"])
def test_tstop_is_not_stepped_past(method):
    """y' = sqrt(1 - t) is NaN past t = 1: without tstop the last step crosses it."""
    problem = sl.SympyProblem(params={}, states={"y": ()},
                              rhs_sympy=lambda t, y, p: {"y": sympy.sqrt(1 - t)})
    tvals = np.array([0.0, 0.5, 1.0])
    exact = (1 - (1 - tvals) ** 1.5) * 2 / 3
    solver = sl.Solver(problem, solver=method, tstop=1.0, **TIGHT)
    y_out = solver.make_output_buffers(tvals)
    solver.solve(0.0, tvals, np.zeros(1), y_out)
    np.testing.assert_allclose(y_out[:, 0], exact, rtol=1e-8, atol=1e-10)


# -- gradients --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lv_reference():
    """dL/d(alpha, beta, gamma, delta) and dL/dy0 on Lotka-Volterra from CVODES' forward
    sensitivities at rtol = atol = 1e-12."""
    case = helpers.lotka_volterra()
    solver = sl.Solver(case.problem, sens_mode="simultaneous", rtol=1e-12, atol=1e-12)
    solver.set_params_dict(case.params)
    y_out, sens_out = solver.make_output_buffers(case.tvals)
    solver.solve(case.t0, case.tvals, case.y0, y_out, sens_out)
    gradient = np.einsum("tj,tkj->k", WEIGHTS_LV, sens_out)
    return case, gradient[:4], gradient[4:]


def loss(case, params, y0, **options):
    solver = sl.Solver(case.problem, solver="ERK", **options)
    solver.set_params_dict(params)
    y_out = solver.make_output_buffers(case.tvals)
    solver.solve(case.t0, case.tvals, y0, y_out)
    return float(np.sum(WEIGHTS_LV * y_out))


def test_lv_reference_against_finite_differences(lv_reference):
    """The sensitivities the ERK gradients are compared with, against central differences
    of ERK solves at rtol = 1e-13 (step 1e-4 relative: truncation ~1e-9, rounding ~1e-9)."""
    case, dparams, dy0 = lv_reference
    names = list(case.params)
    for k, name in enumerate(names):
        h = 1e-4 * case.params[name]
        up, down = dict(case.params), dict(case.params)
        up[name] += h
        down[name] -= h
        difference = (loss(case, up, case.y0, rtol=1e-13, atol=1e-13)
                      - loss(case, down, case.y0, rtol=1e-13, atol=1e-13)) / (2 * h)
        assert difference == pytest.approx(dparams[k], rel=1e-6)
    for j in range(2):
        h = 1e-4 * case.y0[j]
        step = np.eye(2)[j] * h
        difference = (loss(case, case.params, case.y0 + step, rtol=1e-13, atol=1e-13)
                      - loss(case, case.params, case.y0 - step, rtol=1e-13, atol=1e-13)) / (2 * h)
        assert difference == pytest.approx(dy0[j], rel=1e-6)


def test_forward_sensitivities(lv_reference):
    case, dparams, dy0 = lv_reference
    _, (y_out, sens_out) = solve(case, sens_mode="simultaneous", **TIGHT)
    gradient = np.einsum("tj,tkj->k", WEIGHTS_LV, sens_out)
    np.testing.assert_allclose(gradient, np.concatenate([dparams, dy0]), rtol=1e-6)
    assert helpers.relative_error(y_out, case.reference) < 1e-9


def test_sensitivities_without_error_control_keep_the_states_steps():
    """sens_errcon=False: the steps are those of the states alone, the states the same."""
    case = helpers.lotka_volterra()
    plain, (y_plain,) = solve(case, **TIGHT)
    sens, (y_sens, _) = solve(case, sens_mode="simultaneous", sens_errcon=False, **TIGHT)
    assert sens.stats()["steps"] == plain.stats()["steps"]
    np.testing.assert_allclose(y_sens, y_plain, rtol=1e-13)  # the norm's rounding differs


@pytest.mark.parametrize("backward", ["ERK", "DIRK"])
def test_adjoint_gradients(lv_reference, backward):
    case, dparams, dy0 = lv_reference
    y_out, grad_out, lambda_out = gradients(adjoint(case, backward, **TIGHT), case, case.tvals,
                                            case.y0, WEIGHTS_LV)
    np.testing.assert_allclose(grad_out, dparams, rtol=1e-6)
    np.testing.assert_allclose(-lambda_out, dy0, rtol=1e-6)
    assert helpers.relative_error(y_out, case.reference) < 1e-9


@pytest.mark.parametrize("tol", [1e-6, 1e-8, 1e-10])
def test_erk_backward_against_closed_form(tol):
    """The ERK backward's own Dormand-Prince steps (csrc/sl_dopri.c) on x' = -k x, L = sum_i
    x(t_i): dL/dx0 = sum_i exp(-k t_i) (lambda alone) within the tolerance, dL/dk =
    -sum_i t_i x(t_i) within 300x (it carries the forward solution's error, which grows
    over the 20 outputs: at 1e-11 25x rtol with Dormand-Prince, 164x with Tsitouras),
    and steps that grow as the tolerance tightens at about 5th order (a 10x
    tighter tolerance: 10^(1/5) = 1.6x the steps, not more than 2.5x)."""
    case = helpers.exponential_decay()
    k, tvals = case.params["k"], case.tvals
    exact = np.array([-np.sum(tvals * case.reference[:, 0]), np.sum(np.exp(-k * tvals))])
    steps = []
    for rtol in (tol, tol / 10):
        adj = adjoint(case, "ERK", rtol=rtol, atol=rtol)
        _, grad_out, lambda_out = gradients(adj, case, tvals, case.y0, np.ones((len(tvals), 1)))
        error = np.abs(np.concatenate([grad_out, -lambda_out]) - exact) / np.abs(exact)
        assert error[1] < rtol and error[0] < 300 * rtol, (rtol, error)
        steps.append(adj.stats()["steps_backward"])
    assert steps[0] < steps[1] <= 2.5 * steps[0]


def test_adjoint_forward_is_the_plain_solve():
    """The recording forward solve takes the same steps and outputs as Solver's."""
    case = helpers.lotka_volterra()
    solver, (y_plain,) = solve(case)
    adj = sl.AdjointSolver(case.problem, solver="ERK")
    adj.set_params_dict(case.params)
    y_out, _, _ = adj.make_output_buffers(case.tvals)
    adj.solve_forward(case.t0, case.tvals, case.y0, y_out)
    np.testing.assert_array_equal(y_out, y_plain)
    assert adj.stats()["steps"] == solver.stats()["steps"]


# -- work -----------------------------------------------------------------------------------
def test_lotka_volterra_work_against_bdf():
    """At rtol = atol = 1e-8 (measured with SUNDIALS 6.4, Dormand-Prince: 147 ERK steps
    against 410 BDF). The pair's last stage is the next step's first, so a step costs 6
    rhs evaluations, plus one per output time for the dense output and two for the first
    step size's estimate."""
    case = helpers.lotka_volterra()
    erk, _ = solve(case, rtol=1e-8, atol=1e-8)
    bdf = sl.Solver(case.problem, solver="BDF", rtol=1e-8, atol=1e-8)
    bdf.set_params_dict(case.params)
    bdf.solve(case.t0, case.tvals, case.y0, bdf.make_output_buffers(case.tvals))
    stats = erk.stats()
    assert stats["steps"] < 0.5 * bdf.stats()["steps"]
    extra = 6 * stats["error_test_fails"] + len(case.tvals) + 2
    assert 6 * stats["steps"] <= stats["rhs_evals"] <= 6 * stats["steps"] + extra


# -- determinism ---------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"sens_mode": "simultaneous"}])
def test_reused_solver_is_bit_identical_to_a_fresh_one(options):
    case = helpers.lotka_volterra()
    fresh, fresh_out = solve(case, **options)
    reused = sl.Solver(case.problem, solver="ERK", **options)
    reused.set_params_dict({**case.params, "alpha": 0.7})
    out = reused.make_output_buffers(case.tvals)
    out = out if isinstance(out, tuple) else (out,)
    reused.solve(case.t0, case.tvals + 3.0, case.y0 * 2, *out)  # another solve first
    reused.set_params_dict(case.params)
    reused.solve(case.t0, case.tvals, case.y0, *out)
    for a, b in zip(out, fresh_out):
        np.testing.assert_array_equal(a, b)
    assert reused.stats() == fresh.stats()


@pytest.mark.parametrize("backward", ["ERK", "DIRK"])
def test_reused_adjoint_is_bit_identical_to_a_fresh_one(backward):
    case = helpers.lotka_volterra()
    reused = adjoint(case, backward)
    gradients(reused, case, case.tvals * 0.5, case.y0 * 1.5, WEIGHTS_LV)
    again = gradients(reused, case, case.tvals, case.y0, WEIGHTS_LV)
    fresh = gradients(adjoint(case, backward), case, case.tvals, case.y0, WEIGHTS_LV)
    for a, b in zip(again, fresh):
        np.testing.assert_array_equal(a, b)


# -- times far from 0 -------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ERK", "DIRK"])
@pytest.mark.parametrize("t0", [0.0, 1e14, -1e14])
@pytest.mark.parametrize("a", [0.0, 0.5], ids=["decay", "forced"])
def test_far_times(t0, a, method):
    """y' = -k y + a sin(w t) against its closed form (see test_far_times.py): solve,
    sensitivities and the adjoint with both backward methods, after each forward method."""
    problem = sl.SympyProblem(params={"k": (), "a": (), "w": ()}, states={"y": ()},
                              rhs_sympy=far.forced_rhs, derivative_params=[("k",), ("a",)])
    tvals, _, (y, dk, da, dy0, _, _) = far.reference(t0, a)
    dparams, grad_y0, grad_t0, grad_tvals = far.gradient_reference(t0, a)
    solver = sl.Solver(problem, solver=method, sens_mode="simultaneous", **far.TIGHT)
    solver.set_params_dict(far.params(t0, a))
    y_out, sens_out = solver.make_output_buffers(tvals)
    solver.solve(t0, tvals, np.array([far.Y0]), y_out, sens_out)
    far.assert_relative(y_out[:, 0], y)
    for row, expected in enumerate([dk, da, dy0]):
        far.assert_relative(sens_out[:, row, 0], expected)
    for backward in ["ERK", "DIRK"]:
        adj = sl.AdjointSolver(problem, solver=method, solver_backward=backward, **far.TIGHT,
                               **far.TIGHT_BACKWARD)
        adj.set_params_dict(far.params(t0, a))
        y_out, _, _ = adj.make_output_buffers(tvals)
        adj.solve_forward(t0, tvals, np.array([far.Y0]), y_out)
        far.assert_relative(y_out[:, 0], y)
        gradients = adj.gradients(t0, tvals, np.array([far.Y0]), y_out, far.WEIGHTS[:, None])
        far.assert_relative(gradients.params, dparams)
        far.assert_relative(gradients.y0, [grad_y0])
        far.assert_relative(gradients.t0, grad_t0)
        far.assert_relative(gradients.tvals, grad_tvals)


# -- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("t0", [0.0, 1e12])
@pytest.mark.parametrize("adjoint", [False, True], ids=["solve", "adjoint"])
def test_too_much_work(adjoint, t0):
    """SolverError.t and the times in the message are t, not t - t0 (one output loop for
    solves and adjoints, so one message)."""
    case = helpers.lotka_volterra()
    solver_class = sl.AdjointSolver if adjoint else sl.Solver
    solver = solver_class(case.problem, solver="ERK", max_steps=5)
    solver.set_params_dict(case.params)
    tvals = t0 + case.tvals
    y_out = np.zeros((len(tvals), 2))
    with pytest.raises(sl.SolverError) as info:
        (solver.solve_forward if adjoint else solver.solve)(t0, tvals, case.y0, y_out)
    assert info.value.flag_name == "ARK_TOO_MUCH_WORK"
    assert t0 < info.value.t < tvals[1]
    if t0:
        assert "before t = 1000000000001" in info.value.reason
    # The outputs reached are written and right.
    assert y_out[0] == pytest.approx(case.y0)


@pytest.mark.parametrize("method", ["ERK", "DIRK"])
def test_kernel_failure_is_named(method):
    """A rhs that turns NaN: a SolverError naming the rhs kernel, not a wrong number."""
    problem = sl.SympyProblem(params={}, states={"x": ()},
                              rhs_sympy=lambda t, y, p: {"x": -1 / (y.x - 1)})
    solver = sl.Solver(problem, solver=method, max_steps=10_000, **TIGHT)
    tvals = np.array([0.0, 0.25, 1.0])
    y_out = solver.make_output_buffers(tvals)
    with pytest.raises(sl.SolverError) as info:
        solver.solve(0.0, tvals, np.array([2.0]), y_out)
    assert info.value.flag_name.startswith("ARK_")
    assert y_out[1, 0] == pytest.approx(1 + np.sqrt(0.5), rel=1e-7)


def test_failure_before_the_first_step():
    """atol = 0 at y0 = 0 has no error weight: a SolverError at t0 (the diagnosis reads
    the state there, before ARKODE's interpolant exists), and the solver works after it."""
    case = helpers.exponential_decay()
    solver = sl.Solver(case.problem, solver="ERK", atol=0.0)
    solver.set_params_dict(case.params)
    y_out = solver.make_output_buffers(case.tvals)
    with pytest.raises(sl.SolverError) as info:
        solver.solve(case.t0, case.tvals, np.zeros(1), y_out)
    assert info.value.flag_name == "ARK_ILL_INPUT" and info.value.t == case.t0
    solver.solve(case.t0, case.tvals, case.y0, y_out)
    np.testing.assert_allclose(y_out, case.reference, rtol=1e-6)


def test_backward_failure_then_reuse():
    case = helpers.lotka_volterra()
    adj = adjoint(case, "ERK", max_steps_backward=3)
    with pytest.raises(sl.SolverError) as info:
        gradients(adj, case, case.tvals, case.y0, WEIGHTS_LV)
    assert info.value.flag_name == "ARK_TOO_MUCH_WORK" and info.value.problem == "backward"
    y_out, _, _ = gradients(adjoint(case, "ERK"), case, case.tvals[:2], case.y0, WEIGHTS_LV[:2])
    adj.solve_forward(case.t0, case.tvals[:2], case.y0, y_out)  # the failed one, reused
    np.testing.assert_allclose(y_out, case.reference[:2], rtol=1e-7)


def test_output_at_t0_only():
    """tvals = [t0]: no step; y = y0, dL/dy0 = grads[0] (lambda = -grads[0]), dL/dp = 0."""
    case = helpers.lotka_volterra()
    tvals, grads = case.tvals[:1], np.array([[0.5, -2.0]])
    y_out, grad_out, lambda_out = gradients(adjoint(case, "ERK"), case, tvals, case.y0, grads)
    np.testing.assert_array_equal(y_out[0], case.y0)
    np.testing.assert_array_equal(lambda_out, -grads[0])
    np.testing.assert_array_equal(grad_out, np.zeros(4))


@pytest.mark.parametrize("solver_class, options, named", [
    (sl.Solver, {"linear_solver": "dense"}, "linear_solver"),
    (sl.Solver, {"bandwidths": (1, 1)}, "bandwidths"),
    (sl.Solver, {"constraints": 1}, "constraints"),
    (sl.Solver, {"sens_mode": "staggered"}, "sens_mode"),
    (sl.AdjointSolver, {"interpolation": "hermite"}, "interpolation"),
    (sl.AdjointSolver, {"checkpoint_steps": 100}, "checkpoint_steps"),
    (sl.AdjointSolver, {"solver_backward": "BDF"}, "solver_backward"),
    (sl.AdjointSolver, {"solver_backward": "ADAMS"}, "solver_backward"),
])
def test_options_that_do_not_apply(solver_class, options, named):
    with pytest.raises(ValueError, match=f"`{named}="):
        solver_class(helpers.lotka_volterra_problem(), solver="ERK", **options)


# -- memory ---------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [
    {}, {"sens_mode": "simultaneous"}, {"solver": "DIRK"}, {"solver": "DIRK", "sens_mode": "simultaneous"},
    {"solver": "DIRK", "linear_solver": "spgmr"},
    {"solver": "DIRK", "linear_solver": "band", "sens_mode": "simultaneous"}])
def test_solves_and_solvers_do_not_grow_memory(memory, options):
    """ERK's and DIRK's (with the linear solvers, and the block solver of the sensitivities)."""
    case = helpers.exponential_decay()
    options = {"solver": "ERK", **options}
    kept, _ = solve(case, **options)
    failing = sl.Solver(case.problem, max_steps=1, **options)
    failing.set_params_dict(case.params)

    def run(n):
        for k in range(n):
            solver = kept if k % 10 else solve(case, **options)[0]
            out = solver.make_output_buffers(case.tvals)
            out = out if isinstance(out, tuple) else (out,)
            solver.solve(case.t0, case.tvals, case.y0, *out)
            try:  # the error path allocates flag names and messages
                failing.solve(case.t0, case.tvals, case.y0, *out)
            except sl.SolverError:
                pass

    helpers.assert_no_memory_growth(memory, run, 50, 500)


@pytest.mark.parametrize("backward", ["ERK", "DIRK"])
def test_adjoint_solves_and_solvers_do_not_grow_memory(memory, backward):
    case = helpers.exponential_decay()
    grads = np.ones((len(case.tvals), 1))
    kept = adjoint(case, backward)

    def run(n):
        for k in range(n):
            adj = kept if k % 10 else adjoint(case, backward)
            _, _, lambda_out = gradients(adj, case, case.tvals, case.y0, grads)
        # L = sum_i y(t_i) with y = y0 exp(-k t): dL/dy0 = sum_i exp(-k t_i)
        expected = np.exp(-case.params["k"] * case.tvals).sum()
        assert -lambda_out[0] == pytest.approx(expected, rel=1e-6)

    helpers.assert_no_memory_growth(memory, run, 50, 500)
