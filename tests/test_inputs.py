"""Data-driven inputs u(t): the interpolation math against scipy's interpolants, and
models with inputs against scipy solves, closed forms and finite differences."""
import pathlib
import pickle

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import scipy.integrate
import scipy.interpolate
from pytensor.gradient import verify_grad

import sunode_like as sl
from helpers import normalised_error, nutpie_logp_and_gradient
from sunode_like import _interpolation
from sunode_like._interpolation import Interpolated
from sunode_like.wrappers.as_pytensor import solve_ivp
from sunode_like.wrappers.as_pytensor_dae import solve_dae_ivp

KNOTS = np.array([0.0, 0.7, 1.5, 2.0, 3.2, 4.0, 5.5])
VALUES = np.array([1.0, 2.5, -0.5, 0.3, 1.7, 1.1, -0.8])


def scipy_interpolant(kind, knots=KNOTS, values=VALUES):
    """scipy's interpolant of ``kind``, held constant outside the knots (our rule)."""
    if kind == "natural":
        spline = scipy.interpolate.CubicSpline(knots, values, bc_type="natural")
    else:
        spline = scipy.interpolate.interp1d(knots, values, kind=kind)
    return lambda t: spline(np.clip(t, knots[0], knots[-1]))


def ours(kind, t, values=VALUES, knots=KNOTS, derivative=False):
    spec = Interpolated(knots, "v", kind)
    return np.array([_interpolation.evaluate(s, spec.times, spec.kind_code, spec.factors, values, 0, derivative)
                     for s in np.atleast_1d(t)])


# Between the knots, on them, and outside on both sides.
T = np.concatenate([np.linspace(-1.0, 6.5, 301), KNOTS])


@pytest.mark.parametrize("kind", ["previous", "linear", "natural"])
def test_values_match_scipy(kind):
    np.testing.assert_allclose(ours(kind, T), scipy_interpolant(kind)(T), rtol=1e-14, atol=1e-14)


def test_previous_is_right_continuous_and_holds_the_ends():
    # At a knot the new value holds; before the first and after the last knot, the end values.
    np.testing.assert_array_equal(ours("previous", KNOTS), VALUES)
    np.testing.assert_array_equal(ours("previous", KNOTS[1:] - 1e-12), VALUES[:-1])
    np.testing.assert_array_equal(ours("previous", [-5.0, 100.0]), [VALUES[0], VALUES[-1]])


@pytest.mark.parametrize("kind", ["linear", "natural"])
def test_constant_outside_the_knots(kind):
    np.testing.assert_array_equal(ours(kind, [-3.0, -1e-9, 5.5 + 1e-9, 40.0]),
                                  [VALUES[0], VALUES[0], VALUES[-1], VALUES[-1]])
    np.testing.assert_array_equal(ours(kind, [-3.0, 40.0], derivative=True), [0.0, 0.0])


def test_slopes_match_scipy():
    t = np.linspace(0.01, 5.49, 157)
    spline = scipy.interpolate.CubicSpline(KNOTS, VALUES, bc_type="natural")
    np.testing.assert_allclose(ours("natural", t, derivative=True), spline(t, 1), rtol=1e-13, atol=1e-13)
    linear = np.interp(t + 1e-7, KNOTS, VALUES) - np.interp(t - 1e-7, KNOTS, VALUES)
    np.testing.assert_allclose(ours("linear", t, derivative=True), linear / 2e-7, rtol=1e-7)
    np.testing.assert_array_equal(ours("previous", t, derivative=True), 0.0)


@pytest.mark.parametrize("kind", ["previous", "linear", "natural"])
def test_basis_is_the_derivative_wrt_the_values(kind):
    # u is linear in the values: u(t) = sum_k v_k phi_k(t), phi_k = u for v = e_k.
    spec = Interpolated(KNOTS, "v", kind)
    phi = np.empty(len(KNOTS) + 3)
    for t in T:
        _interpolation.basis(t, spec.times, spec.kind_code, spec.factors, phi, 3)
        cardinal = [ours(kind, t, values=e)[0] for e in np.eye(len(KNOTS))]
        np.testing.assert_allclose(phi[3:], cardinal, rtol=1e-14, atol=1e-14)
        assert abs(phi[3:] @ VALUES - ours(kind, t)[0]) < 1e-13


