"""sunode code runs with `sunode` replaced by `sunode_like`: one test per point of sunode's
README, docs (quickstart_pymc, without_pymc) and tests of its public API.

The model is dy/dt = -k y + b, with y(t) = b/k + (y0 - b/k) exp(-k t) in closed form, and
Lotka-Volterra against scipy where sunode's own examples use it.
"""
import subprocess
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import scipy.integrate

import sunode_like
import sunode_like.solver
import sunode_like.symode
from sunode_like.wrappers.as_pytensor import SolveODE, solve_ivp

K, B, Y0 = 0.7, 0.3, 2.0
TVALS = np.array([0.0, 0.5, 1.0, 2.5, 4.0])
TIGHT = {"rtol": 1e-11, "atol": 1e-11}


def closed_form(t, k=K, b=B, y0=Y0):
    return b / k + (y0 - b / k) * np.exp(-k * np.asarray(t))


def decay(t, y, p):
    return {"y": -p.k * y.y + p.b}


def decay_problem(derivative_params=(("k",), ("b",))):
    return sunode_like.SympyProblem(params={"k": (), "b": ()}, states={"y": ()}, rhs_sympy=decay,
                                    derivative_params=list(derivative_params))


def lotka_volterra(t, y, p):
    return {"hares": p.alpha * y.hares - p.beta * y.lynx * y.hares,
            "lynx": p.delta * y.hares * y.lynx - p.gamma * y.lynx}


LV_PARAMS = {"alpha": 0.1, "beta": 0.2, "gamma": 0.3, "delta": 0.4}


def lv_reference(tvals, y0=(1.0, 0.1), params=LV_PARAMS):
    def f(t, y):
        h, l = y
        return [params["alpha"] * h - params["beta"] * l * h,
                params["delta"] * h * l - params["gamma"] * l]

    return scipy.integrate.solve_ivp(f, (0.0, tvals[-1]), y0, t_eval=tvals, method="DOP853",
                                     rtol=1e-12, atol=1e-12).y.T


def test_readme_example_runs_with_the_import_changed():
    """sunode's README: module paths, compute_sens, structured y0, as_xarray, record view."""
    problem = sunode_like.symode.SympyProblem(
        params={"alpha": (), "beta": (), "gamma": (), "delta": ()},
        states={"hares": (), "lynx": ()}, rhs_sympy=lotka_volterra,
        derivative_params=[("alpha",), ("beta",)])
    solver = sunode_like.solver.Solver(problem, compute_sens=False, solver="BDF",
                                       abstol=1e-10, reltol=1e-10)
    tvals = np.linspace(0, 10)
    y0 = np.zeros((), dtype=problem.state_dtype)
    y0["hares"] = 1
    y0["lynx"] = 0.1
    solver.set_params_dict(LV_PARAMS)
    output = solver.make_output_buffers(tvals)
    solver.solve(t0=0, tvals=tvals, y0=y0, y_out=output)
    expected = lv_reference(tvals)
    np.testing.assert_allclose(solver.as_xarray(tvals, output).solution_hares, expected[:, 0],
                               rtol=1e-7)
    np.testing.assert_allclose(output.view(problem.state_dtype)["lynx"][:, 0], expected[:, 1],
                               rtol=1e-7)


def test_as_xarray_has_sunode_variable_names():
    problem = sunode_like.SympyProblem(
        params={"rates": {"k": (), "b": ()}, "unused": (2,)}, states={"y": (), "z": (2,)},
        rhs_sympy=lambda t, y, p: {"y": -p.rates.k * y.y + p.rates.b, "z": [-y.z[0], -2 * y.z[1]]})
    for solver in (sunode_like.Solver(problem, **TIGHT), sunode_like.AdjointSolver(problem, **TIGHT)):
        solver.set_params_dict({"rates": {"k": K, "b": B}, "unused": [1.0, 2.0]})
        y_out = solver.make_output_buffers(TVALS)
        y_out = y_out[0] if isinstance(y_out, tuple) else y_out
        (solver.solve if isinstance(solver, sunode_like.Solver) else solver.solve_forward)(
            0.0, TVALS, {"y": Y0, "z": [1.0, 1.0]}, y_out)
        data = solver.as_xarray(TVALS, y_out)
        assert set(data.data_vars) == {"solution_y", "solution_z", "parameters_rates_k",
                                       "parameters_rates_b", "parameters_unused"}
        np.testing.assert_array_equal(data["time"], TVALS)
        np.testing.assert_allclose(data.solution_y, closed_form(TVALS), rtol=1e-9)
        # error ~ atol against a decaying solution: compare absolutely
        np.testing.assert_allclose(data.solution_z[:, 1], np.exp(-2 * TVALS), rtol=0, atol=1e-9)
        assert float(data.parameters_rates_k) == K
        np.testing.assert_array_equal(data.parameters_unused, [1.0, 2.0])
        flat = solver.as_xarray(TVALS, y_out, unstack_state=False, unstack_params=False)
        np.testing.assert_array_equal(flat.solution, y_out)
        np.testing.assert_array_equal(flat.parameters, [K, B, 1.0, 2.0])


