"""Scheduled doses (boluses and zero-order infusions) against closed forms.

One compartment with first-order absorption: gut' = -ka gut, central' = ka gut - CL/V central
(amounts). A bolus D at tau into the gut gives the Bateman function
central(t) = D ka / (ka - ke) (exp(-ke s) - exp(-ka s)), s = t - tau > 0, ke = CL / V, and
several doses superpose. An infusion at rate r into the central compartment over [tau, e)
gives central = r / ke (1 - exp(-ke (t - tau))) there, decaying with ke afterwards. The
closed forms' derivatives are taken by complex step (exact to rounding). Each forward method
takes doses: CVODES' BDF restarts at each, ARKODE's one-step methods (ERK, DIRK, and the
default "auto", which solves these models by ERK) stop exactly there and go on.
"""
import numpy as np
import pytest

import sunode_like as sl
from sunode_like import Doses, SolverError

from helpers import jvp_graph

KA, CL, V = 1.3, 2.0, 10.0
TAUS = np.array([0.0, 6.0, 12.0, 12.0, 18.5])
AMOUNTS = np.array([100.0, 80.0, 50.0, 30.0, 100.0])
TVALS = np.linspace(0.0, 30.0, 61)  # 6, 12 and 18.5 are output times too (pre-dose samples)
Y0 = np.zeros(2)
TIGHT = dict(rtol=1e-11, atol=1e-11)
FORWARD = ["BDF", "ERK", "DIRK"]


def one_compartment(t, y, p):
    return {"gut": -p.ka * y.gut, "central": p.ka * y.gut - p.CL / p.V * y.central}


PROBLEM = sl.SympyProblem(params={"ka": (), "CL": (), "V": ()}, states={"gut": (), "central": ()},
                          rhs_sympy=one_compartment)
PARAMS = {"ka": KA, "CL": CL, "V": V}


def bateman(t, ka, cl, v, taus, amounts):
    """(gut, central) amounts at t after boluses into the gut; before-dose at a dose time."""
    ke = cl / v
    gut = central = 0.0 * t * ka * ke
    for tau, d in zip(taus, amounts):
        s = t - tau
        on = np.real(s) > 0  # complex-step safe; at s = 0 pre-dose (moving the dose later)
        s = np.where(on, s, 0.0)
        gut = gut + np.where(on, d * np.exp(-ka * s), 0.0)
        central = central + np.where(on, d * ka / (ka - ke) * (np.exp(-ke * s) - np.exp(-ka * s)), 0.0)
    return np.stack([gut, central], axis=-1)


def infusion(t, ke, tau, amount, rate):
    """central amount after an infusion into the (empty) central compartment."""
    end = tau + amount / rate
    inside = np.where(np.real(t - tau) <= 0, tau, np.where(np.real(t - end) >= 0, end, t))
    after = np.where(np.real(t - end) > 0, t - end, 0.0)
    during = rate / ke * (1 - np.exp(-ke * (inside - tau)))
    return during * np.exp(-ke * after)


def complex_step(f, x, h=1e-30):
    return np.imag(f(x + 1j * h)) / h


def solver(**options):
    s = sl.Solver(PROBLEM, **{**TIGHT, **options})
    s.set_params_dict(PARAMS)
    return s


@pytest.mark.parametrize("method", FORWARD)
def test_boluses_match_the_superposed_bateman_functions(method):
    s = solver(solver=method)
    y_out = s.make_output_buffers(TVALS)
    s.solve(0.0, TVALS, Y0, y_out, doses=Doses(TAUS, AMOUNTS, "gut"))
    exact = bateman(TVALS, KA, CL, V, TAUS, AMOUNTS)
    np.testing.assert_allclose(y_out, exact, rtol=0, atol=1e-8 * AMOUNTS.sum())
    # Pre-dose samples: at 6 and 18.5 the state before the dose; y(t0) = y0 with a dose at t0.
    np.testing.assert_array_equal(y_out[0], Y0)
    i = int(np.flatnonzero(TVALS == 18.5)[0])
    assert y_out[i, 0] == pytest.approx(bateman(18.5, KA, CL, V, TAUS[:4], AMOUNTS[:4])[0], rel=1e-8)


@pytest.mark.parametrize("method", FORWARD)
def test_forward_sensitivities_across_boluses_match_the_closed_form(method):
    s = solver(solver=method, sens_mode="simultaneous")
    y_out, sens_out = s.make_output_buffers(TVALS)
    s.solve(0.0, TVALS, Y0, y_out, sens_out, doses=Doses(TAUS, AMOUNTS, "gut"))
    exact = [complex_step(lambda ka: bateman(TVALS, ka, CL, V, TAUS, AMOUNTS), KA),
             complex_step(lambda cl: bateman(TVALS, KA, cl, V, TAUS, AMOUNTS), CL),
             complex_step(lambda v: bateman(TVALS, KA, CL, v, TAUS, AMOUNTS), V)]
    for k, d in enumerate(exact):
        np.testing.assert_allclose(sens_out[:, k], d, rtol=0, atol=1e-7 * np.abs(d).max())
    # dy/dy0: y0 = (gut0, 0) decays as a dose at t0 would, so d central / d gut0 is the
    # Bateman function of a unit dose.
    unit = bateman(TVALS, KA, CL, V, [0.0], [1.0])
    np.testing.assert_allclose(sens_out[1:, 3], unit[1:], rtol=0, atol=1e-8)


@pytest.mark.parametrize("method", FORWARD)
def test_infusion_matches_its_closed_form(method):
    ke = CL / V
    s = solver(solver=method, sens_mode="simultaneous")
    y_out, sens_out = s.make_output_buffers(TVALS)
    s.solve(0.0, TVALS, Y0, y_out, sens_out, doses=Doses(2.0, 50.0, "central", rate=8.0))
    np.testing.assert_allclose(y_out[:, 1], infusion(TVALS, ke, 2.0, 50.0, 8.0), rtol=0, atol=1e-8)
    np.testing.assert_array_equal(y_out[:, 0], 0.0)
    # d central / d CL and / d V through ke = CL / V.
    d_cl = complex_step(lambda cl: infusion(TVALS, cl / V, 2.0, 50.0, 8.0), CL)
    d_v = complex_step(lambda v: infusion(TVALS, CL / v, 2.0, 50.0, 8.0), V)
    np.testing.assert_allclose(sens_out[:, 1, 1], d_cl, rtol=0, atol=1e-7 * np.abs(d_cl).max())
    np.testing.assert_allclose(sens_out[:, 2, 1], d_v, rtol=0, atol=1e-7 * np.abs(d_v).max())