def test_natural_spline_with_many_uneven_knots():
    rng = np.random.default_rng(4)
    knots = np.cumsum(rng.uniform(0.01, 1.0, 300))
    values = rng.normal(size=300)
    t = np.concatenate([rng.uniform(knots[0] - 1, knots[-1] + 1, 500), knots])
    reference = scipy_interpolant("natural", knots, values)(t)
    np.testing.assert_allclose(ours("natural", t, values, knots), reference, rtol=1e-12, atol=1e-12)
    spec, phi = Interpolated(knots, "v", "natural"), np.empty(300)
    for s in t[:20]:
        _interpolation.basis(s, spec.times, spec.kind_code, spec.factors, phi, 0)
        assert abs(phi @ values - scipy_interpolant("natural", knots, values)(s)) < 1e-12


def test_two_knot_natural_spline_is_linear():
    knots, values = np.array([1.0, 3.0]), np.array([2.0, -1.0])
    t = np.linspace(0.0, 4.0, 41)
    np.testing.assert_allclose(ours("natural", t, values, knots), np.interp(t, knots, values), rtol=1e-15)


@pytest.mark.parametrize("times, message", [
    ([0.0, 2.0, 1.0], "strictly increasing"),
    ([0.0, 1.0, 1.0, 2.0], "duplicate knots"),
    ([0.0, np.nan, 2.0], "finite"),
    ([0.0, np.inf], "finite"),
    ([1.0], "at least 2"),
    ([[0.0, 1.0]], "1-d"),
])
def test_bad_knots(times, message):
    with pytest.raises(ValueError, match=message):
        Interpolated(times, "v")


def test_bad_kind_and_values():
    with pytest.raises(ValueError, match="`kind='cubic'` is not supported"):
        Interpolated(KNOTS, "v", kind="cubic")
    with pytest.raises(TypeError, match="must name a param"):
        Interpolated(KNOTS, 3)
    with pytest.raises(TypeError, match="`times` must be real"):
        Interpolated(KNOTS + 1j, "v")


# -- models with inputs ---------------------------------------------------------------------

K = 0.6
TIGHT = {"rtol": 1e-12, "atol": 1e-12}
TVALS = np.linspace(-0.5, 6.5, 15)  # from before the first knot to after the last
T0 = -1.0


def forced(kind, knots=KNOTS, **options):
    """x' = -k x + u(t) (1 + 0.2 x): the input enters nonlinearly, and with a param."""
    return sl.SympyProblem(
        params={"k": (), "temp_values": (len(knots),)}, states={"x": ()},
        inputs={"temp": sl.Interpolated(knots, values="temp_values", kind=kind)},
        rhs_sympy=lambda t, y, p, u: {"x": -p.k * y.x + u.temp * (1 + 0.2 * y.x)}, **options)


def forced_reference(kind, values=VALUES, k=K, x0=1.0):
    """scipy's solve of the same model with scipy's interpolant, restarted at every knot
    (the input is not smooth there) and every output time."""
    u = scipy_interpolant(kind, values=values)
    breaks = np.unique(np.concatenate([[T0], KNOTS, TVALS]))
    x, out = x0, {}
    for a, b in zip(breaks[:-1], breaks[1:]):
        # On [a, b) "previous" is u(a); the others are continuous.
        piece = lambda t, x, a=a: -k * x + u(a if kind == "previous" else t) * (1 + 0.2 * x)
        x = scipy.integrate.solve_ivp(piece, (a, b), [x], method="DOP853", rtol=1e-13, atol=1e-13).y[0, -1]
        out[b] = x
    return np.array([out[t] for t in TVALS])


def solve(problem, params, tvals=TVALS, t0=T0, x0=1.0, rtol=1e-10, atol=1e-10, **options):
    solver = sl.Solver(problem, rtol=rtol, atol=atol, **options)
    solver.set_params_dict(params)
    y = solver.make_output_buffers(tvals)
    solver.solve(t0, tvals, np.array([x0]), y)
    return y[:, 0], solver.stats()


# BDF steps across the knots; ARKODE's one-step methods (and the default, ERK here) stop at
# each and restart with the next piece.
@pytest.mark.parametrize("method", ["BDF", "ERK", "DIRK"])
@pytest.mark.parametrize("kind", ["previous", "linear", "natural"])
def test_forced_model_matches_scipy(kind, method):
    # Right to 1e-10 (solved at 1e-12: the global error of BDF exceeds its local tolerance).
    x, _ = solve(forced(kind), {"k": K, "temp_values": VALUES}, rtol=1e-12, atol=1e-12, solver=method)
    assert normalised_error(x, forced_reference(kind), 1e-10, 1e-10) < 5


