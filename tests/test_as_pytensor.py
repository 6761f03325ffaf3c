"""The PyTensor Ops and solve_ivp: values, gradients, failures, pickling, threads, sampling."""
import multiprocessing
import pickle
import threading
import warnings

import cloudpickle
import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad

import sunode_like as sl
from sunode_like.wrappers.as_pytensor import SolveODE, solve_ivp

from helpers import jvp_graph

# Backends named explicitly: "FAST_RUN" is the C VM in pytensor 2.x but numba in 3.x.
VM, NUMBA, PYTHON = "CVM", "NUMBA", pytensor.compile.mode.Mode(linker="py", optimizer="fast_run")

# A well-scaled Lotka-Volterra (sensitivities of order one keep finite differences accurate).
TRUE = {"alpha": 1.0, "beta": 0.5, "gamma": 0.8, "delta": 0.4}
Y0 = np.array([1.5, 1.0])
TVALS = np.array([0.5, 1.5, 2.0, 3.5, 5.0])
TIGHT = {"rtol": 1e-10, "atol": 1e-10}


def lotka_volterra(t, y, p):
    return {"hares": p.alpha * y.hares - p.beta * y.hares * y.lynx,
            "lynx": p.delta * y.hares * y.lynx - p.gamma * y.lynx}


def lv_problem():
    return sl.SympyProblem(params={k: () for k in TRUE}, states={"hares": (), "lynx": ()},
                           rhs_sympy=lotka_volterra)


def params_flat():
    return np.array(list(TRUE.values()))


def reference(t0=0.0, tvals=TVALS, y0=Y0, params=None, solver="BDF"):
    # BDF by default: finite differences need a solution smooth in its inputs, and an
    # explicit method's error jumps with its step sequence (see ERK_FORWARD_TOLERANCES).
    solver = sl.Solver(lv_problem(), solver=solver, **TIGHT)
    solver.set_params(params_flat() if params is None else params)
    y = solver.make_output_buffers(tvals)
    solver.solve(t0, tvals, y0, y)
    return y


# The Ops' solver options: a BDF forward solve with the BDF or the "ERK" one-step backward;
# "ERK-ERK" also the forward solve on ARKODE (what the defaults pick on this model).
BDF = {"solver": "BDF", "solver_backward": "BDF"}
ERK_BACKWARD = {"solver": "BDF", "solver_backward": "ERK"}
ERK = {"solver": "ERK", "solver_backward": "ERK"}
# An explicit forward method's global error jumps as its step sequence changes with the
# inputs: on SUNDIALS 7.5 (Tsitouras 5(4)) at rtol = 1e-10, y moved by ~1e-9 between inputs
# 1e-6 apart, so verify_grad's differences were 2e-3 off while the adjoint gradient agreed
# with BDF's to 1e-7. At 1e-12 those jumps are below what the differences resolve.
ERK_FORWARD_TOLERANCES = {"rtol": 1e-12, "atol": 1e-12}
OP_OPTIONS = {"adjoint": BDF, "adjoint-ERK": ERK_BACKWARD,
              "adjoint-ERK-ERK": dict(ERK, **ERK_FORWARD_TOLERANCES), "sens": {"solver": "BDF"},
              "sens-ERK": dict(solver="ERK", **ERK_FORWARD_TOLERANCES)}


@pytest.fixture(scope="module", params=list(OP_OPTIONS))
def op(request):
    return SolveODE(lv_problem(), dict(TIGHT, **OP_OPTIONS[request.param]),
                    request.param.partition("-")[0])


def value(op, *inputs):
    out = op(*inputs)
    return out if op.mode == "adjoint" else out[0]


def test_value_equals_direct_solve(op):
    f = pytensor.function([], value(op, Y0, params_flat(), TVALS, 0.0))
    # The reference by the Op's forward method: with the same tolerances and no
    # sensitivities in the error test, the same steps.
    same_steps = op.mode == "adjoint" and op.solver_kwargs["rtol"] == TIGHT["rtol"]
    reference_value = reference(solver=op.solver_kwargs.get("solver", "auto"))
    np.testing.assert_allclose(f(), reference_value, rtol=1e-12 if same_steps else 1e-8)


