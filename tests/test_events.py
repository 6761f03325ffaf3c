"""State-dependent events (root finding with resets) against closed forms, with the
sensitivity and adjoint jump conditions.

A bouncing ball: height' = velocity, velocity' = -gravity; at height = 0 falling, velocity ->
-e velocity. From (h0, v0) the first impact is at t1 = (v0 + w) / gravity, w = sqrt(v0^2 +
2 gravity h0), with speed w; the k-th bounce leaves with speed e^k w and lands 2 e^k w /
gravity later. A sawtooth: x' = a, x -> b when x reaches 1, so x = b + a (t - tau_k) after
the k-th reset at tau_1 = (1 - x0) / a, tau_k+1 = tau_k + (1 - b) / a. The closed forms'
derivatives are taken by complex step (exact to rounding).
"""
import numpy as np
import pytest
import sympy

import sunode_like as sl
from sunode_like import SolverError

GRAVITY, E, H0, V0 = 9.81, 0.8, 2.0, 1.0
TVALS = np.linspace(0.0, 3.0, 31)  # four bounces
TIGHT = dict(rtol=1e-11, atol=1e-11)
# Each forward method: CVODES' BDF, ARKODE's explicit and implicit one-step methods.
FORWARD = pytest.mark.parametrize("method", ["BDF", "ERK", "DIRK"])


def ball_rhs(t, y, p):
    return {"height": y.velocity, "velocity": -p.gravity}


def bounce(direction="falling"):
    return sl.Event(condition=lambda t, y, p: y.height, direction=direction,
                    reset=lambda t, y, p: {"velocity": -p.e * y.velocity})


BALL = sl.SympyProblem(params={"gravity": (), "e": ()}, states={"height": (), "velocity": ()},
                       rhs_sympy=ball_rhs, events={"bounce": bounce()})
BALL_PARAMS = {"gravity": GRAVITY, "e": E}


def ball(t, gravity, e, h0, v0):
    """(height, velocity) at each t; complex-step safe (the bounce count from real parts)."""
    w = np.sqrt(v0 ** 2 + 2 * gravity * h0)
    landing, speed, out = (v0 + w) / gravity, w, []
    for tt in t:
        if np.real(tt) < np.real(landing):
            out.append((h0 + v0 * tt - gravity * tt ** 2 / 2, v0 - gravity * tt))
            continue
        start, speed = landing, e * w
        while np.real(tt) >= np.real(start + 2 * speed / gravity):
            start, speed = start + 2 * speed / gravity, e * speed
        s = tt - start
        out.append((speed * s - gravity * s ** 2 / 2, speed - gravity * s))
    return np.array(out)


def ball_derivatives(t):
    """d(height, velocity)/d(gravity, e, h0, v0) at each t: (n_t, 4, 2)."""
    x = np.array([GRAVITY, E, H0, V0], dtype=complex)
    out = []
    for k in range(4):
        step = x.copy()
        step[k] += 1e-30j
        out.append(np.imag(ball(t, *step)) / 1e-30)
    return np.stack(out, axis=1)


@FORWARD
def test_ball_matches_closed_form_over_bounces(method):
    solver = sl.Solver(BALL, solver=method, **TIGHT)
    solver.set_params_dict(BALL_PARAMS)
    y = solver.make_output_buffers(TVALS)
    solver.solve(0.0, TVALS, {"height": H0, "velocity": V0}, y)
    np.testing.assert_allclose(y, ball(TVALS, GRAVITY, E, H0, V0), rtol=0, atol=1e-9)


@pytest.mark.parametrize("sens_mode", ["simultaneous", "staggered"])
def test_ball_forward_sensitivities_match_closed_form(sens_mode):
    solver = sl.Solver(BALL, sens_mode=sens_mode, **TIGHT)
    solver.set_params_dict(BALL_PARAMS)
    y, sens = solver.make_output_buffers(TVALS)
    solver.solve(0.0, TVALS, np.array([H0, V0]), y, sens)
    expected = ball_derivatives(TVALS)
    np.testing.assert_allclose(sens, expected, rtol=0, atol=1e-7 * np.abs(expected).max())


@pytest.mark.parametrize("backward", ["ERK", "DIRK"])
@FORWARD
def test_ball_adjoint_matches_closed_form(backward, method):
    adj = sl.AdjointSolver(BALL, solver=method, solver_backward=backward, **TIGHT)
    adj.set_params_dict(BALL_PARAMS)
    y, grad, lam = adj.make_output_buffers(TVALS)
    adj.solve_forward(0.0, TVALS, np.array([H0, V0]), y)
    np.testing.assert_allclose(y, ball(TVALS, GRAVITY, E, H0, V0), rtol=0, atol=1e-9)
    grads = np.random.default_rng(1).normal(size=y.shape)
    adj.solve_backward(TVALS[-1], 0.0, TVALS, grads, grad, lam)
    expected = np.einsum("ij,ikj->k", grads, ball_derivatives(TVALS))
    np.testing.assert_allclose(np.concatenate([grad, -lam]), expected, rtol=1e-7)


@FORWARD
def test_root_at_t0_is_not_an_event(method):
    """Thrown up from the ground: the first bounce is at 2 v0 / gravity, not at t0 (and
    four more follow by t = 2, before the bounces accumulate at t = 3.06)."""
    solver = sl.Solver(BALL, solver=method, **TIGHT)
    solver.set_params_dict(BALL_PARAMS)
    tvals = TVALS[TVALS <= 2.0]
    y = solver.make_output_buffers(tvals)
    solver.solve(0.0, tvals, {"height": 0.0, "velocity": 3.0}, y)
    np.testing.assert_allclose(y, ball(tvals, GRAVITY, E, 0.0, 3.0), rtol=0, atol=1e-9)


