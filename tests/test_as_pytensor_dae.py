"""The DAE PyTensor Ops and solve_dae_ivp: values, gradients (L_op, R_op), failures, pickling,
and a small PyMC fit."""
import multiprocessing
import pickle
import warnings

import cloudpickle
import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import sympy
from pytensor.gradient import verify_grad

import sunode_like as sl
from sunode_like.wrappers.as_pytensor_dae import SolveDAE, solve_dae_ivp
from test_as_pytensor import VM, fail_in_child, jvp_graph

PARAMS = np.array([0.7, 0.4, 0.5])
X0 = np.array([1.0, 0.5])
TVALS = np.array([0.5, 1.5, 2.5, 4.0])
TIGHT = {"rtol": 1e-10, "atol": 1e-10}


def rhs(t, x, z, p):
    return {"x": [-p.a * x.x[0] + z.z * x.x[1], p.a * x.x[0] - p.b * x.x[1] * z.z]}


def algebraic(t, x, z, p):
    return {"z": z.z * (1 + p.c * x.x[0] ** 2) - x.x[1] + sympy.sin(t) / 10}


def problem():
    return sl.DAEProblem(params={"a": (), "b": (), "c": ()}, differential_states={"x": (2,)},
                         algebraic_states={"z": ()}, rhs_sympy=rhs, algebraic_sympy=algebraic)


def reference(params=PARAMS, x0=X0, tvals=TVALS, t0=0.0):
    solver = sl.DAESolver(problem(), rtol=1e-12, atol=1e-12)
    solver.set_params(params)
    y = solver.make_output_buffers(tvals)
    solver.solve(t0, tvals, x0, y)
    return y


@pytest.fixture(scope="module", params=["adjoint", "sens"])
def op(request):
    return SolveDAE(problem(), TIGHT, request.param)


def value(op, *inputs):
    out = op(*inputs)
    return out if op.mode == "adjoint" else out[0]


def test_value(op):
    f = pytensor.function([], value(op, np.append(X0, 0.0), PARAMS, TVALS, 0.0))
    np.testing.assert_allclose(f(), reference(), rtol=1e-8)


@pytest.mark.parametrize("mode", ["adjoint", "sens"])
def test_verify_grad(mode):
    op = SolveDAE(problem(), {"rtol": 1e-12, "atol": 1e-12}, mode)
    weights = np.random.default_rng(0).normal(size=(len(TVALS), 3))

    def loss(x0, params, tvals, t0):
        y0 = pt.concatenate([x0, pt.zeros((1,))])  # the algebraic guess is not an input
        return (value(op, y0, params, tvals, t0) * weights).sum()

    # One-sided differences (error ~ eps f'') of an adaptive solve (error ~ rtol |y| / eps):
    # 1e-4 with eps = 1e-6 (the 1e-5 checks with central differences are in test_idas.py).
    verify_grad(loss, [X0, PARAMS, TVALS, np.array(-0.2)], rng=np.random.default_rng(1),
                eps=1e-6, abs_tol=1e-4, rel_tol=1e-4)


def test_grad_wrt_algebraic_guess_is_zero(op):
    y0 = pt.dvector("y0")
    grad = pytensor.grad(value(op, y0, PARAMS, TVALS, 0.0).sum(), y0)
    assert pytensor.function([y0], grad)(np.array([1.0, 0.5, 3.0]))[2] == 0.0


def test_r_op_equals_l_op(op):
    """<v, J u> from R_op equals <J^T v, u> from L_op."""
    y0, params = pt.dvector("y0"), pt.dvector("params")
    y = value(op, y0, params, TVALS, 0.0)
    u0, up = np.array([0.3, -0.7, 0.0]), np.array([0.5, 0.1, -0.2])
    v = np.random.default_rng(2).normal(size=(len(TVALS), 3))
    jvp = jvp_graph(y, [y0, params], [pt.constant(u0), pt.constant(up)])
    g0, gp = pytensor.grad((y * v).sum(), [y0, params])
    f = pytensor.function([y0, params], [(jvp * v).sum(), g0 @ u0 + gp @ up])
    left, right = f(np.append(X0, 0.0), PARAMS)
    np.testing.assert_allclose(left, right, rtol=1e-6)


def test_failure_gives_nan_and_is_counted():
    op = SolveDAE(problem(), {"rtol": 1e-9, "atol": 1e-9, "max_steps": 7})
    tvals = pt.dvector("tvals")  # symbolic, so that compiling does not fold the solve
    # PyTensor's VM runs the Op's perform, which warns (numba mode reports on stderr, below;
    # it is the default mode of PyTensor 3).
    f = pytensor.function([tvals], op(np.append(X0, 0.0), PARAMS, tvals, 0.0), mode=VM)
    before = op.n_failures
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = f(np.array([50.0]))
    assert np.all(np.isnan(out)) and op.n_failures == before + 1
    assert any("IDA_TOO_MUCH_WORK" in str(w.message) for w in caught)