def piecewise_linear_decay(t, knots, values, k, t0, x0):
    """x' = -k x + u(t), u piecewise linear (constant outside the knots), in closed form: on
    a piece where u = a + b t, x = x_p + (x(s) - x_p(s)) exp(-k (t - s)), x_p = (a + b t)/k - b/k^2."""
    breaks = np.concatenate([[t0], knots[(knots > t0) & (knots < t)], [t]])
    x = x0
    for s, e in zip(breaks[:-1], breaks[1:]):
        mid = (s + e) / 2
        b = 0.0 if mid < knots[0] or mid > knots[-1] else np.diff(np.interp([s, e], knots, values))[0] / (e - s)
        a = np.interp(s, knots, values) - b * s
        particular = lambda time: (a + b * time) / k - b / k**2
        x = particular(e) + (x - particular(s)) * np.exp(-k * (e - s))
    return x


def test_linear_ode_with_piecewise_linear_input_closed_form():
    problem = sl.SympyProblem(
        params={"k": (), "v": (len(KNOTS),)}, states={"x": ()},
        inputs={"u": sl.Interpolated(KNOTS, "v", "linear")},
        rhs_sympy=lambda t, y, p, u: {"x": -p.k * y.x + u.u})
    x, _ = solve(problem, {"k": K, "v": VALUES}, rtol=1e-12, atol=1e-12)
    exact = [piecewise_linear_decay(t, KNOTS, VALUES, K, T0, 1.0) for t in TVALS]
    assert normalised_error(x, np.array(exact), 1e-10, 1e-10) < 5


def loss_weights():
    return np.linspace(1.0, 2.0, len(TVALS))[:, None]


# The one-step backwards stop at the knots: without, the DIRK's gradients wrt a "previous"
# input's values were 4e-4 wrong at rtol 1e-8 (1.4e-5 at 1e-11), its error estimate
# blind to the integrand's jump inside a step; the ERK backward failed its error test at a
# "previous" knot, where the kernels saw the next value (now an ulp before it).
@pytest.mark.parametrize("methods", [{"solver": "BDF", "solver_backward": "BDF"}, {},
                                     {"solver": "BDF", "solver_backward": "DIRK"},
                                     {"solver": "BDF", "solver_backward": "ERK"},
                                     {"solver": "ERK"}, {"solver": "DIRK"}],
                         ids=["BDF", "default", "BDF-DIRK", "BDF-ERK", "ERK", "DIRK"])
@pytest.mark.parametrize("kind", ["previous", "linear", "natural"])
def test_gradients_wrt_values_adjoint_forward_and_finite_differences(kind, methods):
    problem = forced(kind)
    params = {"k": K, "temp_values": VALUES}
    adj = sl.AdjointSolver(problem, rtol=1e-11, atol=1e-11, **methods)
    adj.set_params_dict(params)
    y_out, _, _ = adj.make_output_buffers(TVALS)
    adj.solve_forward(T0, TVALS, np.array([1.0]), y_out)
    adjoint = adj.gradients(T0, TVALS, np.array([1.0]), y_out, np.broadcast_to(loss_weights(), y_out.shape)).params

    forward = sl.Solver(problem, sens_mode="simultaneous", rtol=1e-11, atol=1e-11)
    forward.set_params_dict(params)
    y, sens = forward.make_output_buffers(TVALS)
    forward.solve(T0, TVALS, np.array([1.0]), y, sens)
    forward_gradient = np.einsum("tsj,tj->s", sens, np.broadcast_to(loss_weights(), y.shape))[:problem.n_dparams]

    # Central differences of scipy's solve restarted at the knots (our own solves' error
    # across the knots, ~1e-11, would be 1e-6 of these differences).
    loss = lambda k, values: float(loss_weights()[:, 0] @ forced_reference(kind, values, k))
    h = 1e-5
    central = [(loss(K + h, VALUES) - loss(K - h, VALUES)) / (2 * h)]
    central += [(loss(K, VALUES + h * e) - loss(K, VALUES - h * e)) / (2 * h) for e in np.eye(len(VALUES))]
    assert np.abs(adjoint).min() > 1e-3  # every value matters (an end value only after its knot)
    np.testing.assert_allclose(adjoint, forward_gradient, rtol=1e-8)
    np.testing.assert_allclose(adjoint, central, rtol=1e-7)