@pytest.mark.parametrize("method", FORWARD)
def test_an_infusion_may_end_after_the_last_output(method):
    s = solver(solver=method)
    y_out = s.make_output_buffers(TVALS)
    s.solve(0.0, TVALS, Y0, y_out, doses=Doses([25.0], [100.0], ["central"], rate=[4.0]))
    np.testing.assert_allclose(y_out[:, 1], infusion(TVALS, CL / V, 25.0, 100.0, 4.0), rtol=0, atol=1e-9)


@pytest.mark.parametrize("method", FORWARD)
def test_no_doses_is_bit_identical_to_a_plain_solve(method):
    s = solver(solver=method, sens_mode="simultaneous")
    y0 = np.array([100.0, 0.0])
    plain, plain_sens = s.make_output_buffers(TVALS)
    s.solve(0.0, TVALS, y0, plain, plain_sens)
    empty, empty_sens = s.make_output_buffers(TVALS)
    s.solve(0.0, TVALS, y0, empty, empty_sens, doses=Doses([], [], []))
    np.testing.assert_array_equal(plain, empty)
    np.testing.assert_array_equal(plain_sens, empty_sens)


@pytest.mark.parametrize("method", FORWARD)
def test_a_dose_costs_a_restart(method):
    s = solver(solver=method)
    y_out = s.make_output_buffers(TVALS)
    s.solve(0.0, TVALS, np.array([100.0, 0.0]), y_out)
    plain = s.stats()["steps"]
    s.solve(0.0, TVALS, Y0, y_out, doses=Doses([0.0, 15.0], [100.0, 100.0], "gut"))
    two = s.stats()["steps"]
    # The counters add up over the restarts: a second dose is about a second solve.
    assert plain < two < 3 * plain


@pytest.mark.parametrize("doses, match", [
    (Doses([1.0, 0.5], 1.0, "gut"), r"doses.time. must be sorted.*time\[0\]=1.0 > time\[1\]=0.5"),
    (Doses([-1.0], 1.0, "gut"), r"doses.time\[0\]=-1.0. is outside the solve"),
    (Doses([31.0], 1.0, "gut"), r"doses.time\[0\]=31.0. is outside"),
    (Doses([np.nan], 1.0, "gut"), r"doses.time\[0\]=nan. must be finite"),
    (Doses([1.0], [-2.0], "gut"), r"doses.amount\[0\]=-2.0. is negative"),
    (Doses([1.0], [2.0], "gut", rate=-1.0), r"doses.rate\[0\]=-1.0. is negative"),
    (Doses([1.0], [np.inf], "gut"), r"doses.amount\[0\]=inf. must be finite"),
    (Doses([1.0], [1.0], "liver"), r"unknown states \['liver'\]; expected names of \['gut', 'central'\]"),
])
def test_bad_doses_are_value_errors_naming_the_entry(doses, match):
    s = solver()
    y_out = s.make_output_buffers(TVALS)
    with pytest.raises(ValueError, match=match):
        s.solve(0.0, TVALS, Y0, y_out, doses=doses)


def test_doses_shapes_and_types_are_checked():
    with pytest.raises(ValueError, match="equal lengths"):
        Doses([1.0, 2.0], [1.0, 2.0, 3.0], "gut")
    with pytest.raises(TypeError, match=r"doses.state\[0\]. must be a state name"):
        Doses([1.0], [1.0], [0])


def test_doses_name_entries_of_shaped_states():
    def chain(t, y, p):
        return {"x": [-p.k * y.x[0], p.k * y.x[0] - p.k * y.x[1]]}

    problem = sl.SympyProblem(params={"k": ()}, states={"x": (2,)}, rhs_sympy=chain)
    s = sl.Solver(problem, **TIGHT)
    s.set_params_dict({"k": 0.5})
    tvals = np.array([1.0, 3.0])
    y_out = s.make_output_buffers(tvals)
    s.solve(0.0, tvals, np.zeros(2), y_out, doses=Doses([1.0], [2.0], "x[1]"))
    np.testing.assert_allclose(y_out[:, 1], [0.0, 2.0 * np.exp(-1.0)], rtol=1e-9)
    with pytest.raises(ValueError, match=r"unknown states \['x'\]; expected names of \['x\[0\]', 'x\[1\]'\]"):
        s.solve(0.0, tvals, np.zeros(2), y_out, doses=Doses([1.0], [2.0], "x"))


def bound(t, y, p):
    """one_compartment with a fast reversible binding of the central amount (rate 1e6 / h):
    stiff, so that solver="auto" gives the explicit attempt up."""
    free = p.ka * y.gut - p.CL / p.V * y.central - 1e6 * (y.central - y.bound)
    return {"gut": -p.ka * y.gut, "central": free, "bound": 1e6 * (y.central - y.bound)}


BOUND = sl.SympyProblem(params={"ka": (), "CL": (), "V": ()},
                        states={"gut": (), "central": (), "bound": ()}, rhs_sympy=bound)


@pytest.mark.parametrize("problem, method, same", [(PROBLEM, "ERK", "ERK"), (BOUND, "BDF", "DIRK")],
                         ids=["non-stiff", "stiff"])