SAW = sl.SympyProblem(params={"a": (), "b": ()}, states={"x": ()},
                      rhs_sympy=lambda t, y, p: {"x": p.a},
                      events={"reset": sl.Event(condition=lambda t, y, p: y.x - 1, direction="rising",
                                                reset=lambda t, y, p: {"x": p.b})})
A, B, X0 = 1.7, 0.25, 0.1
SAW_TVALS = np.linspace(0.0, 4.0, 23)  # 9 resets


def sawtooth(t, a, b, x0):
    first, period = (1 - x0) / a, (1 - b) / a
    resets = np.where(np.real(t) < np.real(first), 0, np.floor(np.real((t - first) / period)) + 1)
    return np.where(resets == 0, x0 + a * t, b + a * (t - first - (resets - 1) * period))


def sawtooth_derivatives(t):
    x = np.array([A, B, X0], dtype=complex)
    return np.stack([np.imag(sawtooth(t, *(x + 1e-30j * np.eye(3)[k]))) / 1e-30 for k in range(3)], axis=1)


@FORWARD
def test_sawtooth_value_sensitivities_and_adjoint_match_closed_form(method):
    solver = sl.Solver(SAW, solver=method, sens_mode="simultaneous", **TIGHT)
    solver.set_params_dict({"a": A, "b": B})
    y, sens = solver.make_output_buffers(SAW_TVALS)
    solver.solve(0.0, SAW_TVALS, np.array([X0]), y, sens)
    np.testing.assert_allclose(y[:, 0], sawtooth(SAW_TVALS, A, B, X0), rtol=0, atol=1e-9)
    expected = sawtooth_derivatives(SAW_TVALS)
    np.testing.assert_allclose(sens[:, :, 0], expected, rtol=0, atol=1e-7)
    adj = sl.AdjointSolver(SAW, solver=method, solver_backward="ERK", **TIGHT)
    adj.set_params_dict({"a": A, "b": B})
    y2, grad, lam = adj.make_output_buffers(SAW_TVALS)
    adj.solve_forward(0.0, SAW_TVALS, np.array([X0]), y2)
    grads = np.cos(SAW_TVALS)[:, None]
    adj.solve_backward(SAW_TVALS[-1], 0.0, SAW_TVALS, grads, grad, lam)
    np.testing.assert_allclose(np.concatenate([grad, -lam]), grads[:, 0] @ expected, rtol=1e-8)


# Stopping at an event (docs/guide/events.md): decay x' = on * (-k x) until x falls to c,
# where a reset switches `on` to 0 and x stays c. With tau = log(x0 / c) / k,
# x = x0 exp(-k t) before tau and c after it.
STOP = sl.SympyProblem(params={"k": (), "c": ()}, states={"x": (), "on": ()},
                       rhs_sympy=lambda t, y, p: {"x": -y.on * p.k * y.x, "on": 0},
                       events={"stop": sl.Event(condition=lambda t, y, p: y.x - p.c,
                                                direction="falling", reset=lambda t, y, p: {"on": 0})})
K, C, STOP_TVALS = 0.8, 0.3, np.linspace(0.0, 3.0, 16)  # stops at tau = 1.5


def stopped(t, k, c, x0):
    return np.where(np.real(t) < np.real(np.log(x0 / c) / k), x0 * np.exp(-k * t), c)