def test_values_that_are_not_derivative_params():
    # Gradients wrt k alone, the values data: the same number as with every param.
    adj = sl.AdjointSolver(forced("natural", derivative_params=["k"]), **TIGHT)
    adj.set_params_dict({"k": K, "temp_values": VALUES})
    y_out, _, _ = adj.make_output_buffers(TVALS)
    adj.solve_forward(T0, TVALS, np.array([1.0]), y_out)
    gradient = adj.gradients(T0, TVALS, np.array([1.0]), y_out, np.broadcast_to(loss_weights(), y_out.shape))
    assert gradient.params.shape == (1,)
    np.testing.assert_allclose(gradient.params[0], solver_gradient("natural", every=True)[0], rtol=1e-9)


def test_constant_beyond_the_knots_in_a_solve():
    # x' = u: before the first knot x grows at v_0, after the last at v_{n-1}.
    problem = sl.SympyProblem(params={"v": (len(KNOTS),)}, states={"x": ()},
                              inputs={"u": sl.Interpolated(KNOTS, "v", "natural")},
                              rhs_sympy=lambda t, y, p, u: {"x": u.u})
    tvals = np.array([-1.0, KNOTS[0], KNOTS[-1], 8.0])
    x, _ = solve(problem, {"v": VALUES}, tvals=tvals, t0=-3.0, x0=0.0, rtol=1e-12, atol=1e-12)
    inside = scipy.interpolate.CubicSpline(KNOTS, VALUES, bc_type="natural").integrate(KNOTS[0], KNOTS[-1])
    expected = [2 * VALUES[0], 3 * VALUES[0], 3 * VALUES[0] + inside, 3 * VALUES[0] + inside + 2.5 * VALUES[-1]]
    np.testing.assert_allclose(x, expected, rtol=1e-9, atol=1e-10)


def test_knots_are_part_of_the_model():
    # Two problems that differ only in their knots: different kernels, different results.
    shifted = KNOTS + np.r_[0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0]
    first, second = forced("linear"), forced("linear", knots=shifted)
    assert first.content_hash != second.content_hash
    assert forced("natural").content_hash != first.content_hash
    assert forced("linear").content_hash == first.content_hash
    params = {"k": K, "temp_values": VALUES}
    x1, x2 = solve(first, params, rtol=1e-12, atol=1e-12)[0], solve(second, params)[0]
    assert np.abs(x1 - x2).max() > 1e-3
    assert normalised_error(x1, forced_reference("linear"), 1e-10, 1e-10) < 5


def bad_problem(inputs, params=None):
    return sl.SympyProblem(params=params or {"k": (), "v": (len(KNOTS),)}, states={"x": ()}, inputs=inputs,
                           rhs_sympy=lambda t, y, p, u: {"x": -p.k * y.x})


@pytest.mark.parametrize("inputs, error, message", [
    ({"x": sl.Interpolated(KNOTS, "v")}, ValueError, r"`inputs\['x'\]` has the name of an entry of `states`"),
    ({"k": sl.Interpolated(KNOTS, "v")}, ValueError, r"`inputs\['k'\]` has the name of an entry of `params`"),
    ({"u": sl.Interpolated(KNOTS[:-1], "v")}, ValueError, r"which has shape \(7,\); expected \(6,\)"),
    ({"u": sl.Interpolated(KNOTS, "k")}, ValueError, r"which has shape \(\); expected \(7,\)"),
    ({"u": sl.Interpolated(KNOTS, "w")}, ValueError, r"`inputs\['u'\]` takes its values from a param that does not exist: `params` has no entry 'w'"),
    ({"u": (KNOTS, VALUES)}, TypeError, r"`inputs\['u'\]` must be an sl.Interpolated"),
    ([sl.Interpolated(KNOTS, "v")], TypeError, "`inputs` must be a dict"),
    ({"my input": sl.Interpolated(KNOTS, "v")}, ValueError, "`inputs` names must be identifiers"),
])
def test_bad_inputs(inputs, error, message):
    with pytest.raises(error, match=message):
        bad_problem(inputs)