def test_auto_with_doses_is_the_method_it_picks(problem, method, same):
    """solver="auto" (the default) with doses: ERK's solve and gradients on a non-stiff model,
    BDF's with the DIRK backward on a stiff one, bit for bit."""
    doses = Doses(TAUS, AMOUNTS, "gut")
    y0 = np.zeros(problem.n_states)
    weights = np.concatenate([W, W[:, 1:]], axis=1)[:, :problem.n_states]
    results = []
    for options in ({"solver": "auto"}, {"solver": method, "solver_backward": same}):
        adj = sl.AdjointSolver(problem, **TIGHT, **options)
        adj.set_params_dict(PARAMS)
        y_out, grad_out, lambda_out = adj.make_output_buffers(TVALS)
        adj.solve_forward(0.0, TVALS, y0, y_out, doses=doses)
        dose_grads = np.zeros((3, len(TAUS)))
        adj.solve_backward(TVALS[-1], 0.0, TVALS, weights, grad_out, lambda_out, dose_grads_out=dose_grads)
        assert adj.method_used() == method
        results.append((y_out, grad_out, lambda_out, dose_grads))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_c_layer_refuses_bad_doses_without_solving():
    from sunode_like._doses import c_doses

    s = solver(solver="BDF")
    y_out = s.make_output_buffers(TVALS)
    values = (np.array([2.0, 1.0]), np.ones(2), np.zeros(2), np.zeros(2, dtype=np.int64))
    flag = sl._cvodes.lib.sl_cvodes_solve_doses(s._ptr, 0.0, sl._cvodes.ptr(Y0), sl._cvodes.ffi.NULL,
                                                len(TVALS), sl._cvodes.ptr(TVALS), c_doses(values),
                                                sl._cvodes.ptr(y_out), sl._cvodes.ffi.NULL)
    assert flag != 0
    with pytest.raises(SolverError, match="dose times are not sorted"):
        s._raise(flag)


# -- adjoint -------------------------------------------------------------------------------
# L = sum_i W[i] . y(tvals[i]): grads[i] = W[i].
W = np.stack([np.cos(TVALS), 1.0 + np.sin(0.3 * TVALS)], axis=1)


def adjoint(backward, **options):
    adj = sl.AdjointSolver(PROBLEM, solver_backward=backward, **{**TIGHT, **options})
    adj.set_params_dict(PARAMS)
    return adj


def bolus_loss(ka=KA, cl=CL, v=V, taus=TAUS, amounts=AMOUNTS):
    return np.sum(W * bateman(TVALS, ka, cl, v, taus, amounts))


def unit(k, n, dtype=complex):
    e = np.zeros(n, dtype=dtype)
    e[k] = 1.0
    return e


@pytest.mark.parametrize("method", FORWARD)
@pytest.mark.parametrize("backward", ["ERK", "DIRK"])
def test_adjoint_dose_gradients_match_the_closed_form(backward, method):
    adj = adjoint(backward, solver=method)
    y_out = adj.make_output_buffers(TVALS)[0]
    adj.solve_forward(0.0, TVALS, Y0, y_out, doses=Doses(TAUS, AMOUNTS, "gut"))
    g = adj.gradients(0.0, TVALS, Y0, y_out, W)
    scale = np.abs(W).sum() * AMOUNTS.max()
    exact_params = [complex_step(lambda ka: bolus_loss(ka=ka), KA),
                    complex_step(lambda cl: bolus_loss(cl=cl), CL),
                    complex_step(lambda v: bolus_loss(v=v), V)]
    np.testing.assert_allclose(g.params, exact_params, rtol=0, atol=1e-8 * scale)
    n = len(TAUS)
    d_amount = [complex_step(lambda h: bolus_loss(amounts=AMOUNTS + h * unit(k, n)), 0.0) for k in range(n)]
    d_time = [complex_step(lambda h: bolus_loss(taus=TAUS + h * unit(k, n)), 0.0) for k in range(n)]
    np.testing.assert_allclose(g.dose_amount, d_amount, rtol=0, atol=1e-8 * np.abs(W).sum())
    np.testing.assert_allclose(g.dose_time, d_time, rtol=0, atol=1e-8 * scale)
    assert np.isnan(g.dose_rate).all()  # a bolus's rate has no derivative
    # y0 = (gut0, central0): a gut0 is a dose at t0 (whose output at t0 is pre-dose).
    d_gut0 = d_amount[0] + W[0, 0]
    assert g.y0[0] == pytest.approx(d_gut0, rel=1e-8)


def infusion_loss(ke=CL / V, tau=2.0, amount=50.0, rate=8.0, weights=W[:, 1]):
    return np.sum(weights * infusion(TVALS, ke, tau, amount, rate))


@pytest.mark.parametrize("backward", ["ERK", "DIRK"])
@pytest.mark.parametrize("tau, amount, rate", [(2.0, 50.0, 8.0), (3.3, 40.0, 2.0), (24.0, 90.0, 6.0)],
                         ids=["ends-at-an-output", "ends-between", "ends-after-the-last-output"])
@pytest.mark.parametrize("method", FORWARD)
def test_adjoint_infusion_gradients_match_the_closed_form(backward, tau, amount, rate, method):
    adj = adjoint(backward, solver=method)
    y_out = adj.make_output_buffers(TVALS)[0]
    adj.solve_forward(0.0, TVALS, Y0, y_out, doses=Doses(tau, amount, "central", rate=rate))
    g = adj.gradients(0.0, TVALS, Y0, y_out, W)
    args = dict(tau=tau, amount=amount, rate=rate)
    exact = [complex_step(lambda x: infusion_loss(**{**args, name: x}), args[name])
             for name in ("tau", "amount", "rate")]
    np.testing.assert_allclose([g.dose_time[0], g.dose_amount[0], g.dose_rate[0]], exact,
                               rtol=1e-8, atol=1e-9 * np.abs(W).sum())
    d_cl = complex_step(lambda cl: infusion_loss(ke=cl / V, **args), CL)
    assert g.params[1] == pytest.approx(d_cl, rel=1e-8)
    # dL/dtvals[i] = grads[i] . y'(tvals[i]), y' with the infusion's rate (the one on just
    # before an output at its start or end).
    d_tvals = W[:, 1] * complex_step(lambda t: infusion(t, CL / V, tau, amount, rate), TVALS)
    np.testing.assert_allclose(g.tvals, d_tvals, rtol=1e-7, atol=1e-9 * np.abs(d_tvals).max())