def test_get_params_dict_round_trips_nested_params():
    problem = sunode_like.SympyProblem(
        params={"rates": {"k": (), "b": ()}, "v": (3,)}, states={"y": ()},
        rhs_sympy=lambda t, y, p: {"y": -p.rates.k * y.y + p.rates.b + p.v[0]})
    solver = sunode_like.Solver(problem)
    solver.set_params_dict({"rates": {"k": K, "b": B}, "v": [1.0, 2.0, 3.0]})
    params = solver.get_params_dict()
    assert float(params["rates"]["k"]) == K and float(params["rates"]["b"]) == B
    np.testing.assert_array_equal(params["v"], [1.0, 2.0, 3.0])
    other = sunode_like.Solver(problem)
    other.set_params_dict(params)
    np.testing.assert_array_equal(other.get_params(), solver.get_params())


def test_n_params_and_the_sensitivity_layout():
    """sunode's problem.n_params counts the derivative params: ours is problem.n_dparams
    (n_params counts all). Sensitivities are (n_t, n_dparams [+ n_states for y0], n_states)
    with the derivative params first, as sunode's (y0 last, like its __initial_values)."""
    problem = sunode_like.SympyProblem(params={"k": (), "b": (), "fixed": ()}, states={"y": ()},
                                       rhs_sympy=decay, derivative_params=[("k",), ("b",)])
    assert (problem.n_params, problem.n_dparams) == (3, 2)
    _, grad_out, _ = sunode_like.AdjointSolver(problem).make_output_buffers(TVALS)
    assert grad_out.shape == (problem.n_dparams,)
    solver = sunode_like.Solver(problem, sens_mode="simultaneous", **TIGHT)
    solver.set_params_dict({"k": K, "b": B, "fixed": 5.0})
    y_out, sens_out = solver.make_output_buffers(TVALS)
    assert sens_out.shape == (len(TVALS), problem.n_dparams + problem.n_states, problem.n_states)
    solver.solve(0.0, TVALS, np.array([Y0]), y_out, sens_out=sens_out)
    h = 1e-6
    fd = [(closed_form(TVALS, **{name: value + h}) - closed_form(TVALS, **{name: value - h})) / (2 * h)
          for name, value in (("k", K), ("b", B), ("y0", Y0))]
    np.testing.assert_allclose(sens_out[:, :, 0], np.stack(fd, axis=1), rtol=1e-7, atol=1e-10)


def test_solve_takes_sunodes_sens0():
    """sens0 = d y0 / d theta: sunode's (n_dparams, n_states), or all n_sens rows."""
    solver = sunode_like.Solver(decay_problem(), sens_mode="staggered", **TIGHT)
    solver.set_params_dict({"k": K, "b": B})
    y_out, sens_out = solver.make_output_buffers(TVALS)
    # y0 = 3 k: then d y / d k = dy/dk|y0 + 3 dy/dy0, with dy/dy0 = exp(-k t).
    sens0 = np.array([[3.0], [0.0]])
    solver.solve(0.0, TVALS, np.array([3 * K]), y_out, sens0=sens0, sens_out=sens_out)
    h = 1e-6
    fd_k = (closed_form(TVALS, k=K + h, y0=3 * (K + h)) - closed_form(TVALS, k=K - h, y0=3 * (K - h))) / (2 * h)
    np.testing.assert_allclose(sens_out[:, 0, 0], fd_k, rtol=1e-7)
    np.testing.assert_allclose(sens_out[:, 2, 0], np.exp(-K * TVALS), rtol=1e-9)  # y0 row: identity
    full = np.array([[3.0], [0.0], [2.0]])  # all rows: the y0 row scaled by 2
    solver.solve(0.0, TVALS, np.array([3 * K]), y_out, sens0=full, sens_out=sens_out)
    np.testing.assert_allclose(sens_out[:, 2, 0], 2 * np.exp(-K * TVALS), rtol=1e-9)
    with pytest.raises(ValueError, match="sens0"):
        solver.solve(0.0, TVALS, np.array([3 * K]), y_out, sens0=np.zeros((1, 1)), sens_out=sens_out)