def test_solve_ivp_nested_inputs_and_layout():
    h0, alpha = pt.dscalar("h0"), pt.dscalar("alpha")
    res = solve_ivp(y0={"hares": h0, "lynx": (np.array(Y0[1]), ())},
                    params={"alpha": alpha, "rest": {"beta": TRUE["beta"], "gamma": (TRUE["gamma"], ()),
                                                     "delta": TRUE["delta"]}},
                    rhs=lambda t, y, p: {"hares": p.alpha * y.hares - p.rest.beta * y.hares * y.lynx,
                                         "lynx": p.rest.delta * y.hares * y.lynx - p.rest.gamma * y.lynx},
                    tvals=TVALS, t0=0.0, solver_kwargs=TIGHT)
    y_hat, flat, problem, solver, y0_flat, p_flat = res[:6]
    assert problem.derivative_params == [("alpha",)]  # numpy values are constants
    f = pytensor.function([h0, alpha], [y_hat["hares"], y_hat["lynx"], flat, p_flat])
    hares, lynx, flat_value, p_value = f(Y0[0], TRUE["alpha"])
    np.testing.assert_allclose(flat_value, reference(solver="auto"), rtol=1e-12)
    np.testing.assert_array_equal(hares, flat_value[:, 0])
    np.testing.assert_array_equal(lynx, flat_value[:, 1])
    np.testing.assert_array_equal(p_value, params_flat())


@pytest.mark.parametrize("which", ["y0", "params", "tvals", "t0"])
def test_verify_grad(op, which):
    inputs = {"y0": Y0, "params": params_flat(), "tvals": TVALS, "t0": np.array(0.2)}
    weights = np.random.default_rng(0).normal(size=(len(TVALS), 2))

    def fun(x):
        args = dict(inputs, **{which: x})
        return (value(op, args["y0"], args["params"], args["tvals"], args["t0"]) * weights).sum()

    # verify_grad takes one-sided differences (error ~ eps * f'') of an adaptive solve (error
    # ~ rtol * |y| / eps): eps = 1e-6 and rtol = 1e-10 keep both below 1e-4 relative.
    verify_grad(fun, [inputs[which]], rng=np.random.default_rng(1), eps=1e-6, abs_tol=1e-4, rel_tol=1e-4)


def test_gradients_match_finite_differences_of_all_inputs(op):
    """dL/d(all inputs) at once, against central differences of the reference solve."""
    y0, p, tv, t0 = pt.dvector(), pt.dvector(), pt.dvector(), pt.dscalar()
    w = np.linspace(-1.0, 2.0, 2 * len(TVALS)).reshape(-1, 2)
    loss = (value(op, y0, p, tv, t0) * w).sum()
    grads = pytensor.function([y0, p, tv, t0], pytensor.grad(loss, [y0, p, tv, t0]))(Y0, params_flat(), TVALS, 0.2)

    def L(y0_=Y0, p_=params_flat(), tv_=TVALS, t0_=0.2):
        return (reference(t0_, tv_, y0_, p_) * w).sum()

    h = 1e-6
    for k, x in enumerate([Y0, params_flat(), TVALS]):
        fd = []
        for i in range(len(x)):
            e = np.zeros_like(x)
            e[i] = h * max(1.0, abs(x[i]))
            args = [Y0, params_flat(), TVALS]
            plus, minus = list(args), list(args)
            plus[k], minus[k] = x + e, x - e
            fd.append((L(*plus) - L(*minus)) / (2 * e[i]))
        np.testing.assert_allclose(grads[k], fd, rtol=2e-5, atol=1e-6)
    fd_t0 = (L(t0_=0.2 + h) - L(t0_=0.2 - h)) / (2 * h)
    np.testing.assert_allclose(grads[3], fd_t0, rtol=2e-5)