@pytest.mark.parametrize("method", FORWARD)
@pytest.mark.parametrize("backward", ["ERK", "DIRK"])
def test_adjoint_equals_forward_sensitivities_across_doses(backward, method):
    doses = Doses([0.0, 5.0, 5.0, 9.0], [60.0, 40.0, 30.0, 20.0], ["gut", "gut", "central", "central"],
                  rate=[0.0, 0.0, 10.0, 0.0])
    y0 = np.array([3.0, 1.0])
    s = solver(solver=method, sens_mode="simultaneous")
    y_sens, sens_out = s.make_output_buffers(TVALS)
    s.solve(0.0, TVALS, y0, y_sens, sens_out, doses=doses)
    adj = adjoint(backward, solver=method)
    y_out = adj.make_output_buffers(TVALS)[0]
    adj.solve_forward(0.0, TVALS, y0, y_out, doses=doses)
    np.testing.assert_allclose(y_out, y_sens, rtol=1e-8, atol=1e-8)
    g = adj.gradients(0.0, TVALS, y0, y_out, W)
    forward = np.einsum("tj,tkj->k", W, sens_out)
    np.testing.assert_allclose(np.concatenate([g.params, g.y0]), forward, rtol=1e-7)


@pytest.mark.parametrize("method", FORWARD)
def test_forward_sensitivities_wrt_bolus_times_and_amounts_match_the_closed_form(method):
    n = len(TAUS)
    s = solver(solver=method, sens_mode="simultaneous", sens_doses=n)
    y_out, sens_out = s.make_output_buffers(TVALS)
    s.solve(0.0, TVALS, Y0, y_out, sens_out, doses=Doses(TAUS, AMOUNTS, "gut"))
    rows = sens_out[:, 5:].reshape(len(TVALS), n, 3, 2)  # after (ka, CL, V, gut0, central0)
    for k in range(n):
        d_time = complex_step(lambda h: bateman(TVALS, KA, CL, V, TAUS + h * unit(k, n), AMOUNTS), 0.0)
        d_amount = complex_step(lambda h: bateman(TVALS, KA, CL, V, TAUS, AMOUNTS + h * unit(k, n)), 0.0)
        np.testing.assert_allclose(rows[:, k, 0], d_time, rtol=0, atol=1e-7 * AMOUNTS.max(), err_msg=k)
        np.testing.assert_allclose(rows[:, k, 1], d_amount, rtol=0, atol=1e-8, err_msg=k)
        assert np.isnan(rows[:, k, 2]).all()  # a bolus's rate has no derivative
    # The params' and y0's rows are those of a solver without sensitivities wrt doses.
    plain = solver(solver=method, sens_mode="simultaneous")
    y_plain, sens_plain = plain.make_output_buffers(TVALS)
    plain.solve(0.0, TVALS, Y0, y_plain, sens_plain, doses=Doses(TAUS, AMOUNTS, "gut"))
    np.testing.assert_allclose(sens_out[:, :5], sens_plain, rtol=1e-7, atol=1e-7 * AMOUNTS.max())


@pytest.mark.parametrize("tau, amount, rate", [(2.0, 50.0, 8.0), (3.3, 40.0, 2.0), (24.0, 90.0, 6.0)],
                         ids=["ends-at-an-output", "ends-between", "ends-after-the-last-output"])
@pytest.mark.parametrize("method", FORWARD)
def test_forward_sensitivities_wrt_an_infusion_match_the_closed_form(tau, amount, rate, method):
    s = solver(solver=method, sens_mode="simultaneous", sens_doses=1)
    y_out, sens_out = s.make_output_buffers(TVALS)
    s.solve(0.0, TVALS, Y0, y_out, sens_out, doses=Doses(tau, amount, "central", rate=rate))
    args = dict(tau=tau, amount=amount, rate=rate)
    for k, name in enumerate(("tau", "amount", "rate")):
        exact = complex_step(lambda x: infusion(TVALS, CL / V, **{**args, name: x}), args[name])
        np.testing.assert_allclose(sens_out[:, 5 + k, 1], exact, rtol=0,
                                   atol=1e-8 * np.abs(exact).max(), err_msg=name)
        np.testing.assert_array_equal(sens_out[:, 5 + k, 0], 0.0)


@pytest.mark.parametrize("method", FORWARD)
@pytest.mark.parametrize("backward", ["ERK", "DIRK"])
def test_forward_dose_sensitivities_equal_the_adjoints_dose_gradients(backward, method):
    """On the nonlinear model (f(y-) - f(y+) matters) with ties, infusions and boluses."""
    n = len(SAT_TIMES)
    doses = Doses(SAT_TIMES, SAT_AMOUNTS, SAT_STATES, rate=SAT_RATES)
    s = sl.Solver(SATURABLE, solver=method, sens_mode="simultaneous", sens_doses=n, **TIGHT)
    s.set_params_dict(SAT_PARAMS)
    y_sens, sens_out = s.make_output_buffers(SAT_TVALS)
    s.solve(0.0, SAT_TVALS, np.zeros(2), y_sens, sens_out, doses=doses)
    forward = np.einsum("tj,tkj->k", W[:41], sens_out)[5:].reshape(n, 3)
    adj = sl.AdjointSolver(SATURABLE, solver=method, solver_backward=backward, **TIGHT)
    adj.set_params_dict(SAT_PARAMS)
    y_out = adj.make_output_buffers(SAT_TVALS)[0]
    adj.solve_forward(0.0, SAT_TVALS, np.zeros(2), y_out, doses=doses)
    g = adj.gradients(0.0, SAT_TVALS, np.zeros(2), y_out, W[:41])
    scale = np.abs(W[:41]).sum()
    np.testing.assert_allclose(forward[:, 0], g.dose_time, rtol=1e-7, atol=1e-8 * scale)
    np.testing.assert_allclose(forward[:, 1], g.dose_amount, rtol=1e-7, atol=1e-8 * scale)
    np.testing.assert_allclose(forward[:, 2], g.dose_rate, rtol=1e-7, atol=1e-8 * scale)  # NaN: boluses


def test_sens_doses_must_match_the_doses():
    s = solver(sens_mode="simultaneous", sens_doses=2)
    y_out, sens_out = s.make_output_buffers(TVALS)
    with pytest.raises(ValueError, match="sens_doses=2 doses; got 1"):
        s.solve(0.0, TVALS, Y0, y_out, sens_out, doses=Doses([1.0], [1.0], "gut"))
    with pytest.raises(ValueError, match="sens_doses=2 doses; got 0"):
        s.solve(0.0, TVALS, Y0, y_out, sens_out)
    with pytest.raises(ValueError, match="`sens_doses=2` needs forward sensitivities"):
        sl.Solver(PROBLEM, sens_doses=2)