def test_values_of_a_nested_param_and_an_unknown_input():
    problem = sl.SympyProblem(params={"k": (), "data": {"v": (len(KNOTS),)}}, states={"x": ()},
                              inputs={"u": sl.Interpolated(KNOTS, "data.v", "linear")},
                              rhs_sympy=lambda t, y, p, u: {"x": -p.k * y.x + u.u})
    x, _ = solve(problem, {"k": K, "data": {"v": VALUES}}, rtol=1e-12, atol=1e-12)
    assert abs(x[-1] - piecewise_linear_decay(TVALS[-1], KNOTS, VALUES, K, T0, 1.0)) < 1e-10
    with pytest.raises(AttributeError, match="`inputs` has no entry 'temp'; entries here are"):
        sl.SympyProblem(params={"v": (len(KNOTS),)}, states={"x": ()}, inputs={"u": sl.Interpolated(KNOTS, "v")},
                        rhs_sympy=lambda t, y, p, u: {"x": u.temp})


@pytest.mark.parametrize("kind", ["linear", "natural"])
def test_dae_with_an_input(kind):
    # The forced model with u(t) as an algebraic state z (0 = z - u), and with u(t) inside
    # dF/dy' (so that its time derivative du/dt enters the adjoint): 2 x' = 2 (...).
    problem = sl.DAEProblem(
        params={"k": (), "temp_values": (len(KNOTS),)},
        states={"x": (), "z": ()}, inputs={"temp": sl.Interpolated(KNOTS, "temp_values", kind)},
        residual_sympy=lambda t, y, yp, p, u: {
            "x": (2 + u.temp**2) * (yp.x + p.k * y.x - y.z * (1 + 0.2 * y.x)), "z": y.z - u.temp})
    params = {"k": K, "temp_values": VALUES}
    adj = sl.DAEAdjointSolver(problem, rtol=1e-12, atol=1e-12)
    adj.set_params_dict(params)
    y_out, _, _ = adj.make_output_buffers(TVALS)
    adj.solve_forward(T0, TVALS, np.array([1.0, 0.0]), y_out)
    assert normalised_error(y_out[:, 0], forced_reference(kind), 1e-10, 1e-10) < 5
    np.testing.assert_allclose(y_out[:, 1], scipy_interpolant(kind)(TVALS), rtol=1e-10, atol=1e-10)
    grads = np.zeros_like(y_out)
    grads[:, 0] = loss_weights()[:, 0]
    dae = adj.gradients(T0, TVALS, np.array([1.0, 0.0]), y_out, grads).params
    ode = sl.AdjointSolver(forced(kind), rtol=1e-12, atol=1e-12)
    ode.set_params_dict(params)
    x_out, _, _ = ode.make_output_buffers(TVALS)
    ode.solve_forward(T0, TVALS, np.array([1.0]), x_out)
    np.testing.assert_allclose(dae, ode.gradients(T0, TVALS, np.array([1.0]), x_out, grads[:, :1]).params,
                               rtol=1e-7)


# -- through solve_ivp ------------------------------------------------------------------------

def forced_rhs(t, y, p, u):
    return {"x": -p.k * y.x + u.temp * (1 + 0.2 * y.x)}


def forced_solve(values, kind, derivatives="adjoint"):
    """solve_ivp of the forced model, the values a tensor."""
    return solve_ivp(
        y0={"x": (np.array(1.0), ())}, params={"k": np.array(K), "temp_values": (values, (len(KNOTS),))},
        rhs=forced_rhs, tvals=TVALS, t0=T0, derivatives=derivatives, solver_kwargs=TIGHT,
        inputs={"temp": sl.Interpolated(KNOTS, "temp_values", kind)})


def forced_loss(values, kind, derivatives="adjoint"):
    """sum_i w_i x(tvals[i]) of `forced_solve`."""
    return (forced_solve(values, kind, derivatives).y_hat["x"] * loss_weights()[:, 0]).sum()


def solver_gradient(kind, every=False):
    """d loss / d values (``every``: d loss / d (k, values)) by the AdjointSolver (checked
    against finite differences above)."""
    adj = sl.AdjointSolver(forced(kind), **TIGHT)
    adj.set_params_dict({"k": K, "temp_values": VALUES})
    y_out, _, _ = adj.make_output_buffers(TVALS)
    adj.solve_forward(T0, TVALS, np.array([1.0]), y_out)
    gradient = adj.gradients(T0, TVALS, np.array([1.0]), y_out, np.broadcast_to(loss_weights(), y_out.shape))
    return gradient.params if every else gradient.params[1:]


