"""solver="DIRK": forward solves, forward sensitivities and adjoints by ARKODE's ESDIRK
(csrc/sl_arkode.c) with Newton's method, against closed forms, the Bari test set's
references, CVODES' forward sensitivities and finite differences; every linear solver,
determinism, errors (kernel failures and memory: in test_erk.py, for both methods)."""

import numpy as np
import pytest

import helpers
import sunode_like as sl
from sunode_like.examples import test_set

LINEAR_SOLVERS = ["dense", "band", "spgmr"] + (["sparse"] if sl._sundials.lib.SL_HAVE_KLU else [])


def pollu():
    p = test_set.pollu()
    return helpers.Case(p.problem, {"k": p.params}, p.y0, 0.0, np.array([p.t_end]), p.reference[None])


def solve(case, **options):
    solver = sl.Solver(case.problem, solver="DIRK", **options)
    solver.set_params_dict(case.params)
    out = solver.make_output_buffers(case.tvals)
    out = out if isinstance(out, tuple) else (out,)
    solver.solve(case.t0, case.tvals, case.y0, *out)
    return solver, out


# -- accuracy -------------------------------------------------------------------------------
@pytest.mark.parametrize("factory", [helpers.exponential_decay, helpers.harmonic_oscillator,
                                     helpers.linear_system])
def test_closed_forms(factory):
    """The global error in units of the local tolerance (normalised error, measured with
    SUNDIALS 6.4: decay 0.84, linear system 1.95, the oscillator 33, 68 with 7.5: over its
    2 periods the local errors of an oscillation add up rather than decay)."""
    case = factory()
    _, (y_out,) = solve(case, rtol=1e-10, atol=1e-10)
    assert helpers.normalised_error(y_out, case.reference, rtol=1e-10, atol=1e-10) < 100


@pytest.mark.parametrize("factory, measured", [(helpers.robertson, 4.4e-9), (helpers.hires, 7.3e-10),
                                               (pollu, 5.0e-11)])
def test_test_set_to_eight_digits(factory, measured):
    """ROBER (y at 40 and 1e11), HIRES and POLLU at rtol = 1e-10 (atol far below the
    smallest component, see test_cvodes.test_robertson_reference) against the test set's
    RADAU5 references: 8 significant digits in every component."""
    case = factory()
    _, (y_out,) = solve(case, rtol=1e-10, atol=1e-18)
    assert helpers.relative_error(y_out, case.reference) < 1e-8


@pytest.mark.parametrize("linear_solver", LINEAR_SOLVERS)
def test_linear_solvers_agree_on_robertson(linear_solver):
    case = helpers.robertson()
    _, (y_out,) = solve(case, linear_solver=linear_solver, rtol=1e-8, atol=1e-14)
    assert helpers.relative_error(y_out[1:], case.reference[1:]) < 1e-5  # dense: 1.4e-7
    _, (dense,) = solve(case, rtol=1e-8, atol=1e-14)
    assert helpers.relative_error(y_out, dense) < 1e-5


def test_dense_output_between_steps():
    """Many outputs on Robertson: the dense output at each against BDF at rtol = 1e-12."""
    case = helpers.robertson()
    case.tvals = np.geomspace(1e-4, 1e5, 40)
    bdf = sl.Solver(case.problem, rtol=1e-12, atol=1e-20)
    bdf.set_params_dict(case.params)
    reference = bdf.make_output_buffers(case.tvals)
    bdf.solve(0.0, case.tvals, case.y0, reference)
    _, (y_out,) = solve(case, rtol=1e-8, atol=1e-14)
    assert helpers.normalised_error(y_out, reference, rtol=1e-8, atol=1e-14) < 100


# -- gradients ------------------------------------------------------------------------------
def cvodes_gradient(case, weights):
    """dL/d(derivative params, y0) for L = sum weights * y(tvals), from CVODES' forward
    sensitivities at rtol = 1e-12."""
    solver = sl.Solver(case.problem, sens_mode="simultaneous", rtol=1e-12, atol=1e-16)
    solver.set_params_dict(case.params)
    y_out, sens_out = solver.make_output_buffers(case.tvals)
    solver.solve(case.t0, case.tvals, case.y0, y_out, sens_out)
    return np.einsum("tj,tkj->k", weights, sens_out)