def test_failure_in_numba_mode_gives_nan_and_is_reported_once(capfd):
    op = SolveDAE(problem(), {"rtol": 1e-9, "atol": 1e-9, "max_steps": 6})
    tvals = pt.dvector("tvals")
    f = pytensor.function([tvals], op(np.append(X0, 0.0), PARAMS, tvals, 0.0), mode="NUMBA")
    before = op.n_failures
    outs = [f(np.array([50.0])) for _ in range(2)]
    assert all(np.all(np.isnan(out)) for out in outs) and op.n_failures == before + 2
    assert capfd.readouterr().err.count("a DAE solve failed with IDA_TOO_MUCH_WORK") == 1


def test_failures_in_a_spawned_process_reach_the_parent_count():
    op = SolveDAE(problem(), {"rtol": 1e-9, "atol": 1e-9, "max_steps": 7})
    tvals = pt.dvector("tvals")
    f = pytensor.function([tvals], op(np.append(X0, 0.0), PARAMS, tvals, 0.0))
    before = op.n_failures
    child = multiprocessing.get_context("spawn").Process(
        target=fail_in_child, args=(cloudpickle.dumps(f), [np.array([50.0])] * 2))
    child.start()
    child.join(timeout=300)
    assert child.exitcode == 0 and op.n_failures - before == 2


def test_pickle_roundtrip(op):
    clone = pickle.loads(pickle.dumps(op))
    assert clone == op and hash(clone) == hash(op)
    f = pytensor.function([], value(clone, np.append(X0, 0.0), PARAMS, TVALS, 0.0))
    np.testing.assert_allclose(f(), reference(), rtol=1e-8)


def test_solve_dae_ivp_value_and_gradient():
    a = pt.dscalar("a")
    result = solve_dae_ivp(y0={"x": (X0, (2,))}, params={"a": a, "b": 0.4, "c": 0.5}, rhs=rhs,
                           algebraic=algebraic, algebraic_states={"z": ()}, tvals=TVALS, t0=0.0,
                           solver_kwargs=TIGHT)
    assert result.problem.derivative_params == [("a",)]
    loss = result.y_hat["z"].sum() + result.y_hat["x"][:, 1].sum()
    f = pytensor.function([a], [result.flat, pytensor.grad(loss, a)])
    y, grad = f(0.7)
    np.testing.assert_allclose(y, reference(), rtol=1e-8)
    h = 1e-5
    fd = [(reference(params=[0.7 + s * h, 0.4, 0.5])[:, 1:].sum()) for s in (1, -1)]
    np.testing.assert_allclose(grad, (fd[0] - fd[1]) / (2 * h), rtol=1e-5)


def test_gradients_match_finite_differences_and_sensitivities():
    """dL/d(differential y0, params, tvals, t0) by the adjoint through the C pool, against
    central differences of the reference solve and against the sensitivity Op's."""
    y0, p, tv, t0 = pt.dvector(), pt.dvector(), pt.dvector(), pt.dscalar()
    w = np.linspace(-1.0, 2.0, 3 * len(TVALS)).reshape(-1, 3)
    x = [np.append(X0, 0.0), PARAMS, TVALS, -0.2]
    grads = {}
    for mode in ("adjoint", "sens"):
        loss = (value(SolveDAE(problem(), {"rtol": 1e-12, "atol": 1e-12}, mode), y0, p, tv, t0) * w).sum()
        grads[mode] = pytensor.function([y0, p, tv, t0], pytensor.grad(loss, [y0, p, tv, t0]))(*x)

    def loss_of(k, xk):
        args = [X0, PARAMS, TVALS, -0.2]
        args[k] = xk
        return (reference(x0=args[0], params=args[1], tvals=args[2], t0=args[3]) * w).sum()

    # Central differences: truncation error ~ h^2 |L'''| ~ 1e-8, the solves' error (~1e-11
    # relative at rtol 1e-12) over h ~ 1e-7; measured: 4e-8 relative.
    h = 1e-4
    fd = [[(loss_of(k, xk + h * e) - loss_of(k, xk - h * e)) / (2 * h) for e in np.eye(len(xk))]
          for k, xk in enumerate([X0, PARAMS, TVALS])]
    fd.append((loss_of(3, -0.2 + h) - loss_of(3, -0.2 - h)) / (2 * h))
    for mode, g in grads.items():
        np.testing.assert_allclose(g[0], np.append(fd[0], 0.0), rtol=1e-6, atol=1e-8, err_msg=mode)
        for k in (1, 2, 3):
            np.testing.assert_allclose(g[k], fd[k], rtol=1e-6, atol=1e-8, err_msg=f"{mode} {k}")
    for a, b in zip(grads["adjoint"], grads["sens"]):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)