def test_rop_matches_finite_differences(op):
    y0, p, tv, t0 = pt.dvector(), pt.dvector(), pt.dvector(), pt.dscalar()
    y = value(op, y0, p, tv, t0)
    rng = np.random.default_rng(2)
    v = [rng.normal(size=2), rng.normal(size=4) * 0.01, rng.normal(size=len(TVALS)) * 0.1, np.array(0.1)]
    ev = [x.type() for x in (y0, p, tv, t0)]
    jvp = pytensor.function([y0, p, tv, t0, *ev], jvp_graph(y, [y0, p, tv, t0], ev))
    x = [Y0, params_flat(), TVALS, 0.2]
    got = jvp(*x, *v)
    h = 1e-6
    plus = [xi + h * vi for xi, vi in zip(x, v)]
    minus = [xi - h * vi for xi, vi in zip(x, v)]
    fd = (reference(plus[3], plus[2], plus[0], plus[1]) - reference(minus[3], minus[2], minus[0], minus[1])) / (2 * h)
    np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-6)


def test_infer_shape_needs_no_solve(op):
    p, tv = pt.dvector(), pt.dvector()
    out = op(Y0, p, tv, 0.0)
    outputs = [out] if op.mode == "adjoint" else out
    f = pytensor.function([p, tv], [x.shape for x in outputs], on_unused_input="ignore")
    assert not any(isinstance(node.op, SolveODE) for node in f.maker.fgraph.apply_nodes)
    shapes = f(params_flat(), np.arange(7.0))
    expected = [(7, 2)] if op.mode == "adjoint" else [(7, 2), (7, 6, 2), (7, 2), (7, 2)]
    assert [tuple(s) for s in shapes] == expected


@pytest.mark.parametrize("mode", [VM, NUMBA])
@pytest.mark.parametrize("methods", [{}, ERK_BACKWARD, ERK])
def test_adjoint_gradient_reuses_the_forward_solve(mode, methods):
    """One value + gradient is one forward solve, whatever order the backend could pick: the
    loss is linear in y, so its gradient does not need y's value (numba's backend used to run
    the gradient first, and the forward solve twice)."""
    op = SolveODE(lv_problem(), dict(TIGHT, max_steps=123_456, **methods), "adjoint")
    p = pt.dvector()
    y = op(Y0, p, TVALS, 0.0)
    f = pytensor.function([p], [y.sum(), pytensor.grad(y.sum(), p)], mode=mode)
    for k in range(5):
        before = op.n_forward_solves
        value_, grad = f(params_flat() * (1 + 0.01 * k))
        assert op.n_forward_solves - before == 1
        np.testing.assert_allclose(value_, reference(params=params_flat() * (1 + 0.01 * k)).sum(),
                                   rtol=1e-8)