@pytest.mark.parametrize("derivatives", ["adjoint", "forward"])
@pytest.mark.parametrize("mode", ["CVM", "NUMBA"])
@pytest.mark.parametrize("kind", ["previous", "natural"])
def test_solve_ivp_gradient_wrt_the_values(kind, mode, derivatives):
    values = pt.dvector("values")
    loss = forced_loss(values, kind, derivatives)
    f = pytensor.function([values], [loss, pytensor.grad(loss, values)], mode=mode)
    value, gradient = f(VALUES)
    assert abs(value - loss_weights()[:, 0] @ forced_reference(kind)) < 1e-8
    np.testing.assert_allclose(gradient, solver_gradient(kind), rtol=1e-8)


def test_solve_ivp_verify_grad_wrt_the_values():
    # One-sided differences (verify_grad's): error ~ eps f'' + (solve error)/eps. Stepping
    # across the knots, solves at rtol 1e-12 are right to ~1e-9 only, too coarse for eps =
    # 1e-6; the loss is nearly linear in the values, so eps = 1e-4 costs little.
    verify_grad(lambda v: forced_loss(v, "linear"), [VALUES], rng=np.random.default_rng(2), eps=1e-4,
                abs_tol=1e-5, rel_tol=1e-5)


def test_nutpie_logp_and_gradient_wrt_the_values():
    # A PyMC model whose forcing values are random variables: nutpie's compiled logp and
    # gradient (numba, no Python in the loop) equal PyMC's default backend's.
    pm = pytest.importorskip("pymc")
    pytest.importorskip("nutpie")

    data = forced_reference("natural") + 0.01 * np.sin(np.arange(len(TVALS)))
    with pm.Model() as model:
        values = pm.Normal("values", mu=VALUES, sigma=1.0, shape=len(KNOTS))
        pm.Normal("x", mu=forced_solve(values, "natural").y_hat["x"], sigma=0.05, observed=data)
    point = VALUES + 0.1
    expected_logp = model.compile_logp()({"values": point})
    expected_grad = model.compile_dlogp()({"values": point})
    logp, grad = nutpie_logp_and_gradient(model, point)
    np.testing.assert_allclose(logp, expected_logp, rtol=1e-10)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-8)


def test_solve_dae_ivp_with_an_input():
    values = pt.dvector("values")
    result = solve_dae_ivp(
        y0={"x": (np.array(1.0), ())}, params={"k": np.array(K), "temp_values": (values, (len(KNOTS),))},
        rhs=lambda t, x, z, p, u: {"x": -p.k * x.x + z.z * (1 + 0.2 * x.x)},
        algebraic=lambda t, x, z, p, u: {"z": z.z - u.temp}, algebraic_states={"z": ()},
        tvals=TVALS, t0=T0, solver_kwargs=TIGHT, inputs={"temp": sl.Interpolated(KNOTS, "temp_values", "linear")})
    loss = (result.y_hat["x"] * loss_weights()[:, 0]).sum()
    value, gradient = pytensor.function([values], [loss, pytensor.grad(loss, values)])(VALUES)
    assert abs(value - loss_weights()[:, 0] @ forced_reference("linear")) < 1e-8
    np.testing.assert_allclose(gradient, solver_gradient("linear"), rtol=1e-7)


def test_pickled_op_with_inputs():
    values = pt.dvector("values")
    result = forced_solve(values, "linear")
    assert pickle.loads(pickle.dumps(result.op)) == result.op
    loss = result.y_hat["x"].sum()
    f = pytensor.function([values], [loss, pytensor.grad(loss, values)])
    f2 = pickle.loads(pickle.dumps(f))
    for a, b in zip(f2(VALUES), f(VALUES)):
        np.testing.assert_allclose(a, b, rtol=1e-14)


def test_the_guides_example_runs_and_is_right():
    # The first example of docs/guide/inputs.md, against the closed form of x' = -k x + u.
    guide = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "guide" / "inputs.md").read_text()
    namespace = {}
    exec(guide.split("```python")[1].split("```")[0], namespace)
    solver, times = namespace["solver"], namespace["times"]
    tvals = np.linspace(0.5, 8.0, 16)
    y = solver.make_output_buffers(tvals)
    solver.solve(0.0, tvals, np.array([1.0]), y)
    values = solver.get_params_dict()["temp_values"]
    exact = [piecewise_linear_decay(t, times, values, 0.5, 0.0, 1.0) for t in tvals]
    np.testing.assert_allclose(y[:, 0], exact, rtol=1e-6)