def robertson_short():
    case = helpers.robertson()
    case.tvals = np.array([1.0, 10.0, 40.0])
    return case


@pytest.mark.parametrize("factory, atol", [(helpers.lotka_volterra, 1e-10), (robertson_short, 1e-14)])
def test_forward_sensitivities(factory, atol):
    case = factory()
    weights = np.linspace(-1.0, 1.5, case.tvals.size * case.y0.size).reshape(case.tvals.size, -1)
    _, (y_out, sens_out) = solve(case, sens_mode="simultaneous", rtol=1e-10, atol=atol)
    gradient = np.einsum("tj,tkj->k", weights, sens_out)
    np.testing.assert_allclose(gradient, cvodes_gradient(case, weights), rtol=1e-6)


@pytest.mark.parametrize("factory, atol", [(helpers.lotka_volterra, 1e-10), (robertson_short, 1e-14)])
@pytest.mark.parametrize("backward", ["DIRK", "ERK"])
def test_adjoint_gradients(factory, atol, backward):
    """DIRK forward with each one-step backward (ERK only where the adjoint is not stiff)."""
    case = factory()
    if backward == "ERK" and factory is robertson_short:
        pytest.skip("Robertson's adjoint is stiff")
    weights = np.linspace(-1.0, 1.5, case.tvals.size * case.y0.size).reshape(case.tvals.size, -1)
    adj = sl.AdjointSolver(case.problem, solver="DIRK", solver_backward=backward, rtol=1e-10, atol=atol)
    adj.set_params_dict(case.params)
    y_out, grad_out, lambda_out = adj.make_output_buffers(case.tvals)
    adj.solve_forward(case.t0, case.tvals, case.y0, y_out)
    adj.solve_backward(case.tvals[-1], case.t0, case.tvals, weights, grad_out, lambda_out)
    np.testing.assert_allclose(np.concatenate([grad_out, -lambda_out]), cvodes_gradient(case, weights),
                               rtol=1e-6)


def test_lotka_volterra_against_finite_differences():
    """d(sum y(tvals)) / d alpha by DIRK's sensitivities against central differences of
    DIRK solves at rtol = 1e-12 (step 1e-4 relative)."""
    case = helpers.lotka_volterra()
    _, (_, sens_out) = solve(case, sens_mode="simultaneous", rtol=1e-11, atol=1e-11)

    def loss(alpha):
        params = {**case.params, "alpha": alpha}
        solver = sl.Solver(case.problem, solver="DIRK", rtol=1e-12, atol=1e-12)
        solver.set_params_dict(params)
        y_out = solver.make_output_buffers(case.tvals)
        solver.solve(case.t0, case.tvals, case.y0, y_out)
        return y_out.sum()

    h = 1e-4 * case.params["alpha"]
    difference = (loss(case.params["alpha"] + h) - loss(case.params["alpha"] - h)) / (2 * h)
    assert difference == pytest.approx(sens_out[:, 0, :].sum(), rel=1e-6)


def pollu_outputs():
    case = pollu()
    case.tvals = np.linspace(0.5, 60.0, 8)
    return case