def test_numba_backend_matches_python_backend(op):
    y0, p, tv, t0 = pt.dvector(), pt.dvector(), pt.dvector(), pt.dscalar()
    w = np.linspace(-1.0, 2.0, 2 * len(TVALS)).reshape(-1, 2)
    loss = (value(op, y0, p, tv, t0) * w).sum()
    outputs = [loss] + pytensor.grad(loss, [y0, p, tv, t0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the object-mode fallback warns
        f_numba = pytensor.function([y0, p, tv, t0], outputs, mode=NUMBA)
    f_py = pytensor.function([y0, p, tv, t0], outputs, mode=PYTHON)
    assert f_numba.maker.linker.__class__ is not f_py.maker.linker.__class__
    for a, b in zip(f_numba(Y0, params_flat(), TVALS, 0.2), f_py(Y0, params_flat(), TVALS, 0.2)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("mode, methods", [("adjoint", ERK), ("adjoint", dict(ERK, solver_backward="DIRK")),
                                           ("sens", {"solver": "ERK"}), ("adjoint", {"solver": "DIRK"}),
                                           ("sens", {"solver": "DIRK"}), ("adjoint", {"solver": "auto"})],
                         ids=["ERK", "ERK-DIRK", "sens", "DIRK-DIRK", "sens-DIRK", "auto"])
def test_erk_op_matches_the_bdf_op_at_tight_tolerance(mode, methods):
    """Forward on ARKODE's explicit method, backward by its explicit or implicit one-step
    method, no CVODES: value and gradient of every input within 5e-9 of CVODES' BDF
    (adjoint) or of its sensitivities. Measured: at most 1.9e-9 apart (dL/dy0 of the ERK
    adjoint); the BDF sensitivities' own error, against rtol = 1e-13, is up to 3e-10."""
    tight = {"rtol": 1e-12, "atol": 1e-12}
    y0, p, tv, t0 = pt.dvector(), pt.dvector(), pt.dvector(), pt.dscalar()
    w = np.linspace(-1.0, 2.0, 2 * len(TVALS)).reshape(-1, 2)
    results = []
    for options in methods, {}:
        y = value(SolveODE(lv_problem(), dict(tight, **options), mode), y0, p, tv, t0)
        loss = (y * w).sum()
        f = pytensor.function([y0, p, tv, t0], [y, *pytensor.grad(loss, [y0, p, tv, t0])])
        results.append(f(Y0, params_flat(), TVALS, 0.2))
    for erk, bdf in zip(*results):
        np.testing.assert_allclose(erk, bdf, rtol=5e-9, atol=1e-11)


@pytest.mark.parametrize("methods", [ERK, {"solver": "DIRK"}, {"solver": "auto"}], ids=["ERK", "DIRK", "auto"])
def test_erk_op_in_numba_mode_equals_the_default_mode_without_warnings(methods):
    y0, p, tv, t0 = pt.dvector(), pt.dvector(), pt.dvector(), pt.dscalar()
    w = np.linspace(-1.0, 2.0, 2 * len(TVALS)).reshape(-1, 2)
    loss = (SolveODE(lv_problem(), dict(TIGHT, **methods))(y0, p, tv, t0) * w).sum()
    outputs = [loss] + pytensor.grad(loss, [y0, p, tv, t0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the object-mode fallback among others
        results = [pytensor.function([y0, p, tv, t0], outputs, mode=mode)(Y0, params_flat(), TVALS, 0.2)
                   for mode in (NUMBA, VM)]
    for numba_value, default_value in zip(*results):
        np.testing.assert_array_equal(numba_value, default_value)


@pytest.mark.parametrize("derivatives", ["adjoint", "forward"])
def test_solve_ivp_with_erk_and_its_solver(derivatives):
    """solve_ivp on ARKODE; its result's solver (built from the Op's options) solves alike."""
    alpha = pt.dscalar("alpha")
    res = solve_ivp(y0={"hares": Y0[0], "lynx": Y0[1]}, params=dict(TRUE, alpha=alpha),
                    rhs=lotka_volterra, tvals=TVALS, t0=0.0, derivatives=derivatives,
                    solver_kwargs=dict(TIGHT, **(ERK if derivatives == "adjoint" else {"solver": "ERK"})))
    y, dy_dalpha = pytensor.function([alpha], [res.flat, pytensor.grad(res.flat[-1, 0], alpha)])(TRUE["alpha"])
    np.testing.assert_allclose(y, reference(), rtol=1e-8)
    solver = res.solver
    solver.set_params(params_flat())
    if derivatives == "adjoint":
        y_out, grad_out, lambda_out = solver.make_output_buffers(TVALS)
        solver.solve_forward(0.0, TVALS, Y0, y_out)
        grads = np.zeros_like(y_out)
        grads[-1, 0] = 1.0
        solver.solve_backward(TVALS[-1], 0.0, TVALS, grads, grad_out, lambda_out)
        np.testing.assert_array_equal(y_out, y)  # the same method, options and steps
        np.testing.assert_array_equal(grad_out, [dy_dalpha])
    else:
        y_out, sens_out = solver.make_output_buffers(TVALS)
        solver.solve(0.0, TVALS, Y0, y_out, sens_out)
        np.testing.assert_array_equal(y_out, y)
        np.testing.assert_array_equal(sens_out[-1, 0, 0], dy_dalpha)
    # ERK's steps (measured 115, 214 with sensitivities), not BDF's (290, 492).
    assert solver.stats()["steps"] < 250


@pytest.mark.parametrize("mode", [VM, NUMBA])
def test_erk_failure_gives_nan_and_is_counted(mode):
    op = SolveODE(lv_problem(), dict(ERK, max_steps=3), "adjoint")  # 3 steps do not reach 0.5
    p = pt.dvector()
    loss = op(Y0, p, TVALS, 0.0).sum()
    f = pytensor.function([p], [loss, pytensor.grad(loss, p)], mode=mode)
    before = op.n_failures
    with warnings.catch_warnings(record=True) as caught:  # numba reports on stderr instead
        warnings.simplefilter("always")
        value_, grad = f(params_flat())
    assert np.isnan(value_) and np.all(np.isnan(grad))
    assert op.n_failures == before + 2  # failed calls: the value's and the gradient's
    if mode == VM:
        assert any("An ODE solve failed with ARK_TOO_MUCH_WORK" in str(w.message) for w in caught)


def test_failures_give_nan_and_are_reported_once():
    op = SolveODE(lv_problem(), {"max_steps": 3}, "adjoint")  # too stiff for 3 steps
    p = pt.dvector()
    loss = op(Y0, p, TVALS, 0.0).sum()
    f = pytensor.function([p], [loss, pytensor.grad(loss, p)], mode=VM)  # numba warns on stderr
    with pytest.warns(RuntimeWarning, match="CV_TOO_MUCH_WORK"):
        value_, grad = f(params_flat())
    assert np.isnan(value_) and np.all(np.isnan(grad))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f(params_flat())  # reported once: no second warning
    assert op.n_failures >= 3  # forward and gradient of the first call, forward of the second


def fail_in_child(function_bytes, points):
    f = cloudpickle.loads(function_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x in points:
            f(x)


@pytest.mark.parametrize("start, mode", [("fork", VM), ("spawn", NUMBA)])
def test_failures_in_worker_processes_reach_the_parent_count(start, mode):
    """pm.sample(cores=2) runs the Op in forked or spawned (unpickled) worker processes:
    their failed solves are counted in the parent's op.n_failures, readable afterwards."""
    op = SolveODE(lv_problem(), {"max_steps": 3, "rtol": 1e-9}, "adjoint")  # too few steps
    p = pt.dvector()
    f = pytensor.function([p], op(Y0, p, TVALS, 0.0).sum(), mode=mode)
    before = op.n_failures
    child = multiprocessing.get_context(start).Process(
        target=fail_in_child, args=(cloudpickle.dumps(f), [params_flat()] * 3))
    child.start()
    child.join(timeout=300)
    assert child.exitcode == 0
    assert op.n_failures - before == 3


@pytest.mark.parametrize("mode", [VM, NUMBA])
def test_nan_parameter_gives_nan_not_an_exception(mode):
    op = SolveODE(lv_problem(), {"rtol": 1e-7}, "adjoint")
    p = pt.dvector()
    loss = op(Y0, p, TVALS, 0.0).sum()
    f = pytensor.function([p], [loss, pytensor.grad(loss, p)], mode=mode)
    bad = params_flat()
    bad[1] = np.nan
    before = op.n_failures
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value_, grad = f(bad)
    assert np.isnan(value_) and np.all(np.isnan(grad))
    assert op.n_failures > before
    good_value, _ = f(params_flat())  # the Op recovers on the next good point
    np.testing.assert_allclose(good_value, reference(params=params_flat()).sum(), rtol=1e-6)


def test_static_input_errors():
    op = SolveODE(lv_problem(), TIGHT)
    with pytest.raises(TypeError, match="y0"):
        op(np.zeros(3), params_flat(), TVALS, 0.0)
    with pytest.raises(TypeError, match="t0"):
        op(Y0, params_flat(), TVALS, np.zeros(2))
    with pytest.raises(ValueError, match="solver_kwargs"):
        SolveODE(lv_problem(), {"not_an_option": 1})
    with pytest.raises(ValueError, match="rtol"):
        SolveODE(lv_problem(), {"rtol": -1.0})
    with pytest.raises(ValueError, match="hares"):
        solve_ivp(y0={"hares": (np.ones(2), ()), "lynx": 1.0}, params={k: v for k, v in TRUE.items()},
                  rhs=lotka_volterra, tvals=TVALS, t0=0.0)
    with pytest.raises(TypeError, match="shape"):
        solve_ivp(y0={"hares": pt.dvector(), "lynx": 1.0}, params=TRUE, rhs=lotka_volterra,
                  tvals=TVALS, t0=0.0)


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps])
def test_pickle_op_and_compiled_function(dumps):
    a = pt.dscalar("a")
    res = solve_ivp(y0={"hares": Y0[0], "lynx": Y0[1]}, params=dict(TRUE, alpha=a),
                    rhs=lambda t, y, p: lotka_volterra(t, y, p), tvals=TVALS, t0=0.0,
                    solver_kwargs=TIGHT)
    op2 = pickle.loads(dumps(res.op))
    assert op2 == res.op and hash(op2) == hash(res.op)
    loss = res.flat.sum()
    f = pytensor.function([a], [loss, pytensor.grad(loss, a)])
    f2 = pickle.loads(dumps(f))
    np.testing.assert_allclose(f2(0.5), f(0.5), rtol=1e-14)


def test_ops_of_different_problems_are_not_equal():
    other = sl.SympyProblem(params={k: () for k in TRUE}, states={"hares": (), "lynx": ()},
                            rhs_sympy=lambda t, y, p: {"hares": p.alpha * y.hares, "lynx": -p.gamma * y.lynx})
    assert SolveODE(lv_problem(), TIGHT) != SolveODE(other, TIGHT)
    assert SolveODE(lv_problem(), TIGHT) != SolveODE(lv_problem(), {"rtol": 1e-9})


@pytest.mark.parametrize("mode", [VM, NUMBA])
def test_threads_give_the_serial_numbers(mode):
    p = pt.dvector()
    loss = SolveODE(lv_problem(), TIGHT)(Y0, p, TVALS, 0.0).sum()
    f = pytensor.function([p], [loss, pytensor.grad(loss, p)], mode=mode)
    points = [params_flat() * (1 + 0.02 * k) for k in range(8)]
    serial = [f(x) for x in points]
    results = {}

    def work(tid):
        # Each thread needs its own function copy: a compiled PyTensor function holds
        # its output storage, but the Op's solvers are shared through the pool.
        g = f.copy()
        for rep in range(3):
            for k in range(len(points)):
                results[tid, rep, k] = g(points[(k + tid) % len(points)])

    threads = [threading.Thread(target=work, args=(tid,)) for tid in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (tid, rep, k), (v, g) in results.items():
        np.testing.assert_array_equal(v, serial[(k + tid) % len(points)][0])
        np.testing.assert_array_equal(g, serial[(k + tid) % len(points)][1])


# -- sampling (slow) --------------------------------------------------------------------------

LV_TRUE = {"alpha": 0.55, "beta": 0.028, "gamma": 0.8, "delta": 0.024}
LV_Z0 = np.array([33.0, 6.0])
LV_SIGMA = 0.1


def synthetic_data():
    problem = sl.SympyProblem(params={k: () for k in LV_TRUE}, states={"hares": (), "lynx": ()},
                              rhs_sympy=lotka_volterra)
    solver = sl.Solver(problem, solver="BDF", rtol=1e-10, atol=1e-10)
    solver.set_params_dict(LV_TRUE)
    tvals = np.arange(0.0, 21.0)
    y = solver.make_output_buffers(tvals)
    solver.solve(0.0, tvals, LV_Z0, y)
    noise = np.random.default_rng(7).normal(scale=LV_SIGMA, size=y.shape)
    return tvals, y * np.exp(noise)


def synthetic_model(methods=None):
    """alpha, gamma and sigma free; beta, delta known (numpy constants, not differentiated),
    which keeps the posterior well conditioned and the sampling test short. ``methods``:
    more solver options (e.g. `ERK`)."""
    import pymc as pm

    tvals, data = synthetic_data()
    with pm.Model() as model:
        free = {name: pm.LogNormal(name, mu=np.log(LV_TRUE[name]) + 0.2, sigma=0.5)
                for name in ("alpha", "gamma")}
        sigma = pm.HalfNormal("sigma", 0.5)
        res = solve_ivp(y0={"hares": LV_Z0[0], "lynx": LV_Z0[1]},
                        params={**LV_TRUE, **free}, rhs=lotka_volterra, tvals=tvals, t0=0.0,
                        solver_kwargs={"rtol": 1e-7, "atol": 1e-7, **(methods or {})})
        assert res.problem.derivative_params == [("alpha",), ("gamma",)]
        pm.LogNormal("obs", mu=pt.log(res.flat), sigma=sigma, observed=data)
    return model


def check_recovery(idata):
    import arviz as az

    names = ["alpha", "gamma", "sigma"]
    assert int(idata.sample_stats["diverging"].sum()) == 0
    rhat = az.rhat(idata, var_names=names)  # the same call in arviz 0.2x and 1.x
    assert max(float(rhat[n]) for n in names) < 1.01, rhat
    for name in names:
        # the central 94% interval (az.hdi's keywords differ between arviz 0.2x and 1.x)
        low, high = np.quantile(idata.posterior[name].values, [0.03, 0.97])
        assert low < dict(LV_TRUE, sigma=LV_SIGMA)[name] < high, (name, low, high)


@pytest.mark.slow
def test_pymc_recovers_known_parameters():
    import pymc as pm

    with synthetic_model():
        # 1000 draws: at 500 the rank-normalized r_hat of 2 chains wandered around the 1.01 bound
        # (1.0109 with seed 3 on main at af6237a) without any sign of a wrong posterior
        idata = pm.sample(draws=1000, tune=500, chains=2, cores=1, random_seed=3, progressbar=False,
                          nuts_sampler="pymc",  # PyMC 6's default is nutpie
                          compute_convergence_checks=False)
    check_recovery(idata)


@pytest.mark.slow
@pytest.mark.parametrize("methods", [{}, {"solver": "BDF"}], ids=["default", "BDF"])
def test_nutpie_recovers_known_parameters(methods):
    """The default: ERK forward and backward on this model; BDF with the DIRK backward."""
    import pymc as pm

    with synthetic_model(methods):
        # 1000 draws, as for PyMC's sampler: at 500 the max r_hat of the 2 chains wandered
        # over 1.01 (1.0106 and 1.0149 with seed 3) as the solver's last digits changed
        idata = pm.sample(draws=1000, tune=500, chains=2, nuts_sampler="nutpie", random_seed=3,
                          progressbar=False)
    check_recovery(idata)


@pytest.mark.slow
@pytest.mark.parametrize("mp_ctx", ["spawn", "fork"])
def test_multiprocess_sampling(mp_ctx):
    import pymc as pm

    with synthetic_model():
        idata = pm.sample(draws=100, tune=100, chains=2, cores=2, mp_ctx=mp_ctx, random_seed=4,
                          nuts_sampler="pymc",
                          progressbar=False, compute_convergence_checks=False)
    alpha = idata.posterior["alpha"].values
    assert alpha.shape == (2, 100) and np.all(np.isfinite(alpha))
    assert abs(np.median(alpha) - LV_TRUE["alpha"]) < 0.1