def test_the_default_bdf_backward_refuses_doses():
    adj = adjoint("BDF")
    y_out = adj.make_output_buffers(TVALS)[0]
    with pytest.raises(ValueError, match="`doses` need solver_backward='ERK' or 'DIRK'.*got solver_backward='BDF'"):
        adj.solve_forward(0.0, TVALS, Y0, y_out, doses=Doses([1.0], [1.0], "gut"))


def test_no_doses_adjoint_is_bit_identical():
    y0 = np.array([100.0, 0.0])
    results = []
    for doses in (None, Doses([], [], [])):
        adj = adjoint("ERK")
        y_out, grad_out, lambda_out = adj.make_output_buffers(TVALS)
        adj.solve_forward(0.0, TVALS, y0, y_out, doses=doses)
        adj.solve_backward(TVALS[-1], 0.0, TVALS, W, grad_out, lambda_out)
        results.append((y_out, grad_out, lambda_out))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


# -- a nonlinear model against finite differences of the forward solve -----------------------
def saturable(t, y, p):
    """Michaelis-Menten elimination: f depends nonlinearly on y, so f(y-) - f(y+) matters."""
    return {"gut": -p.ka * y.gut, "central": p.ka * y.gut - p.vm * y.central / (p.km + y.central)}


SATURABLE = sl.SympyProblem(params={"ka": (), "vm": (), "km": ()}, states={"gut": (), "central": ()},
                            rhs_sympy=saturable)
SAT_PARAMS = {"ka": 0.9, "vm": 5.0, "km": 4.0}
SAT_TIMES = np.array([0.0, 3.3, 7.0, 7.0, 12.5])
SAT_AMOUNTS = np.array([20.0, 15.0, 10.0, 12.0, 30.0])
SAT_STATES = ["gut", "central", "gut", "central", "central"]
SAT_RATES = np.array([0.0, 0.0, 0.0, 4.0, 7.0])
SAT_TVALS = np.linspace(0.0, 20.0, 41)


def saturable_loss(times=SAT_TIMES, amounts=SAT_AMOUNTS, rates=SAT_RATES):
    s = sl.Solver(SATURABLE, rtol=1e-12, atol=1e-12)
    s.set_params_dict(SAT_PARAMS)
    y_out = s.make_output_buffers(SAT_TVALS)
    order = np.argsort(times, kind="stable")  # a perturbed time may pass its tie
    doses = Doses(times[order], amounts[order], [SAT_STATES[k] for k in order], rate=rates[order])
    s.solve(0.0, SAT_TVALS, np.zeros(2), y_out, doses=doses)
    return np.sum(W[:41] * y_out)


@pytest.mark.parametrize("backward", ["ERK", "DIRK"])
def test_dose_gradients_match_finite_differences_of_a_nonlinear_model(backward):
    adj = sl.AdjointSolver(SATURABLE, solver_backward=backward, **TIGHT)
    adj.set_params_dict(SAT_PARAMS)
    y_out = adj.make_output_buffers(SAT_TVALS)[0]
    doses = Doses(SAT_TIMES, SAT_AMOUNTS, SAT_STATES, rate=SAT_RATES)
    adj.solve_forward(0.0, SAT_TVALS, np.zeros(2), y_out, doses=doses)
    g = adj.gradients(0.0, SAT_TVALS, np.zeros(2), y_out, W[:41])
    h = 1e-5
    n = len(SAT_TIMES)
    ends = SAT_TIMES + np.divide(SAT_AMOUNTS, SAT_RATES, out=np.zeros(n), where=SAT_RATES > 0)

    def fd(k, name, values):
        """Central differences, except where the dose starts or ends on an output time (L
        has a kink there): one-sided, for the start or end moving later (a lower rate)."""
        e = h * unit(k, n, float)
        kink = SAT_TIMES[k] in SAT_TVALS or (SAT_RATES[k] > 0 and ends[k] in SAT_TVALS)
        if kink and name == "rates":
            return (saturable_loss() - saturable_loss(**{name: values - e})) / h
        if kink:
            return (saturable_loss(**{name: values + e}) - saturable_loss()) / h
        return (saturable_loss(**{name: values + e}) - saturable_loss(**{name: values - e})) / (2 * h)

    for k in range(n):
        assert g.dose_time[k] == pytest.approx(fd(k, "times", SAT_TIMES), rel=1e-4, abs=1e-6), k
        assert g.dose_amount[k] == pytest.approx(fd(k, "amounts", SAT_AMOUNTS), rel=1e-4, abs=1e-6), k
        if SAT_RATES[k] > 0:
            assert g.dose_rate[k] == pytest.approx(fd(k, "rates", SAT_RATES), rel=1e-4, abs=1e-6), k
        else:
            assert np.isnan(g.dose_rate[k])


# -- the PyTensor Ops ------------------------------------------------------------------------
LAG, F = 0.5, 0.8
OP_OPTIONS = dict(rtol=1e-10, atol=1e-10)


def lagged_graph(derivatives="adjoint", **solver_kwargs):
    """L = sum W * y for doses at TAUS[1:] + lag of F * AMOUNTS[1:] (tensors), and its inputs."""
    import pytensor.tensor as pt
    from sunode_like.wrappers.as_pytensor import solve_ivp

    ka, cl, v, lag, f = pt.dscalars("ka", "cl", "v", "lag", "F")
    result = solve_ivp({"gut": 0.0, "central": 0.0}, {"ka": ka, "CL": cl, "V": v}, one_compartment,
                       TVALS, 0.0, derivatives=derivatives,
                       doses=Doses(TAUS[1:] + lag, f * AMOUNTS[1:], "gut"),
                       solver_kwargs={**OP_OPTIONS, **solver_kwargs})
    return (result.flat * W).sum(), [ka, cl, v, lag, f], result


def lagged_loss(ka=KA, cl=CL, v=V, lag=LAG, f=F):
    return np.sum(W * bateman(TVALS, ka, cl, v, TAUS[1:] + lag, f * AMOUNTS[1:]))


