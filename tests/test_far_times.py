"""Solves whose times are far from 0: every backend integrates in tau = t - t0, so the
results do not depend on t0 (at t0 = 1e14, float64's spacing 0.016 once made decay 80%
wrong), while the kernels see the true time t.

The model, y' = -k y + a sin(w t), has the closed form y = P(w t) + exp(-k tau) (y0 - P(w t0))
with P(theta) = a (k sin(theta) - w cos(theta)) / (k^2 + w^2); a = 0 is plain decay. The
kernels get t as a float64, in steps of its spacing (0.016 at 1e14), so a forcing that
changes by more than the tolerance within one such step cannot be resolved: w is chosen per
t0 so that w times the spacing of t0 stays near 1e-8 (see docs/limitations.md). The closed
form takes sin(w t) at the same float64 products w * t the kernel computes.
"""
import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import sympy

import sunode_like as sl
from sunode_like.wrappers.as_pytensor import solve_ivp

# t0 -> forcing frequency w (see the module docstring).
FREQUENCIES = {0.0: 1.0, 1e8: 0.5, 1e12: 1e-4, 1e14: 1e-6, -1e14: 1e-6}
OFFSETS = np.array([1.0, 5.0, 20.0])  # tvals = t0 + OFFSETS, exactly representable
K, Y0 = 0.1, 1.3
WEIGHTS = np.array([0.7, -1.1, 2.0])  # L = sum_i WEIGHTS[i] y(tvals[i])
TIGHT = {"rtol": 1e-10, "atol": 1e-12}
TIGHT_BACKWARD = {"rtol_backward": 1e-10, "atol_backward": 1e-12, "rtol_quad": 1e-10,
                  "atol_quad": 1e-12}
RTOL = 1e-7


def forced_rhs(t, y, p):
    return {"y": -p.k * y.y + p.a * sympy.sin(p.w * t)}


def _closed_form():
    """y, dy/dk, dy/da, dy/dy0, dy/dt (at fixed t0) and dy/dt0 as numpy functions of
    (tau, theta = w t, theta0 = w t0, k, a, w, y0)."""
    tau, theta, theta0, k, a, w, y0 = sympy.symbols("tau theta theta0 k a w y0")

    def particular(th):
        return a * (k * sympy.sin(th) - w * sympy.cos(th)) / (k**2 + w**2)

    y = particular(theta) + sympy.exp(-k * tau) * (y0 - particular(theta0))
    # theta = w (t0 + tau): d/dt at fixed t0 is d/dtau + w d/dtheta; d/dt0 at fixed t is
    # -d/dtau + w d/dtheta0.
    dt = sympy.diff(y, tau) + w * sympy.diff(y, theta)
    dt0 = -sympy.diff(y, tau) + w * sympy.diff(y, theta0)
    exprs = [y, y.diff(k), y.diff(a), y.diff(y0), dt, dt0]
    return [sympy.lambdify((tau, theta, theta0, k, a, w, y0), e, "numpy") for e in exprs]


CLOSED_FORM = _closed_form()


def reference(t0, a):
    """(tvals, w, and per output time y, dy/dk, dy/da, dy/dy0, dy/dt, dy/dt0)."""
    w = FREQUENCIES[t0]
    tvals = t0 + OFFSETS
    args = (tvals - t0, w * tvals, w * t0, K, a, w, Y0)
    return tvals, w, [np.broadcast_to(f(*args), tvals.shape) for f in CLOSED_FORM]


def gradient_reference(t0, a):
    """dL/d(k, a), dL/dy0, dL/dt0 and dL/dtvals of L = WEIGHTS . y(tvals)."""
    _, _, (_, dk, da, dy0, dt, dt0) = reference(t0, a)
    return (np.array([WEIGHTS @ dk, WEIGHTS @ da]), WEIGHTS @ dy0, WEIGHTS @ dt0,
            WEIGHTS * dt)


def assert_relative(actual, expected, rtol=RTOL):
    """|actual - expected| <= rtol max |expected| (entries near a zero of the solution
    are compared to the size of the whole, not to themselves)."""
    expected = np.asarray(expected, dtype=float)
    scale = np.max(np.abs(expected))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


@pytest.fixture(scope="module")
def problems():
    """The model as an ODE, and the same y twice in a DAE, as a differential state x and an
    algebraic one z = x: x' = -k z + a sin(w t), 0 = z - x. (With the forcing as z itself,
    z would jump at every step of t's float64 spacing, which the error test on z cannot
    pass.)"""
    ode = sl.SympyProblem(params={"k": (), "a": (), "w": ()}, states={"y": ()},
                          rhs_sympy=forced_rhs, derivative_params=[("k",), ("a",)])
    dae = sl.DAEProblem(
        params={"k": (), "a": (), "w": ()}, differential_states={"x": ()},
        algebraic_states={"z": ()},
        rhs_sympy=lambda t, x, z, p: {"x": -p.k * z.z + p.a * sympy.sin(p.w * t)},
        algebraic_sympy=lambda t, x, z, p: {"z": z.z - x.x},
        derivative_params=[("k",), ("a",)])
    return {"ode": ode, "dae": dae}


# kind -> (solver, adjoint solver, y0, sens_mode).
KINDS = {"ode": (sl.Solver, sl.AdjointSolver, np.array([Y0]), "simultaneous"),
         "dae": (sl.DAESolver, sl.DAEAdjointSolver, np.array([Y0, 0.0]), "simultaneous")}