def pymc_model(tvals, data, sigma=0.01):
    """a and b free, c known; observations of all three states (the algebraic z too)."""
    import pymc as pm

    with pm.Model() as model:
        a = pm.LogNormal("a", mu=np.log(0.5), sigma=0.5)
        b = pm.LogNormal("b", mu=np.log(0.5), sigma=0.5)
        result = solve_dae_ivp(y0={"x": (X0, (2,))}, params={"a": a, "b": b, "c": 0.5}, rhs=rhs,
                               algebraic=algebraic, algebraic_states={"z": ()}, tvals=tvals, t0=0.0,
                               solver_kwargs={"rtol": 1e-8, "atol": 1e-8})
        pm.Normal("obs", mu=result.flat, sigma=sigma, observed=data)
    return model


def synthetic_data(n_t=12):
    tvals = np.linspace(0.5, 6.0, n_t)
    noise = np.random.default_rng(3).normal(scale=0.01, size=(n_t, 3))
    return tvals, reference(params=[0.7, 0.4, 0.5], tvals=tvals) + noise


def test_numba_mode_gives_the_default_modes_logp_without_object_mode():
    """The DAE Op has a numba implementation: PyMC's numba mode compiles the logp and its
    gradient without the object-mode fallback (which warns), to the default mode's numbers."""
    pytest.importorskip("pymc")
    model = pymc_model(*synthetic_data())
    point = {"a_log__": np.log(0.6), "b_log__": np.log(0.45)}
    results = {}
    for mode in ("FAST_RUN", "NUMBA"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            logp = model.compile_logp(mode=mode)
            dlogp = model.compile_dlogp(mode=mode)
            results[mode] = (logp(point), dlogp(point))
    assert np.isfinite(results["FAST_RUN"][0]) and np.all(results["FAST_RUN"][1] != 0)
    np.testing.assert_allclose(results["NUMBA"][0], results["FAST_RUN"][0], rtol=1e-12)
    np.testing.assert_allclose(results["NUMBA"][1], results["FAST_RUN"][1], rtol=1e-10)


@pytest.mark.slow
def test_nutpie_recovers_parameters():
    """nutpie (numba-compiled logp, so the Op's numba implementation) on synthetic data of
    the coupled DAE recovers a and b; about 30 s, mostly compiling."""
    pm = pytest.importorskip("pymc")
    pytest.importorskip("nutpie")
    with pymc_model(*synthetic_data()):
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # numba's object-mode fallback warns
            trace = pm.sample(draws=300, tune=300, chains=2, nuts_sampler="nutpie", random_seed=4,
                              progressbar=False)
    post = trace.posterior
    assert int(trace.sample_stats["diverging"].sum()) == 0
    assert abs(float(post["a"].mean()) - 0.7) < 0.02
    assert abs(float(post["b"].mean()) - 0.4) < 0.02


@pytest.mark.slow
def test_pymc_recovers_parameters():
    """PyMC's own NUTS on the same data recovers a and b (c fixed)."""
    pm = pytest.importorskip("pymc")
    with pymc_model(*synthetic_data()):
        trace = pm.sample(draws=200, tune=200, chains=1, random_seed=4, progressbar=False,
                          nuts_sampler="pymc", compute_convergence_checks=False)
    post = trace.posterior
    assert abs(float(post["a"].mean()) - 0.7) < 0.02
    assert abs(float(post["b"].mean()) - 0.4) < 0.02


def test_adjoint_op_refuses_f_nonlinear_in_yp_as_the_solver_does():
    """The adjoint Op runs the DAEAdjointSolver's check (its pool builds no solver); the
    forward-sensitivity Op needs no linearity and solves y' = -y**(1/3) by y'**3 + y = 0."""
    nonlinear = sl.DAEProblem(params={}, states={"y": ()},
                              residual_sympy=lambda t, y, yp, p: {"y": yp.y ** 3 + y.y})
    with pytest.raises(ValueError, match=r"linear in yp.*residual_sympy\['y'\]") as from_op:
        SolveDAE(nonlinear, TIGHT, "adjoint")
    with pytest.raises(ValueError) as from_solver:
        sl.DAEAdjointSolver(nonlinear)
    assert str(from_op.value) == str(from_solver.value)
    y, *_ = SolveDAE(nonlinear, TIGHT, "sens")(np.array([1.0]), np.zeros(0), np.array([0.5]), 0.0)
    # y^(2/3) = 1 - 2t/3 for y(0) = 1
    np.testing.assert_allclose(y.eval(), [[(1 - 2 * 0.5 / 3) ** 1.5]], rtol=1e-7)