def test_solve_ivp_with_symbolic_doses_matches_the_closed_form_in_default_and_numba_mode():
    import pytensor

    loss, inputs, result = lagged_graph()
    outputs = [loss] + pytensor.grad(loss, inputs)
    point = [KA, CL, V, LAG, F]
    default = pytensor.function(inputs, outputs, mode="CVM")(*point)
    exact = [lagged_loss()] + [complex_step(lambda x, k=k: lagged_loss(*point[:k], x, *point[k + 1:]), point[k])
                               for k in range(5)]
    np.testing.assert_allclose(default, exact, rtol=1e-8)
    numba = pytensor.function(inputs, outputs, mode="NUMBA")(*point)
    np.testing.assert_allclose(numba, default, rtol=1e-12)
    assert result.op.n_failures == 0


@pytest.mark.parametrize("method", ["BDF", "DIRK"])
def test_solve_ivp_with_symbolic_doses_and_other_forward_methods(method):
    """As above for the forward methods the default does not pick here (it solves by ERK)."""
    import pytensor

    loss, inputs, _ = lagged_graph(solver=method)
    point = [KA, CL, V, LAG, F]
    values = pytensor.function(inputs, [loss] + pytensor.grad(loss, inputs), mode="CVM")(*point)
    exact = [lagged_loss()] + [complex_step(lambda x, k=k: lagged_loss(*point[:k], x, *point[k + 1:]), point[k])
                               for k in range(5)]
    np.testing.assert_allclose(values, exact, rtol=1e-8)


def test_the_ops_gradient_passes_verify_grad_with_an_infusion():
    import pytensor.tensor as pt
    from pytensor.gradient import verify_grad
    from sunode_like.wrappers.as_pytensor import SolveODE

    op = SolveODE(PROBLEM, {"rtol": 1e-12, "atol": 1e-12, "solver_backward": "ERK"}, dose_states=(0, 1, 1))
    y0 = np.array([1.0, 2.0])
    params = np.array([KA, CL, V])
    tvals = np.linspace(0.5, 12.0, 9)

    def loss(y0, params, time, amount, rate):
        return (op(y0, params, pt.constant(tvals), pt.constant(0.0), time, amount, rate) * W[:9]).sum()

    # A bolus into the gut at 1.2, infusions into the central compartment at 2.0 (ends at
    # 6.0, between outputs) and 3.1 (ends after the last output).
    # (The bolus's rate has no derivative: NaN, so it stays a constant 0.)
    verify_grad(lambda params, time, amount, infusion_rates: loss(
                    y0, params, time, amount, pt.concatenate([pt.zeros(1), infusion_rates])),
                [params, np.array([1.2, 2.0, 3.1]), np.array([5.0, 8.0, 30.0]), np.array([2.0, 1.5])],
                rng=np.random.default_rng(1), eps=1e-5, abs_tol=1e-4, rel_tol=1e-4)