def test_sunode_option_names_mean_ours():
    problem = decay_problem()
    assert SolveODE(problem, {"abstol": 1e-9, "reltol": 1e-7}) == SolveODE(problem, {"atol": 1e-9, "rtol": 1e-7})
    adj = sunode_like.AdjointSolver(problem, abstol=1e-11, reltol=1e-11, checkpoint_n=7,
                                    adjoint_solver="ADAMS")
    assert adj._checked.adjoint.checkpoint_steps == 7
    assert adj._checked.adjoint.backward.method == sunode_like._options.METHODS["ADAMS"]
    assert adj._checked.options.rtol == 1e-11
    band = sunode_like.Solver(problem, linear_solver="band",
                              linear_solver_kwargs={"upper_bandwidth": 0, "lower_bandwidth": 0})
    assert (band._checked.options.upper_bandwidth, band._checked.options.lower_bandwidth) == (0, 0)
    for name in ("dense_finitediff", "spgmr_finitediff", "band"):
        solver = sunode_like.Solver(problem, linear_solver=name, abstol=1e-11, reltol=1e-11)
        solver.set_params_dict({"k": K, "b": B})
        y = solver.make_output_buffers(TVALS)
        solver.solve(0.0, TVALS, np.array([Y0]), y)
        np.testing.assert_allclose(y[:, 0], closed_form(TVALS), rtol=1e-8)
    with pytest.raises(ValueError, match="abstol.*atol"):
        sunode_like.Solver(problem, abstol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="linear_solver_kwargs"):
        sunode_like.Solver(problem, linear_solver="spgmr", linear_solver_kwargs={"maxl": 5})


def test_adjoint_gradients_with_sunode_options_match_the_closed_form():
    adj = sunode_like.AdjointSolver(decay_problem(), abstol=1e-11, reltol=1e-11, checkpoint_n=3,
                                    adjoint_solver="ADAMS")
    adj.set_params_dict({"k": K, "b": B})
    y_out, grad_out, lamda_out = adj.make_output_buffers(TVALS)
    adj.solve_forward(0.0, TVALS, np.array([Y0]), y_out)
    adj.solve_backward(TVALS[-1], 0.0, TVALS, np.ones_like(y_out), grad_out, lamda_out)
    h = 1e-6
    fd = [(closed_form(TVALS, **{n: v + h}).sum() - closed_form(TVALS, **{n: v - h}).sum()) / (2 * h)
          for n, v in (("k", K), ("b", B), ("y0", Y0))]
    np.testing.assert_allclose(np.append(grad_out, -lamda_out), fd, rtol=1e-6)


def test_solve_ivp_unpacks_like_sunode():
    """Adjoint: sunode's six values; forward (with sunode's required sens_mode): eight, the
    last two the sensitivities and the Op. The Op is also an attribute."""
    k = pt.dscalar("k")
    result = solve_ivp(y0={"y": (Y0, ())}, params={"k": (k, ()), "b": (B, ())}, rhs=decay,
                       tvals=TVALS, t0=0.0, solver_kwargs={"abstol": 1e-10, "reltol": 1e-10})
    y_hat, flat, problem, solver, y0_flat, params_flat = result
    assert isinstance(solver, sunode_like.AdjointSolver) and isinstance(result.op, SolveODE)
    assert result.n_failures == 0
    forward = solve_ivp(y0={"y": (Y0, ())}, params={"k": (k, ()), "b": (B, ())}, rhs=decay,
                        tvals=TVALS, t0=0.0, derivatives="forward",
                        solver_kwargs={"sens_mode": "simultaneous", "abstol": 1e-10, "reltol": 1e-10})
    y_hat_f, flat_f, _, solver_f, _, _, sens, op = forward
    assert isinstance(solver_f, sunode_like.Solver) and op is forward.op
    loss = (y_hat["y"] ** 2).sum()
    f = pytensor.function([k], [y_hat["y"], pytensor.grad(loss, k), y_hat_f["y"],
                                 pytensor.grad((y_hat_f["y"] ** 2).sum(), k), sens[:, 0, 0]])
    y, grad, y_f, grad_f, dy_dk = f(K)
    np.testing.assert_allclose(y, closed_form(TVALS), rtol=1e-8)
    np.testing.assert_allclose(y_f, closed_form(TVALS), rtol=1e-8)
    h = 1e-6
    dk = (closed_form(TVALS, k=K + h) - closed_form(TVALS, k=K - h)) / (2 * h)
    np.testing.assert_allclose(dy_dk, dk, rtol=1e-6)
    np.testing.assert_allclose([grad, grad_f], [2 * (y * dk).sum()] * 2, rtol=1e-6)
    with pytest.raises(ValueError, match="sens_mode"):
        solve_ivp(y0={"y": (Y0, ())}, params={"k": (k, ()), "b": (B, ())}, rhs=decay, tvals=TVALS,
                  t0=0.0, derivatives="forward", solver_kwargs={"sens_mode": None})