def test_pollu_gradients():
    """POLLU's dL/dk (25 rate constants) for L = sum of y at 8 output times, at rtol = 1e-8:
    DIRK's forward sensitivities and its DIRK adjoint against CVODES' sensitivities at
    1e-12, relative to the largest entry (measured 1.7e-9 and 7.3e-7; the small entries'
    own relative errors are larger, down where atol_backward ends the adjoint's accuracy)."""
    case = pollu_outputs()
    weights = np.ones((case.tvals.size, case.y0.size))
    reference = cvodes_gradient(case, weights)
    options = dict(rtol=1e-8, atol=1e-12)
    _, (_, sens_out) = solve(case, sens_mode="simultaneous", sens_y0=False, **options)
    gradient = np.einsum("tj,tkj->k", weights, sens_out)
    scale = np.abs(reference[:25]).max()
    assert np.max(np.abs(gradient - reference[:25])) < 1e-7 * scale
    adj = sl.AdjointSolver(case.problem, solver="DIRK", **options)
    adj.set_params_dict(case.params)
    y_out, grad_out, lambda_out = adj.make_output_buffers(case.tvals)
    adj.solve_forward(case.t0, case.tvals, case.y0, y_out)
    adj.solve_backward(case.tvals[-1], case.t0, case.tvals, weights, grad_out, lambda_out)
    assert np.max(np.abs(grad_out - reference[:25])) < 3e-6 * scale


@pytest.mark.parametrize("factory, entry", [(robertson_short, ("k1", None)), (pollu_outputs, ("k", 0))])
def test_sensitivities_against_finite_differences(factory, entry):
    """dL / d(one rate constant), L = sum_i w . y(tvals[i]) (w unequal: Robertson conserves
    the plain sum), from DIRK's sensitivities at rtol = 1e-10 against central differences of
    DIRK solves at rtol = 1e-12 (step 1e-4 relative). Measured 4e-10 (Robertson) and 4e-9
    (POLLU) apart."""
    case = factory()
    w = np.linspace(1.0, 2.0, case.y0.size)
    name, index = entry
    solver, (_, sens_out) = solve(case, sens_mode="simultaneous", sens_y0=False, rtol=1e-10, atol=1e-16)
    k = list(case.params).index(name) if index is None else index

    def loss(step):
        params = {key: np.array(value, dtype=float) for key, value in case.params.items()}
        if index is None:
            params[name] = params[name] + step
        else:
            params[name][index] += step
        solver = sl.Solver(case.problem, solver="DIRK", rtol=1e-12, atol=1e-18)
        solver.set_params_dict(params)
        y_out = solver.make_output_buffers(case.tvals)
        solver.solve(case.t0, case.tvals, case.y0, y_out)
        return (y_out @ w).sum()

    value = case.params[name] if index is None else case.params[name][index]
    h = 1e-4 * value
    difference = (loss(h) - loss(-h)) / (2 * h)
    assert difference == pytest.approx((sens_out[:, k, :] @ w).sum(), rel=1e-5)


# -- determinism, errors --------------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"sens_mode": "simultaneous"}])
def test_reused_solver_is_bit_identical_to_a_fresh_one(options):
    case = robertson_short()
    fresh, fresh_out = solve(case, **options)
    reused = sl.Solver(case.problem, solver="DIRK", **options)
    reused.set_params_dict({**case.params, "k1": 0.05})
    out = reused.make_output_buffers(case.tvals)
    out = out if isinstance(out, tuple) else (out,)
    reused.solve(case.t0, case.tvals * 3, case.y0, *out)  # another solve first
    reused.set_params_dict(case.params)
    reused.solve(case.t0, case.tvals, case.y0, *out)
    for a, b in zip(out, fresh_out):
        np.testing.assert_array_equal(a, b)
    assert reused.stats() == fresh.stats()


def test_too_much_work_is_an_error():
    case = helpers.robertson()
    solver = sl.Solver(case.problem, solver="DIRK", max_steps=20)
    solver.set_params_dict(case.params)
    with pytest.raises(sl.SolverError) as info:
        solver.solve(case.t0, case.tvals, case.y0, solver.make_output_buffers(case.tvals))
    assert info.value.flag_name == "ARK_TOO_MUCH_WORK"


@pytest.mark.parametrize("options, named", [({"constraints": 1}, "constraints"),
                                            ({"sens_mode": "staggered"}, "sens_mode"),
                                            ({"erk_table": "dormand_prince"}, "erk_table")])
def test_options_that_do_not_apply(options, named):
    with pytest.raises(ValueError, match=f"`{named}="):
        sl.Solver(helpers.robertson().problem, solver="DIRK", **options)