def test_bad_symbolic_doses_give_nan_and_a_count():
    import pytensor
    import pytensor.tensor as pt
    from sunode_like.wrappers.as_pytensor import SolveODE

    op = SolveODE(PROBLEM, {**OP_OPTIONS, "solver_backward": "ERK"}, dose_states=(0, 0))
    time = pt.dvector("time")
    y = op(np.zeros(2), np.array([KA, CL, V]), TVALS, 0.0, time, np.array([1.0, 1.0]), np.zeros(2))
    f = pytensor.function([time], y, mode="CVM")  # warns; numba mode reports on stderr
    before = op.n_failures
    for bad in ([2.0, 1.0], [-1.0, 1.0], [1.0, 99.0], [1.0, np.nan]):
        with pytest.warns(RuntimeWarning, match="invalid input"):
            out = f(np.array(bad))
            op._reported = False
        assert np.isnan(out).all()
    assert op.n_failures == before + 4
    np.testing.assert_allclose(f(np.array([1.0, 2.0])), bateman(TVALS, KA, CL, V, [1.0, 2.0], [1.0, 1.0]),
                               rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("mode", ["CVM", "NUMBA"])
def test_forward_mode_differentiates_the_doses_too(mode):
    """derivatives="forward": the gradient wrt the lag time and bioavailability F (through
    the doses' times and amounts) from forward sensitivities, and the Jacobian-vector
    product wrt them, against the closed form."""
    import pytensor

    loss, inputs, result = lagged_graph("forward")
    point = [KA, CL, V, LAG, F]
    grads = pytensor.function(inputs, pytensor.grad(loss, inputs), mode=mode)(*point)
    exact = [complex_step(lambda x, k=k: lagged_loss(*point[:k], x, *point[k + 1:]), point[k]) for k in range(5)]
    np.testing.assert_allclose(grads, exact, rtol=1e-7)
    # The derivative of L along (ka, lag, F) = (1, 2, -3), by a Jacobian-vector product.
    tangent = np.array([1.0, 0.0, 0.0, 2.0, -3.0])
    jvp = jvp_graph(loss, inputs, [pytensor.tensor.constant(t) for t in tangent])  # the Op's own
    value = pytensor.function(inputs, jvp, mode=mode)(*point)
    assert value == pytest.approx(np.dot(exact, tangent), rel=1e-7)
    assert result.op.n_failures == 0


def test_the_op_sets_sens_doses_itself():
    with pytest.raises(ValueError, match=r"unknown options \['sens_doses'\]"):
        lagged_graph("forward", sens_doses=4)


@pytest.mark.parametrize("options, match", [
    ({"solver_backward": "BDF"}, "need solver_backward='ERK' or 'DIRK'.*got solver_backward='BDF'"),
    ({"linear_solver_backward": "spgmr"}, "need solver_backward='ERK' or 'DIRK'.*got solver_backward='BDF'"),
])
def test_the_op_refuses_options_that_cannot_dose(options, match):
    with pytest.raises(ValueError, match=match):
        lagged_graph(**options)


def test_a_gradient_with_other_doses_does_not_reuse_the_forward_solve():
    from sunode_like._doses import c_doses
    from sunode_like.wrappers.as_pytensor import SolveODEGrad
    from sunode_like._sundials import ffi, lib

    op = SolveODEGrad(PROBLEM, {**OP_OPTIONS, "solver_backward": "ERK"}, dose_states=(0,))
    params, tvals = np.array([KA, CL, V]), TVALS.copy()

    def doses(amount):
        return (np.array([3.0]), np.array([amount]), np.zeros(1), np.zeros(1, dtype=np.int64))

    def call(function, amount, *outputs):
        values = doses(amount)
        flag = function(op._ptr, 0.0, ffi.from_buffer("double[]", Y0), ffi.from_buffer("double[]", params),
                        len(tvals), ffi.from_buffer("double[]", tvals), c_doses(values),
                        *[ffi.from_buffer("double[]", x) if isinstance(x, np.ndarray) else x for x in outputs])
        assert flag == 0

    y = np.empty((len(tvals), 2))
    grads = np.ascontiguousarray(W)

    def gradient(amount):
        dy0, dparams, dose = np.empty(2), np.empty(3), np.empty((3, 1))
        call(lib.sl_pool_gradient_doses, amount, grads, dy0, dparams, ffi.NULL, ffi.NULL, dose[0], dose[1],
             dose[2], ffi.NULL)
        return dparams, dose

    call(lib.sl_pool_solve_doses, 100.0, y, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL)
    solves = op.n_forward_solves
    reused = gradient(100.0)
    assert op.n_forward_solves == solves  # same doses: the forward solve is reused
    other = gradient(60.0)
    assert op.n_forward_solves == solves + 1  # other doses: solved again
    # and the gradient is that of the other doses (linear in the amount: 0.6 of the first)
    np.testing.assert_allclose(other[0], 0.6 * reused[0], rtol=1e-7)
    assert other[1][1, 0] == pytest.approx(reused[1][1, 0], rel=1e-7)  # dL/damount: linear model


@pytest.mark.parametrize("backward", ["ERK", "DIRK"])
def test_dose_solves_and_solvers_do_not_grow_memory(memory, backward):
    """Schedules, the backward problem re-created for the infusions' quadrature and the
    dose gradients' scratch are freed; alternating with and without infusions re-creates it."""
    import helpers

    infused = Doses([0.0, 6.0], [100.0, 50.0], ["gut", "central"], rate=[0.0, 10.0])
    boluses = Doses([0.0, 6.0], [100.0, 50.0], "gut")
    tvals = np.linspace(0.0, 12.0, 7)
    grads = np.ones((len(tvals), 2))

    def run(n):
        for k in range(n):
            adj = adjoint(backward) if k % 10 == 0 else run.adj
            run.adj = adj
            y_out, grad_out, lambda_out = adj.make_output_buffers(tvals)
            adj.solve_forward(0.0, tvals, Y0, y_out, doses=infused if k % 2 else boluses)
            adj.solve_backward(tvals[-1], 0.0, tvals, grads, grad_out, lambda_out,
                               dose_grads_out=np.zeros((3, 2)))
        return grad_out

    run.adj = None
    helpers.assert_no_memory_growth(memory, run, 50, 500)


@pytest.mark.parametrize("backward", ["ERK", "DIRK"])
def test_iv_dose_gradients_match_the_pk_reference(backward):
    """Against `examples.pk.iv_reference` (written apart from this engine): boluses,
    infusions ending between outputs, two overlapping, one of zero amount and one still
    running at the last output."""
    from sunode_like.examples import pk

    times = np.array([0.0, 6.0, 12.0, 14.0, 24.0, 60.0])
    amounts = np.array([200.0, 0.0, 300.0, 100.0, 150.0, 500.0])
    rates = np.array([0.0, 50.0, 100.0, 25.0, 0.0, 40.0])
    tvals = np.linspace(0.25, 71.75, 20)
    weights = np.cos(0.1 * tvals)[:, None]
    cl, v = 5.0, 30.0
    reference = pk.iv_reference(tvals, times, amounts, cl, v, rates)
    adj = sl.AdjointSolver(pk.iv_problem(), solver_backward=backward, **TIGHT)
    adj.set_params_dict({"CL": cl, "V": v})
    y_out = adj.make_output_buffers(tvals)[0]
    adj.solve_forward(0.0, tvals, np.zeros(1), y_out, doses=Doses(times, amounts, "central", rate=rates))
    np.testing.assert_allclose(y_out, reference.y, rtol=1e-9, atol=1e-9 * reference.y.max())
    g = adj.gradients(0.0, tvals, np.zeros(1), y_out, weights)
    scale = np.abs(weights).sum()
    for name, value in (("dose_time", g.dose_time), ("dose_amount", g.dose_amount), ("dose_rate", g.dose_rate)):
        expected = np.einsum("tj,tjk->k", weights, reference.derivatives[name])
        np.testing.assert_allclose(value, expected, rtol=1e-8, atol=1e-9 * scale, err_msg=name)
    expected = [np.sum(weights * reference.derivatives[name]) for name in ("CL", "V")]
    np.testing.assert_allclose(g.params, expected, rtol=1e-8)


def test_nutpie_logp_and_gradient_with_a_lag_time():
    """nutpie's compiled logp and gradient (the Ops' numba kernels, no Python) equal PyMC's
    default backend's for a model whose doses are given a random lag time."""
    import pymc as pm
    from helpers import nutpie_logp_and_gradient
    from sunode_like.wrappers.as_pytensor import solve_ivp

    pytest.importorskip("nutpie")
    data = bateman(TVALS, KA, CL, V, TAUS[1:] + LAG, AMOUNTS[1:])[:, 1] + 0.1 * np.cos(TVALS)
    with pm.Model() as model:
        log_ka = pm.Normal("log_ka", np.log(KA), 0.3)
        lag = pm.HalfNormal("lag", 1.0)
        result = solve_ivp({"gut": 0.0, "central": 0.0}, {"ka": pm.math.exp(log_ka), "CL": CL, "V": V},
                           one_compartment, TVALS, 0.0, doses=Doses(TAUS[1:] + lag, AMOUNTS[1:], "gut"),
                           solver_kwargs=OP_OPTIONS)
        pm.Normal("y", mu=result.y_hat["central"], sigma=1.0, observed=data)
    point = {"log_ka": np.log(KA) + 0.1, "lag_log__": np.log(LAG)}
    expected_logp = model.compile_logp()(point)
    expected_grad = model.compile_dlogp()(point)
    logp, grad = nutpie_logp_and_gradient(model, [point["log_ka"], point["lag_log__"]])
    np.testing.assert_allclose(logp, expected_logp, rtol=1e-10)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-8)
    assert np.all(np.abs(expected_grad) > 1.0)  # both params move the fit