@pytest.mark.parametrize("backward", ["ERK", "DIRK"])
@FORWARD
def test_an_event_that_stops_the_dynamics_matches_its_closed_form(backward, method):
    x = np.array([K, C, 1.0], dtype=complex)
    exact = stopped(STOP_TVALS, K, C, 1.0)
    derivatives = np.stack([np.imag(stopped(STOP_TVALS, *(x + 1e-30j * np.eye(3)[i]))) / 1e-30
                            for i in range(3)], axis=1)
    solver = sl.Solver(STOP, solver=method, sens_mode="simultaneous", **TIGHT)
    solver.set_params_dict({"k": K, "c": C})
    y, sens = solver.make_output_buffers(STOP_TVALS)
    solver.solve(0.0, STOP_TVALS, {"x": 1.0, "on": 1.0}, y, sens)
    np.testing.assert_allclose(y[:, 0], exact, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(y[STOP_TVALS > 1.5, 1], 0.0)
    np.testing.assert_allclose(sens[:, :3, 0], derivatives, rtol=0, atol=1e-8)
    adj = sl.AdjointSolver(STOP, solver=method, solver_backward=backward, **TIGHT)
    adj.set_params_dict({"k": K, "c": C})
    y2, grad, lam = adj.make_output_buffers(STOP_TVALS)
    adj.solve_forward(0.0, STOP_TVALS, {"x": 1.0, "on": 1.0}, y2)
    grads = np.stack([np.cos(STOP_TVALS), np.zeros_like(STOP_TVALS)], axis=1)
    adj.solve_backward(STOP_TVALS[-1], 0.0, STOP_TVALS, grads, grad, lam)
    np.testing.assert_allclose(np.concatenate([grad, -lam[:1]]), grads[:, 0] @ derivatives, rtol=1e-8)


def pulse_rhs(t, y, p):
    return {"x": p.k * (p.s - y.x) + y.z, "z": -p.c * y.z * y.x}


# A nonlinear model: x relaxes to s, and at x = threshold (rising) x halves and z gets a kick.
PULSE = sl.SympyProblem(
    params={"k": (), "s": (), "c": (), "threshold": (), "kick": ()}, states={"x": (), "z": ()},
    rhs_sympy=pulse_rhs,
    events={"fire": sl.Event(condition=lambda t, y, p: y.x - p.threshold + 0.1 * t * y.z, direction="rising",
                             reset=lambda t, y, p: {"x": y.x / 2, "z": y.z + p.kick * t})})
PULSE_PARAMS = np.array([1.3, 2.0, 0.4, 1.5, 0.3])
PULSE_Y0 = np.array([0.2, 0.5])
PULSE_TVALS = np.linspace(0.0, 6.0, 13)


def pulse_loss(y):
    return np.sum(np.sin(np.arange(y.size)).reshape(y.shape) * y)


@FORWARD
def test_forward_sensitivities_equal_adjoint_and_finite_differences_across_events(method):
    solver = sl.Solver(PULSE, solver=method, sens_mode="simultaneous", **TIGHT)
    solver.set_params(PULSE_PARAMS)
    y, sens = solver.make_output_buffers(PULSE_TVALS)
    solver.solve(0.0, PULSE_TVALS, PULSE_Y0, y, sens)
    weights = np.sin(np.arange(y.size)).reshape(y.shape)
    forward = np.einsum("ij,ikj->k", weights, sens)

    def loss(x):
        s = sl.Solver(PULSE, solver="BDF", **TIGHT)  # an ERK result's 1e-11 moves with its steps
        s.set_params(x[:5])
        out = s.make_output_buffers(PULSE_TVALS)
        s.solve(0.0, PULSE_TVALS, x[5:], out)
        return pulse_loss(out)

    x, h = np.concatenate([PULSE_PARAMS, PULSE_Y0]), 1e-5
    fd = np.array([(loss(x + h * np.eye(7)[k]) - loss(x - h * np.eye(7)[k])) / (2 * h) for k in range(7)])
    adj = sl.AdjointSolver(PULSE, solver=method, solver_backward="ERK", **TIGHT)
    adj.set_params(PULSE_PARAMS)
    y2, grad, lam = adj.make_output_buffers(PULSE_TVALS)
    adj.solve_forward(0.0, PULSE_TVALS, PULSE_Y0, y2)
    adj.solve_backward(PULSE_TVALS[-1], 0.0, PULSE_TVALS, weights, grad, lam)
    n_events = np.sum(np.diff(y[:, 0]) < 0)
    assert n_events >= 2  # the test crosses events
    np.testing.assert_allclose(forward, fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.concatenate([grad, -lam]), forward, rtol=1e-7, atol=1e-10)


@FORWARD
def test_event_at_an_output_time_reports_the_state_before_it(method):
    """x' = -x with x -> x + 1 at t = 1 (g = t - 1): at t = 1 the output is exp(-1)."""
    problem = sl.SympyProblem(
        params={"when": ()}, states={"x": ()}, rhs_sympy=lambda t, y, p: {"x": -y.x},
        events={"kick": sl.Event(condition=lambda t, y, p: t - p.when, direction="rising",
                                 reset=lambda t, y, p: {"x": y.x + 1})})
    tvals = np.array([0.5, 1.0, 2.0])
    expected = [np.exp(-0.5), np.exp(-1.0), (np.exp(-1.0) + 1) * np.exp(-1.0)]
    solver = sl.Solver(problem, solver=method, **TIGHT)
    solver.set_params_dict({"when": 1.0})
    y = solver.make_output_buffers(tvals)
    solver.solve(0.0, tvals, np.array([1.0]), y)
    np.testing.assert_allclose(y[:, 0], expected, rtol=1e-9)
    adj = sl.AdjointSolver(problem, solver=method, solver_backward="ERK", **TIGHT)
    adj.set_params_dict({"when": 1.0})
    y2, grad, lam = adj.make_output_buffers(tvals)
    adj.solve_forward(0.0, tvals, np.array([1.0]), y2)
    np.testing.assert_allclose(y2[:, 0], expected, rtol=1e-9)
    # dL/dwhen for L = x(2): x(2) = (exp(-when) + 1) exp(-(2 - when)) = exp(-2) + exp(when - 2)
    adj.solve_backward(tvals[-1], 0.0, tvals, np.array([[0.0], [0.0], [1.0]]), grad, lam)
    np.testing.assert_allclose(grad, [np.exp(-1.0)], rtol=1e-8)


@FORWARD
def test_chattering_fails_after_max_events(method):
    """A bounce counted in both directions fires again as the ball leaves the ground (it is
    located just below it), which sends it down again: past max_events, a SolverError."""
    problem = sl.SympyProblem(params={"gravity": (), "e": ()}, states={"height": (), "velocity": ()},
                              rhs_sympy=ball_rhs, events={"bounce": bounce("both")}, max_events=30)
    solver = sl.Solver(problem, solver=method, rtol=1e-8, atol=1e-8)
    solver.set_params_dict(BALL_PARAMS)
    y = solver.make_output_buffers(TVALS)
    with pytest.raises(SolverError, match="SL_TOO_MANY_EVENTS.*max_events = 30"):
        solver.solve(0.0, TVALS, np.array([H0, V0]), y)


@pytest.mark.parametrize("recording", [False, True])
@pytest.mark.parametrize("e, tol", [(0.5, 1e-8), (0.9, 1e-12)])
@FORWARD
def test_accumulating_bounces_fail_instead_of_falling_through(e, tol, recording, method):
    """With e < 1 the bounces accumulate at t1 + 2 e w / (gravity (1 - e)): once they are
    below the root finding's resolution a crossing would be missed (the ball falls through
    the ground); the solve fails there instead."""
    w = np.sqrt(V0 ** 2 + 2 * GRAVITY * H0)
    rest = (V0 + w) / GRAVITY + 2 * e * w / (GRAVITY * (1 - e))
    tvals = np.array([rest / 2, 2 * rest])
    options = dict(rtol=tol, atol=tol)
    solver = sl.AdjointSolver(BALL, solver=method, solver_backward="ERK", **options) if recording else sl.Solver(BALL, solver=method, **options)
    solver.set_params_dict({"gravity": GRAVITY, "e": e})
    y = np.zeros((2, 2))
    with pytest.raises(SolverError, match="SL_EVENTS_ACCUMULATE") as error:
        (solver.solve_forward if recording else solver.solve)(0.0, tvals, np.array([H0, V0]), y)
    # The solve's bounce times carry its errors (SUNDIALS 7.5's ERK came to rest 2e-11
    # relative after the exact time, after about 200 bounces at tol = 1e-12).
    assert rest * (1 - 1e-3) < error.value.t < rest * (1 + 1e-9)


@FORWARD
def test_grazing_root_has_no_derivative(method):
    """g = x - t - (t - 1)^3 with x = t: g = -(t - 1)^3 crosses zero at t = 1 with
    dg/dt + dg/dx x' = -3 (t - 1)^2 = 0 there."""
    problem = sl.SympyProblem(
        params={"a": ()}, states={"x": ()}, rhs_sympy=lambda t, y, p: {"x": p.a},
        events={"touch": sl.Event(condition=lambda t, y, p: y.x - t - (t - 1) ** 3,
                                  reset=lambda t, y, p: {"x": 2 * y.x})})
    tvals = np.array([0.5, 2.0])
    solver = sl.Solver(problem, solver=method, sens_mode="simultaneous", rtol=1e-10, atol=1e-10)
    solver.set_params_dict({"a": 1.0})
    y, sens = solver.make_output_buffers(tvals)
    with pytest.raises(SolverError, match="SL_GRAZING"):
        solver.solve(0.0, tvals, np.array([0.0]), y, sens)


@pytest.mark.parametrize("events, error, match", [
    ({"b": "not an event"}, TypeError, r"events\['b'\].*sl.Event"),
    ([bounce()], TypeError, "must be a dict"),
    ({"b": sl.Event(condition=lambda t, y, p: y.heigth)}, AttributeError, "heigth"),
    ({"b": sl.Event(condition=lambda t, y, p: {"height": y.height})}, TypeError, r"events\['b'\].condition"),
    ({"b": sl.Event(condition=lambda t, y, p: y.height, reset=lambda t, y, p: {"speed": 0})},
     ValueError, r"events\['b'\].reset.*'speed'"),
    ({"b": sl.Event(condition=lambda t, y, p: y.height, reset=lambda t, y, p: {"velocity": [1, 2]})},
     ValueError, r"shape \(2,\)"),
    ({"b": sl.Event(condition=lambda t, y, p: y.height, reset=lambda t, y, p: y.velocity)},
     TypeError, "must return a dict"),
])
def test_bad_event_specs_name_the_entry(events, error, match):
    with pytest.raises(error, match=match):
        sl.SympyProblem(params={"gravity": (), "e": ()}, states={"height": (), "velocity": ()},
                        rhs_sympy=ball_rhs, events=events)


def test_bad_event_arguments():
    with pytest.raises(ValueError, match="direction='up'"):
        sl.Event(condition=lambda t, y, p: y.x, direction="up")
    with pytest.raises(TypeError, match="condition=1"):
        sl.Event(condition=1)
    with pytest.raises(TypeError, match="reset="):
        sl.Event(condition=lambda t, y, p: y.x, reset={"x": 0})
    with pytest.raises(ValueError, match="max_events=0"):
        sl.SympyProblem(params={}, states={"x": ()}, rhs_sympy=lambda t, y, p: {"x": 1},
                        events={"e": sl.Event(condition=lambda t, y, p: y.x)}, max_events=0)


def test_events_need_a_runge_kutta_backward_and_the_default_solves_them_by_erk():
    with pytest.raises(ValueError, match="`events` need solver_backward='ERK' or 'DIRK'.*got solver_backward='BDF'"):
        sl.AdjointSolver(BALL, solver_backward="BDF")
    with pytest.raises(ValueError, match="`events` need solver_backward='ERK' or 'DIRK'.*got solver_backward='BDF'"):
        sl.AdjointSolver(BALL, linear_solver_backward="spgmr")  # auto: BDF's own adjoint then
    auto = sl.Solver(BALL, **TIGHT)
    auto.set_params_dict(BALL_PARAMS)
    y = auto.make_output_buffers(TVALS)
    auto.solve(0.0, TVALS, np.array([H0, V0]), y)
    assert auto.method_used() == "ERK"
    np.testing.assert_allclose(y, ball(TVALS, GRAVITY, E, H0, V0), rtol=0, atol=1e-9)


def test_events_change_the_content_hash():
    other = sl.SympyProblem(params={"gravity": (), "e": ()}, states={"height": (), "velocity": ()},
                            rhs_sympy=ball_rhs, events={"bounce": bounce("both")})
    plain = sl.SympyProblem(params={"gravity": (), "e": ()}, states={"height": (), "velocity": ()},
                            rhs_sympy=ball_rhs)
    assert len({BALL.content_hash, other.content_hash, plain.content_hash}) == 3


# -- through solve_ivp ------------------------------------------------------------------------

@pytest.mark.parametrize("derivatives", ["adjoint", "forward"])
@pytest.mark.parametrize("mode", ["CVM", "NUMBA"])
def test_solve_ivp_gradient_across_bounces(mode, derivatives):
    import pytensor
    import pytensor.tensor as pt
    from sunode_like.wrappers.as_pytensor import solve_ivp

    x = pt.dvector("x")  # gravity, e, h0, v0
    kwargs = {**TIGHT, "solver_backward": "ERK"} if derivatives == "adjoint" else TIGHT
    result = solve_ivp(y0={"height": (x[2], ()), "velocity": (x[3], ())},
                       params={"gravity": (x[0], ()), "e": (x[1], ())}, rhs=ball_rhs, tvals=TVALS,
                       t0=0.0, derivatives=derivatives, solver_kwargs=kwargs, events={"bounce": bounce()})
    weights = np.random.default_rng(3).normal(size=(len(TVALS), 2))
    loss = (result.y_hat["height"] * weights[:, 0] + result.y_hat["velocity"] * weights[:, 1]).sum()
    f = pytensor.function([x], [loss, pytensor.grad(loss, x)], mode=mode)
    value, gradient = f(np.array([GRAVITY, E, H0, V0]))
    np.testing.assert_allclose(value, np.sum(weights * ball(TVALS, GRAVITY, E, H0, V0)), rtol=1e-9)
    np.testing.assert_allclose(gradient, np.einsum("ij,ikj->k", weights, ball_derivatives(TVALS)), rtol=1e-7)


def test_solve_ivp_with_events_refuses_cvodes_adjoint_and_defaults_to_a_one_step_backward():
    import pytensor
    import pytensor.tensor as pt
    from sunode_like.wrappers.as_pytensor import solve_ivp

    def solve(e, **kwargs):
        return solve_ivp(y0={"height": (np.array(H0), ()), "velocity": (np.array(V0), ())},
                         params={"gravity": (np.array(GRAVITY), ()), "e": (e, ())}, rhs=ball_rhs,
                         tvals=TVALS, t0=0.0, events={"bounce": bounce()}, **kwargs)

    with pytest.raises(ValueError, match="solver_backward='ERK' or 'DIRK'.*got solver_backward='BDF'"):
        solve(np.array(E), derivative_subset=[("e",)], solver_kwargs={"solver_backward": "BDF"})
    e = pt.dscalar("e")
    height = solve(e, solver_kwargs=TIGHT).y_hat["height"]
    f = pytensor.function([e], pytensor.grad(height[-1], e))
    np.testing.assert_allclose(f(E), ball_derivatives(TVALS)[-1, 1, 0], rtol=1e-7)


@FORWARD
def test_events_and_doses_share_one_timeline(method):
    """The sawtooth with a bolus of 0.3 at t = 1 and an infusion of 0.4 over [2, 3) (rate
    0.4): the resets and the doses in one solve; sensitivities = adjoint = finite
    differences of the values (closed form: piecewise linear with slope a, a + 0.4), also
    wrt the doses' inputs."""
    doses = sl.Doses(time=[1.0, 2.0], amount=[0.3, 0.4], state="x", rate=[0.0, 0.4])

    def solve(a, b, x0, options=TIGHT):
        s = sl.Solver(SAW, solver=method, **options)
        s.set_params_dict({"a": a, "b": b})
        out = s.make_output_buffers(SAW_TVALS)
        s.solve(0.0, SAW_TVALS, np.array([x0]), out, doses=doses)
        return out[:, 0]

    solver = sl.Solver(SAW, solver=method, sens_mode="simultaneous", **TIGHT)
    solver.set_params_dict({"a": A, "b": B})
    y, sens = solver.make_output_buffers(SAW_TVALS)
    solver.solve(0.0, SAW_TVALS, np.array([X0]), y, sens, doses=doses)
    x, h = np.array([A, B, X0]), 1e-6
    fd = np.stack([(solve(*(x + h * np.eye(3)[k])) - solve(*(x - h * np.eye(3)[k]))) / (2 * h)
                   for k in range(3)], axis=1)
    np.testing.assert_allclose(sens[:, :, 0], fd, rtol=0, atol=1e-6)
    assert np.all(np.abs(sens[:, :, 0]) < 10) and np.sum(np.diff(y[:, 0]) < 0) >= 8
    adj = sl.AdjointSolver(SAW, solver=method, solver_backward="ERK", **TIGHT)
    adj.set_params_dict({"a": A, "b": B})
    y2, grad, lam = adj.make_output_buffers(SAW_TVALS)
    adj.solve_forward(0.0, SAW_TVALS, np.array([X0]), y2, doses=doses)
    np.testing.assert_allclose(y2, y, rtol=0, atol=1e-9)
    grads = np.cos(SAW_TVALS)[:, None]
    dose_grads = np.zeros((3, 2))
    adj.solve_backward(SAW_TVALS[-1], 0.0, SAW_TVALS, grads, grad, lam, dose_grads_out=dose_grads)
    np.testing.assert_allclose(np.concatenate([grad, -lam]), grads[:, 0] @ sens[:, :, 0], rtol=1e-8)
    # The doses' times, amounts and rates: forward sensitivities (their jumps at the doses,
    # carried through the resets) = adjoint = finite differences.
    with_doses = sl.Solver(SAW, solver=method, sens_mode="simultaneous", sens_doses=2, **TIGHT)
    with_doses.set_params_dict({"a": A, "b": B})
    y3, sens3 = with_doses.make_output_buffers(SAW_TVALS)
    with_doses.solve(0.0, SAW_TVALS, np.array([X0]), y3, sens3, doses=doses)
    forward = (grads[:, 0] @ sens3[:, 3:, 0]).reshape(2, 3).T  # rows: time, amount, rate
    np.testing.assert_allclose(forward, dose_grads, rtol=1e-8, atol=1e-9)

    def loss(time, amount, rate):
        s = sl.Solver(SAW, solver=method, **TIGHT)
        s.set_params_dict({"a": A, "b": B})
        out = s.make_output_buffers(SAW_TVALS)
        s.solve(0.0, SAW_TVALS, np.array([X0]), out, doses=sl.Doses(time, amount, "x", rate=rate))
        return grads[:, 0] @ out[:, 0]

    # One-sided, moving later: the infusion starts at an output time (pre-dose there), where
    # L has a kink.
    inputs = [np.array([1.0, 2.0]), np.array([0.3, 0.4]), np.array([0.0, 0.4])]
    for row, k in [(0, 0), (1, 0), (0, 1), (1, 1), (2, 1)]:
        later = [x + h * (i == row) * np.eye(2)[k] for i, x in enumerate(inputs)]
        assert forward[row, k] == pytest.approx((loss(*later) - loss(*inputs)) / h, rel=1e-5, abs=1e-5)


@FORWARD
def test_an_event_without_reset_changes_nothing(method):
    """An event at the ball's apexes that resets nothing: the solve restarts there, and values,
    sensitivities and gradients stay those of the closed form."""
    problem = sl.SympyProblem(
        params={"gravity": (), "e": ()}, states={"height": (), "velocity": ()}, rhs_sympy=ball_rhs,
        events={"bounce": bounce(), "apex": sl.Event(condition=lambda t, y, p: y.velocity, direction="falling")})
    solver = sl.Solver(problem, solver=method, sens_mode="simultaneous", **TIGHT)
    solver.set_params_dict(BALL_PARAMS)
    y, sens = solver.make_output_buffers(TVALS)
    solver.solve(0.0, TVALS, np.array([H0, V0]), y, sens)
    expected = ball_derivatives(TVALS)
    np.testing.assert_allclose(y, ball(TVALS, GRAVITY, E, H0, V0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(sens, expected, rtol=0, atol=1e-7 * np.abs(expected).max())
    adj = sl.AdjointSolver(problem, solver=method, solver_backward="ERK", **TIGHT)
    adj.set_params_dict(BALL_PARAMS)
    y2, grad, lam = adj.make_output_buffers(TVALS)
    adj.solve_forward(0.0, TVALS, np.array([H0, V0]), y2)
    grads = np.random.default_rng(4).normal(size=y2.shape)
    adj.solve_backward(TVALS[-1], 0.0, TVALS, grads, grad, lam)
    np.testing.assert_allclose(np.concatenate([grad, -lam]), np.einsum("ij,ikj->k", grads, expected), rtol=1e-7)


def test_pickled_op_with_events():
    import pickle

    import pytensor
    import pytensor.tensor as pt
    from sunode_like.wrappers.as_pytensor import solve_ivp

    e = pt.dscalar("e")
    result = solve_ivp(y0={"height": (np.array(H0), ()), "velocity": (np.array(V0), ())},
                       params={"gravity": (np.array(GRAVITY), ()), "e": (e, ())}, rhs=ball_rhs,
                       tvals=TVALS, t0=0.0, events={"bounce": bounce()},
                       solver_kwargs={**TIGHT, "solver_backward": "ERK"})
    op = pickle.loads(pickle.dumps(result.op))
    assert op == result.op and op.problem.events == BALL.events
    loss = result.y_hat["height"].sum()
    f = pytensor.function([e], [loss, pytensor.grad(loss, e)])
    f2 = pickle.loads(pickle.dumps(f))
    for a, b in zip(f2(E), f(E)):
        np.testing.assert_allclose(a, b, rtol=1e-14)
    np.testing.assert_allclose(f2(E)[1], ball_derivatives(TVALS)[:, 1, 0].sum(), rtol=1e-7)


@FORWARD
def test_several_roots_in_one_step_and_at_one_time(method):
    """x' = a, w' = 2 a, u' = a, each reset to 0 at 1: w's roots fall between x's, and x
    and u reach 1 at the same times (both events apply there, one after the other). Each is
    a sawtooth: values and d/da against the closed form."""
    def resets(name):
        return sl.Event(condition=lambda t, y, p: getattr(y, name) - 1, direction="rising",
                        reset=lambda t, y, p: {name: 0})

    problem = sl.SympyProblem(params={"a": ()}, states={"x": (), "w": (), "u": ()},
                              rhs_sympy=lambda t, y, p: {"x": p.a, "w": 2 * p.a, "u": p.a},
                              events={"x": resets("x"), "w": resets("w"), "u": resets("u")})
    a, tvals = 1.3, np.linspace(0.0, 4.9, 11)  # no root at an output time
    expected = np.stack([sawtooth(tvals, a, 0.0, 0.0), sawtooth(tvals, 2 * a, 0.0, 0.0),
                         sawtooth(tvals, a, 0.0, 0.0)], axis=1)
    derivative = np.stack([np.imag(sawtooth(tvals, k * (a + 1e-30j), 0.0, 0.0)) / 1e-30 for k in (1, 2, 1)], axis=1)
    solver = sl.Solver(problem, solver=method, sens_mode="simultaneous", **TIGHT)
    solver.set_params_dict({"a": a})
    y, sens = solver.make_output_buffers(tvals)
    solver.solve(0.0, tvals, np.zeros(3), y, sens)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(sens[:, 0], derivative, rtol=0, atol=1e-8)
    adj = sl.AdjointSolver(problem, solver=method, solver_backward="ERK", **TIGHT)
    adj.set_params_dict({"a": a})
    y2, grad, lam = adj.make_output_buffers(tvals)
    adj.solve_forward(0.0, tvals, np.zeros(3), y2)
    weights = np.cos(np.arange(y2.size)).reshape(y2.shape)
    adj.solve_backward(tvals[-1], 0.0, tvals, weights, grad, lam)
    np.testing.assert_allclose(grad, [np.sum(weights * derivative)], rtol=1e-8)


def test_solves_with_events_do_not_grow_memory(memory):
    """Forward solves with sensitivities and adjoints across bounces, a failing solve (its
    error path), and solvers made and dropped."""
    import helpers

    tvals = TVALS[TVALS <= 2.0]

    def run(n):
        for _ in range(n):
            solver = sl.Solver(BALL, sens_mode="simultaneous", **TIGHT)
            solver.set_params_dict(BALL_PARAMS)
            y, sens = solver.make_output_buffers(tvals)
            solver.solve(0.0, tvals, np.array([H0, V0]), y, sens)
            adj = sl.AdjointSolver(BALL, solver_backward="ERK", **TIGHT)
            adj.set_params_dict(BALL_PARAMS)
            y2, grad, lam = adj.make_output_buffers(tvals)
            for _ in range(5):
                adj.solve_forward(0.0, tvals, np.array([H0, V0]), y2)
                adj.solve_backward(tvals[-1], 0.0, tvals, y2, grad, lam)
            try:
                solver.solve(0.0, np.array([1.0, 8.0]), np.array([H0, V0]), y[:2], sens[:2])
            except SolverError:
                pass
            else:
                raise AssertionError("the bounces accumulate before t = 6")
        return grad

    grad = helpers.assert_no_memory_growth(memory, run, 20, 200)
    assert np.all(np.isfinite(grad))


@FORWARD
@pytest.mark.parametrize("backward", ["ERK", "DIRK"])
def test_events_sharing_a_root_move_with_its_time(method, backward):
    """x' = 1, z' = 0 from (x0, z0): at x = z (tau = z0 - x0) `add` sets x -> x + d, then
    `set` (the same root) x -> b, so x(T) = b + T - tau and dx(T)/d(d, b, x0, z0) =
    (0, 1, 1, -1): the second event's time is the root's, not moved by the first's reset."""
    crossing = dict(condition=lambda t, y, p: y.x - y.z, direction="rising")
    problem = sl.SympyProblem(
        params={"d": (), "b": ()}, states={"x": (), "z": ()}, rhs_sympy=lambda t, y, p: {"x": 1.0, "z": 0},
        events={"add": sl.Event(**crossing, reset=lambda t, y, p: {"x": y.x + p.d}),
                "set": sl.Event(**crossing, reset=lambda t, y, p: {"x": p.b})})
    params, y0, tvals = np.array([0.3, 0.2]), np.array([0.0, 1.0]), np.array([0.0, 0.5, 1.5])
    solver = sl.Solver(problem, solver=method, sens_mode="simultaneous", **TIGHT)
    solver.set_params(params)
    y, sens = solver.make_output_buffers(tvals)
    solver.solve(0.0, tvals, y0, y, sens)
    np.testing.assert_allclose(y[-1, 0], 0.2 + 1.5 - 1.0, rtol=1e-9)
    np.testing.assert_allclose(sens[-1, :, 0], [0.0, 1.0, 1.0, -1.0], rtol=0, atol=1e-8)
    adj = sl.AdjointSolver(problem, solver=method, solver_backward=backward, **TIGHT)
    adj.set_params(params)
    y2, grad, lam = adj.make_output_buffers(tvals)
    adj.solve_forward(0.0, tvals, y0, y2)
    weights = np.zeros_like(y2)
    weights[-1, 0] = 1.0
    adj.solve_backward(tvals[-1], 0.0, tvals, weights, grad, lam)
    np.testing.assert_allclose(np.concatenate([grad, -lam]), [0.0, 1.0, 1.0, -1.0], rtol=0, atol=1e-8)


@FORWARD
@pytest.mark.parametrize("backward", ["ERK", "DIRK"])
def test_adjoint_across_events_from_a_nonzero_t0(method, backward):
    """x' = -k x, refilled x -> x + d at x = c, from t0 = 0.2056: the event times are t0 +
    tau of the roots, rounded, and the backward stops there must still see the records on
    each side (the ERK backward failed at the first). Adjoint = forward sensitivities."""
    problem = sl.SympyProblem(
        params={"k": (), "c": (), "d": ()}, states={"x": ()}, rhs_sympy=lambda t, y, p: {"x": -p.k * y.x},
        events={"refill": sl.Event(condition=lambda t, y, p: y.x - p.c, direction="falling",
                                   reset=lambda t, y, p: {"x": y.x + p.d})})
    params = {"k": 2.6223207239620048, "c": 0.5290179252879884, "d": 1.1312086974320525}
    t0, x0 = 0.20560350919001547, np.array([1.702739305582055])
    tvals = np.linspace(t0, 7.953819164529868, 20)  # 17 refills
    solver = sl.Solver(problem, solver="BDF", sens_mode="simultaneous", **TIGHT)
    solver.set_params_dict(params)
    y, sens = solver.make_output_buffers(tvals)
    solver.solve(t0, tvals, x0, y, sens)
    adj = sl.AdjointSolver(problem, solver=method, solver_backward=backward, **TIGHT)
    adj.set_params_dict(params)
    y2, grad, lam = adj.make_output_buffers(tvals)
    adj.solve_forward(t0, tvals, x0, y2)
    weights = np.cos(np.arange(len(tvals)))[:, None]
    adj.solve_backward(tvals[-1], t0, tvals, weights, grad, lam)
    np.testing.assert_allclose(np.concatenate([grad, -lam]), weights[:, 0] @ sens[:, :, 0], rtol=1e-7)


@FORWARD
@pytest.mark.parametrize("tvals", [[1.0, 3.0], [1.0, 1.5, 3.0]])
def test_an_event_at_a_dose_time_acts_before_the_dose(method, tvals):
    """x' = -k x from 1, at t = 1.5 the event x -> r x and a bolus of a: the event first
    (it belongs to the flow arriving there), so x(3) = (r exp(-1.5 k) + a) exp(-1.5 k).
    ERK and DIRK lost the event (g = t - 1.5 was an ulp short at the stop and zero at the
    restart); BDF without an output there failed ("tstop behind current t")."""
    problem = sl.SympyProblem(
        params={"k": (), "r": ()}, states={"x": ()}, rhs_sympy=lambda t, y, p: {"x": -p.k * y.x},
        events={"e": sl.Event(condition=lambda t, y, p: t - 1.5, direction="rising",
                              reset=lambda t, y, p: {"x": p.r * y.x})})
    k, r, a, tvals = 0.7, 0.5, 0.7, np.array(tvals)
    doses = sl.Doses(time=[1.5], amount=[a], state="x")
    decay = np.exp(-1.5 * k)
    expected = (r * decay + a) * decay
    d_expected = [-1.5 * expected - 1.5 * r * decay ** 2, decay ** 2, decay]  # d/d(k, r, a)
    solver = sl.Solver(problem, solver=method, sens_mode="simultaneous", **TIGHT)
    solver.set_params_dict({"k": k, "r": r})
    y, sens = solver.make_output_buffers(tvals)
    solver.solve(0.0, tvals, np.array([1.0]), y, sens, doses=doses)
    np.testing.assert_allclose(y[-1, 0], expected, rtol=1e-9)
    np.testing.assert_allclose(sens[-1, :2, 0], d_expected[:2], rtol=1e-8)
    adj = sl.AdjointSolver(problem, solver=method, solver_backward="DIRK", **TIGHT)
    adj.set_params_dict({"k": k, "r": r})
    y2, grad, lam = adj.make_output_buffers(tvals)
    adj.solve_forward(0.0, tvals, np.array([1.0]), y2, doses=doses)
    weights = np.zeros_like(y2)
    weights[-1, 0] = 1.0
    dose_grads = np.zeros((3, 1))  # d/d(time, amount, rate)
    adj.solve_backward(tvals[-1], 0.0, tvals, weights, grad, lam, dose_grads_out=dose_grads)
    np.testing.assert_allclose(grad, d_expected[:2], rtol=1e-8)
    np.testing.assert_allclose(dose_grads[1, 0], d_expected[2], rtol=1e-8)


@FORWARD
def test_max_step_resolves_a_condition_with_several_roots_per_step(method):
    """x' = a with x -> x + d at each rising root of sin(om t + ph): 7 roots on [0, T]. The
    solution has no local error, so ERK's and DIRK's steps outgrow the period and root
    finding, which sees g at the steps' ends, missed them all; max_step = period / 4 finds
    each (BDF, whose steps stayed shorter, found them either way)."""
    problem = sl.SympyProblem(
        params={"a": (), "om": (), "ph": (), "d": ()}, states={"x": ()},
        rhs_sympy=lambda t, y, p: {"x": p.a},
        events={"tick": sl.Event(condition=lambda t, y, p: sympy.sin(p.om * t + p.ph), direction="rising",
                                 reset=lambda t, y, p: {"x": y.x + p.d})})
    params = {"a": 2.88, "om": 4.61, "ph": 1.74, "d": 0.35}
    tvals = np.linspace(0.0, 10.41, 28)
    roots = (2 * np.pi * np.arange(1, 10) - params["ph"]) / params["om"]
    n_roots = np.sum((roots > 0) & (roots < tvals[-1]))
    assert n_roots == 7
    solver = sl.Solver(problem, solver=method, max_step=np.pi / 2 / params["om"], **TIGHT)
    solver.set_params_dict(params)
    y = solver.make_output_buffers(tvals)
    solver.solve(0.0, tvals, np.array([0.3]), y)
    fired = np.searchsorted(roots, tvals, side="left")  # roots before each output
    np.testing.assert_allclose(y[:, 0], 0.3 + params["a"] * tvals + params["d"] * fired, rtol=1e-9)
    for bad in (0.0, -1.0, np.nan):
        with pytest.raises(ValueError, match="max_step"):
            sl.Solver(problem, solver=method, max_step=bad)