def test_sunodes_forward_test_ports():
    """sunode's test_pytensor.py::test_nodiff_params, with the import changed."""
    def dydt_dict(t, y, p):
        return {"A": y.A, "B": y.B, "C": y.C}

    A = pt.dscalar("A")
    time = np.linspace(0, 1)
    solution, *_ = sunode_like.wrappers.as_pytensor.solve_ivp(
        y0={"A": (A, ()), "B": np.array(1.0), "C": np.array(1.0)},
        params={"alpha": np.array(1.0), "beta": np.array(1.0), "extra": np.array([0.0])},
        rhs=dydt_dict, tvals=time, t0=time[0], derivatives="forward",
        solver_kwargs=dict(sens_mode="simultaneous"))
    a, b = pytensor.function([A], [solution["A"], solution["B"]])(0.2)
    assert a.shape == time.shape
    # the graph's default rtol = atol = 1e-8; global errors of a growing solution are larger
    np.testing.assert_allclose(a, 0.2 * np.exp(time), rtol=1e-6)
    np.testing.assert_allclose(b, np.exp(time), rtol=1e-6)


def test_import_wrappers_exposes_as_pytensor():
    code = ("import sunode_like.wrappers; "
            "print(sunode_like.wrappers.as_pytensor.solve_ivp.__name__, "
            "sunode_like.wrappers.as_pytensor_dae.solve_dae_ivp.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["solve_ivp", "solve_dae_ivp"]


def test_states_are_real_not_positive():
    """Kept on purpose (docs/coming_from_sunode.md): states are real symbols, so sqrt(y**2)
    stays |y| and a negative state gives the right derivative."""
    problem = sunode_like.SympyProblem(params={"c": ()}, states={"y": ()},
                                       rhs_sympy=lambda t, y, p: {"y": -p.c * (y.y ** 2) ** 0.5})
    solver = sunode_like.Solver(problem, **TIGHT)
    solver.set_params_dict({"c": 0.5})
    y = solver.make_output_buffers(TVALS)
    solver.solve(0.0, TVALS, np.array([-1.0]), y)  # dy/dt = -0.5 |y|: y = -exp(0.5 t)
    np.testing.assert_allclose(y[:, 0], -np.exp(0.5 * TVALS), rtol=1e-8)


def test_constraints_reach_cvodes():
    """sunode's ``constraints`` (SUNDIALS' codes, here also a dict or a scalar) are kept by
    the forward problem of each solver and of the Op: a y0 that breaks them is an error."""
    problem = decay_problem()
    solvers = [sunode_like.Solver(problem, constraints=2, **TIGHT),
               sunode_like.Solver(problem, constraints={"y": 1}, sens_mode="staggered", **TIGHT),
               sunode_like.AdjointSolver(problem, constraints=[1.0], **TIGHT)]
    for solver in solvers:
        solver.set_params_dict({"k": K, "b": B})
        buffers = solver.make_output_buffers(TVALS)
        y_out = buffers if isinstance(buffers, np.ndarray) else buffers[0]
        solve = solver.solve_forward if isinstance(solver, sunode_like.AdjointSolver) else solver.solve
        args = (buffers[1],) if isinstance(solver, sunode_like.Solver) and solver.sens_mode else ()
        solve(0.0, TVALS, np.array([Y0]), y_out, *args)
        np.testing.assert_allclose(y_out[:, 0], closed_form(TVALS), rtol=1e-8)
        with pytest.raises(sunode_like.SolverError, match="constraints"):
            solve(0.0, TVALS, np.array([-1.0]), y_out, *args)
    with pytest.raises(ValueError, match="staggered"):
        sunode_like.Solver(problem, constraints=1, sens_mode="simultaneous")
    with pytest.raises(ValueError, match="constraints"):
        sunode_like.Solver(problem, constraints=3)

    k = pt.dscalar("k")
    for derivatives in ("adjoint", "forward"):
        y_hat, *_ = solve_ivp(y0={"y": (Y0, ())}, params={"k": (k, ()), "b": (B, ())}, rhs=decay,
                              tvals=TVALS, t0=0.0, derivatives=derivatives,
                              solver_kwargs={"constraints": 1, "abstol": 1e-10, "reltol": 1e-10})
        y, grad = pytensor.function([k], [y_hat["y"], pytensor.grad(y_hat["y"].sum(), k)])(K)
        np.testing.assert_allclose(y, closed_form(TVALS), rtol=1e-8)
        h = 1e-6
        fd = (closed_form(TVALS, k=K + h).sum() - closed_form(TVALS, k=K - h).sum()) / (2 * h)
        np.testing.assert_allclose(grad, fd, rtol=1e-6)