t0s = pytest.mark.parametrize("t0", list(FREQUENCIES))
amplitudes = pytest.mark.parametrize("a", [0.0, 0.5], ids=["decay", "forced"])
kinds = pytest.mark.parametrize("kind", list(KINDS))


def params(t0, a):
    return {"k": K, "a": a, "w": FREQUENCIES[t0]}


@t0s
@amplitudes
@kinds
def test_solve(problems, kind, t0, a):
    tvals, _, (y, *_) = reference(t0, a)
    solver_class, _, y0, _ = KINDS[kind]
    solver = solver_class(problems[kind], **TIGHT)
    solver.set_params_dict(params(t0, a))
    y_out = solver.make_output_buffers(tvals)
    solver.solve(t0, tvals, y0, y_out)
    for state in range(len(y0)):  # the DAE's z = x
        assert_relative(y_out[:, state], y)


@t0s
@amplitudes
@kinds
def test_forward_sensitivities(problems, kind, t0, a):
    tvals, _, (y, dk, da, dy0, _, _) = reference(t0, a)
    solver_class, _, y0, sens_mode = KINDS[kind]
    solver = solver_class(problems[kind], sens_mode=sens_mode, **TIGHT)
    solver.set_params_dict(params(t0, a))
    y_out, sens_out = solver.make_output_buffers(tvals)
    solver.solve(t0, tvals, y0, y_out, sens_out)
    for state in range(len(y0)):
        assert_relative(y_out[:, state], y)
        for row, expected in enumerate([dk, da, dy0]):  # the derivative params, then y0
            assert_relative(sens_out[:, row, state], expected)


@t0s
@amplitudes
@pytest.mark.parametrize("kind, backward", [("ode", "BDF"), ("ode", "ERK"), ("ode", "DIRK"),
                                            ("dae", None)])
def test_adjoint_gradients(problems, kind, backward, t0, a):
    tvals, _, (y, *_) = reference(t0, a)
    dparams, dy0, dt0, dtvals = gradient_reference(t0, a)
    _, adjoint_class, y0, _ = KINDS[kind]
    options = {"solver_backward": backward} if backward else {}
    solver = adjoint_class(problems[kind], **options, **TIGHT, **TIGHT_BACKWARD)
    solver.set_params_dict(params(t0, a))
    y_out, _, _ = solver.make_output_buffers(tvals)
    solver.solve_forward(t0, tvals, y0, y_out)
    assert_relative(y_out[:, 0], y)
    # The DAE's L is on the algebraic state: its jumps go through dF/dy (see sl_idas.h).
    grads = np.zeros((len(tvals), len(y0)))
    grads[:, -1] = WEIGHTS
    gradients = solver.gradients(t0, tvals, y0, y_out, grads)
    assert_relative(gradients.params, dparams)
    assert_relative(gradients.y0, [dy0, 0.0][:len(y0)])  # dL/dz0 is 0: z0 follows from x0
    assert_relative(gradients.t0, dt0)
    assert_relative(gradients.tvals, dtvals)


@t0s
def test_solve_ivp_pool(t0):
    """Value and gradient through a compiled PyTensor function (the C pool)."""
    a = 0.5
    tvals, _, (y, *_) = reference(t0, a)
    dparams, dy0, _, _ = gradient_reference(t0, a)
    k, y0 = pt.dscalar("k"), pt.dscalar("y0")
    res = solve_ivp(y0={"y": (y0, ())},
                    params={"k": (k, ()), "a": a, "w": FREQUENCIES[t0]},
                    rhs=forced_rhs, tvals=tvals, t0=t0, solver_kwargs=dict(TIGHT, **TIGHT_BACKWARD))
    loss = pt.dot(res.y_hat["y"], WEIGHTS)
    f = pytensor.function([k, y0], [res.y_hat["y"], *pytensor.grad(loss, [k, y0])])
    values, dk, d_y0 = f(K, Y0)
    assert_relative(values, y)
    assert_relative(dk, dparams[0])
    assert_relative(d_y0, dy0)


@pytest.mark.parametrize("t0", [1e12, -1e14])
def test_failures_report_times_in_t(problems, t0):
    """SolverError.t, the kernel's time and the times in SUNDIALS' message are t, not t - t0."""
    singular = sl.SympyProblem(params={"k": (), "tc": ()}, states={"y": ()},
                               rhs_sympy=lambda t, y, p: {"y": -p.k * y.y + sympy.log(p.tc - t)})
    solver = sl.Solver(singular, **TIGHT)
    solver.set_params_dict({"k": K, "tc": t0 + 3.0})  # log(tc - t) is NaN after tc
    tvals = t0 + OFFSETS
    with pytest.raises(sl.SolverError, match="The rhs kernel gave non-finite values") as info:
        solver.solve(t0, tvals, np.array([Y0]), solver.make_output_buffers(tvals))
    assert abs(info.value.t - (t0 + 3.0)) < 0.05
    assert f"At t = {t0:g} + 2.99" in info.value.reason

    adjoint = sl.AdjointSolver(problems["ode"], solver_backward="ERK", max_steps_backward=3)
    adjoint.set_params_dict(params(t0, 0.5))
    y_out, grad_out, lambda_out = adjoint.make_output_buffers(tvals)
    adjoint.solve_forward(t0, tvals, np.array([Y0]), y_out)
    with pytest.raises(sl.SolverError, match="ARK_TOO_MUCH_WORK") as info:
        adjoint.solve_backward(tvals[-1], t0, tvals, np.ones((3, 1)), grad_out, lambda_out)
    assert t0 + OFFSETS[1] <= info.value.t <= t0 + OFFSETS[2]
    assert f"At t = {t0:g} + " in info.value.reason