def test_the_op_with_doses_pickles():
    import pickle

    import pytensor

    loss, inputs, result = lagged_graph()
    assert pickle.loads(pickle.dumps(result.op)) == result.op
    f = pytensor.function(inputs, [loss, pytensor.grad(loss, inputs[3])])
    again = pickle.loads(pickle.dumps(f))
    point = [KA, CL, V, LAG, F]
    for a, b in zip(again(*point), f(*point)):
        np.testing.assert_allclose(a, b, rtol=1e-14)


# -- stop times (sl_problem.stop_times: the inputs' knots) -----------------------------------
@pytest.mark.parametrize("kind", ["Solver", "AdjointSolver"])
def test_problem_stop_times_stop_the_integrator_without_changing_results(kind):
    """Stop times where nothing happens (between outputs, on an output, at t0, past the end)
    leave the results unchanged to the tolerances: the forward solve does not stop there,
    the RK adjoint's backward sweep does."""
    from sunode_like._doses import c_doses
    from sunode_like._sundials import ffi, lib

    base = solver(solver="BDF") if kind == "Solver" else adjoint("ERK", solver="BDF")
    doses = Doses(TAUS, AMOUNTS, "gut")
    values = doses.values(PROBLEM, 0.0, TVALS)
    stops = np.array([0.0, 3.3, 7.7, 9.5, 12.0, 31.0])
    base._problem_struct.n_stop_times, base._problem_struct.stop_times = len(stops), ffi.from_buffer("double[]", stops)
    out = ffi.new("sl_cvodes **")
    checked = base._checked
    assert lib.sl_cvodes_create(base._problem_struct, checked.options, checked.sens, checked.adjoint, out) == 0
    stopping = out[0]
    try:
        y_out = np.zeros((len(TVALS), 2))
        ptr = lambda a: ffi.from_buffer("double[]", a)  # noqa: E731
        assert lib.sl_cvodes_solve_doses(stopping, 0.0, ptr(Y0), ffi.NULL, len(TVALS), ptr(TVALS),
                                         c_doses(values), ptr(y_out), ffi.NULL) == 0
        np.testing.assert_allclose(y_out, bateman(TVALS, KA, CL, V, TAUS, AMOUNTS), rtol=0, atol=1e-8 * AMOUNTS.sum())
        stats = ffi.new("sl_stats *")
        lib.sl_cvodes_stats(stopping, stats)
        y_plain = np.zeros((len(TVALS), 2))
        (base.solve if kind == "Solver" else base.solve_forward)(0.0, TVALS, Y0, y_plain, doses=doses)
        assert stats.steps == base.stats()["steps"]
        if kind == "AdjointSolver":
            grad_out, lambda_out, dose_grads = np.zeros(3), np.zeros(2), np.zeros((3, len(TAUS)))
            assert lib.sl_cvodes_backward_doses(stopping, 0.0, len(TVALS), ptr(TVALS), ptr(np.ascontiguousarray(W)),
                                                ptr(grad_out), ptr(lambda_out), *map(ptr, dose_grads)) == 0
            g = base.gradients(0.0, TVALS, Y0, y_plain, W)
            np.testing.assert_allclose(grad_out, g.params, rtol=1e-8)
            np.testing.assert_allclose(dose_grads[:2], [g.dose_time, g.dose_amount], rtol=1e-8, atol=1e-8)
    finally:
        lib.sl_cvodes_free(stopping)


def test_the_dae_op_refuses_doses():
    from sunode_like.wrappers.as_pytensor_dae import SolveDAE

    problem = sl.DAEProblem(params={"k": ()}, differential_states={"x": ()}, algebraic_states={"z": ()},
                            rhs_sympy=lambda t, x, z, p: {"x": -p.k * z.z},
                            algebraic_sympy=lambda t, x, z, p: {"z": z.z - x.x})
    with pytest.raises(ValueError, match="not supported for DAEs"):
        SolveDAE(problem, dose_states=(0,))


@pytest.mark.parametrize("method", ["BDF", "ERK"])
@pytest.mark.parametrize("backward", [None, "ERK", "DIRK"])
def test_an_output_one_ulp_after_a_dose(backward, method):
    """CVODES refuses to step from a restart to a time within ulps of it (CV_TOO_CLOSE); the
    output there is the post-dose state (a fine output grid with a lag time hits this)."""
    from sunode_like.examples.pk import iv_problem, iv_reference

    after = np.nextafter(24.4, np.inf)
    tvals = np.array([1.0, after, 30.0]) if backward is None else np.array([1.0, 24.0, after])
    doses = Doses([0.0, 24.4], 100.0, "central")
    exact = iv_reference(tvals, [0.0, 24.4], [100.0, 100.0], 2.0, 10.0).y[:, 0]
    if backward is None:
        s = sl.Solver(iv_problem(), solver=method, **TIGHT)
        s.set_params_dict({"CL": 2.0, "V": 10.0})
        y_out = s.make_output_buffers(tvals)
        s.solve(0.0, tvals, np.zeros(1), y_out, doses=doses)
    else:  # the last output: the recording forward solve of a Runge-Kutta adjoint
        s = sl.AdjointSolver(iv_problem(), solver=method, solver_backward=backward, **TIGHT)
        s.set_params_dict({"CL": 2.0, "V": 10.0})
        y_out = s.make_output_buffers(tvals)[0]
        s.solve_forward(0.0, tvals, np.zeros(1), y_out, doses=doses)
        g = s.gradients(0.0, tvals, np.zeros(1), y_out, np.ones((3, 1)))
        assert np.isfinite(g.params).all() and np.isfinite(g.dose_amount).all()
        assert g.dose_amount[1] == pytest.approx(1.0, rel=1e-9)  # mu_c just after: only the last output
    np.testing.assert_allclose(y_out[:, 0], exact, rtol=1e-9)
