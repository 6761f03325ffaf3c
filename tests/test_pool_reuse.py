"""Subjects whose Ops share props share one solver pool (csrc/sl_pool.c): a logp + dlogp
evaluation solves forward once per subject, and the results do not depend on which solver
served a call.

A hierarchical model's evaluation runs the value calls of subjects 1 .. K, then their
gradient calls; each gradient call reuses the forward solve of its inputs (t0, y0, params,
tvals, doses) if a free solver still holds it. Every test gets a pool of its own through
a `max_steps` no other test uses (pools are shared by props within a process).
"""
import threading

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

import sunode_like as sl
from sunode_like import Doses
from sunode_like._sundials import ffi, lib
from sunode_like.wrappers.as_pytensor import SolveODE

import gradient_problems as gpm

LV = gpm.lotka_volterra()
OPTIONS = dict(rtol=1e-8, atol=1e-8)
BASE_SOLVERS = 8  # csrc/sl_pool.c: solvers a pool holds before its first eviction


def subject_params(n_subjects, shift=0.0):
    """Per-subject LV params, 2% apart; ``shift`` moves them all (a new sampler point)."""
    return [LV.params * (1 + 0.02 * k + shift) for k in range(n_subjects)]


def data(k):
    """Subject k's observations (deterministic, different per subject)."""
    return 20.0 + np.sin(np.arange(len(LV.tvals))[:, None] + [k, 2 * k + 1])


def lv_op(max_steps):
    return SolveODE(LV.problem, dict(OPTIONS, max_steps=max_steps), "adjoint")


def loss_and_grads(op, n_subjects, mode=None):
    """One function: the summed squared errors of n_subjects (each with its own params and
    data) and its gradient wrt each subject's params."""
    params = [pt.dvector(f"p{k}") for k in range(n_subjects)]
    loss = sum(((op(LV.y0, p, LV.tvals, 0.0) - data(k)) ** 2).sum() for k, p in enumerate(params))
    return pytensor.function(params, [loss, *pytensor.grad(loss, params)], mode=mode)


def single_subject(op, mode=None):
    """One subject's loss and gradient, with the subject's data as an input."""
    p, d = pt.dvector("p"), pt.dmatrix("d")
    loss = ((op(LV.y0, p, LV.tvals, 0.0) - d) ** 2).sum()
    return pytensor.function([p, d], [loss, pytensor.grad(loss, p)], mode=mode)


def pool_size(op):
    return int(lib.sl_pool_size(op._ptr))


@pytest.mark.parametrize("n_subjects, max_steps, mode", [
    (1, 71_001, None), (2, 71_002, None), (5, 71_005, None), (40, 71_040, None), (5, 71_015, "NUMBA")])
def test_a_logp_dlogp_evaluation_solves_each_subject_forward_once(n_subjects, max_steps, mode):
    """Before: each value call took the solver the last call left, so every gradient call
    but the last solved forward again (2 K forward solves per evaluation). Now K, from the
    first evaluation on up to the pool's initial 8 solvers; 40 subjects need 4 evaluations
    to raise the bound to 40 (72, 64, 48, then 40 forward solves: each evaluation's
    evictions raise it by 8, 16, 8). The numba backend (PyMC's numba mode, nutpie) calls the
    same pool."""
    op = lv_op(max_steps)
    f = loss_and_grads(op, n_subjects, mode)
    one = single_subject(op, mode)
    per_evaluation = []
    for shift in (0.0, 0.01, 0.02, 0.03, 0.04):
        before = op.n_forward_solves
        loss, *grads = f(*subject_params(n_subjects, shift))
        per_evaluation.append(op.n_forward_solves - before)
        separate = [one(p, data(k)) for k, p in enumerate(subject_params(n_subjects, shift))]
        np.testing.assert_allclose(loss, sum(value for value, _ in separate), rtol=1e-13)
        for k in range(n_subjects):  # the same solves, bit for bit, whichever solver ran them
            np.testing.assert_array_equal(grads[k], separate[k][1])
    expected = [72, 64, 48, 40, 40] if n_subjects == 40 else [n_subjects] * 5
    assert per_evaluation == expected
    # PyTensor's default backend runs every value call before the gradient calls (the case
    # that needs a solver per subject); numba's runs each gradient call after its value call.
    assert pool_size(op) == n_subjects if mode is None else pool_size(op) <= n_subjects
    assert op.n_failures == 0


def test_the_gradients_are_those_of_finite_differences():
    """The reused forward solves belong to the right subjects: central differences of the
    summed loss in each subject's alpha (rtol 1e-12 solves, step 1e-5)."""
    op = SolveODE(LV.problem, dict(rtol=1e-12, atol=1e-12, max_steps=71_100), "adjoint")
    f = loss_and_grads(op, 3)
    points = subject_params(3)
    _, *grads = f(*points)
    for k in range(3):
        step = np.zeros(4)
        step[0] = 1e-5 * points[k][0]
        up = f(*[p + step * (j == k) for j, p in enumerate(points)])[0]
        down = f(*[p - step * (j == k) for j, p in enumerate(points)])[0]
        assert grads[k][0] == pytest.approx((up - down) / (2 * step[0]), rel=1e-6)


def fresh_adjoint(op, params, grads):
    """(y, dL/dparams, dL/dy0) of a fresh AdjointSolver with the Op's options."""
    adj = sl.AdjointSolver(LV.problem, **op.solver_kwargs)
    adj.set_params(params)
    y_out, grad_out, lambda_out = adj.make_output_buffers(LV.tvals)
    adj.solve_forward(0.0, LV.tvals, LV.y0, y_out)
    adj.solve_backward(LV.tvals[-1], 0.0, LV.tvals, grads, grad_out, lambda_out)
    return y_out, grad_out, -lambda_out


def pool_solve(op, params):
    y = np.empty((len(LV.tvals), 2))
    flag = lib.sl_pool_solve(op._ptr, 0.0, _buf(LV.y0), _buf(params), len(LV.tvals), _buf(LV.tvals),
                             _buf(y), ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL)
    assert flag == 0
    return y


def pool_gradient(op, params, grads):
    dy0, dparams = np.empty(2), np.empty(4)
    flag = lib.sl_pool_gradient(op._ptr, 0.0, _buf(LV.y0), _buf(params), len(LV.tvals), _buf(LV.tvals),
                                _buf(grads), _buf(dy0), _buf(dparams), ffi.NULL, ffi.NULL, ffi.NULL)
    assert flag == 0
    return dparams, dy0


def _buf(x):
    return ffi.from_buffer("double[]", x)


def test_interleaved_subjects_give_a_fresh_solvers_bits():
    """12 subjects' value and gradient calls in shuffled orders, some gradients before
    their value, some twice, some whose solve was evicted (12 > the initial 8 solvers), a
    solve at another point between: every output is bitwise a fresh AdjointSolver's.
    checkpoint_steps=37 makes the backward solves recompute forward steps."""
    op = SolveODE(LV.problem, dict(OPTIONS, max_steps=71_200, checkpoint_steps=37), "adjoint")
    rng = np.random.default_rng(1)
    points = subject_params(12)
    grads = [rng.normal(size=(len(LV.tvals), 2)) for _ in points]
    expected = [fresh_adjoint(op, p, g) for p, g in zip(points, grads)]
    calls = [("value", k) for k in range(12)] * 2 + [("gradient", k) for k in range(12)] * 3
    for round_ in range(3):
        for kind, k in [calls[i] for i in rng.permutation(len(calls))]:
            if kind == "value":
                np.testing.assert_array_equal(pool_solve(op, points[k]), expected[k][0])
            else:
                dparams, dy0 = pool_gradient(op, points[k], grads[k])
                np.testing.assert_array_equal(dparams, expected[k][1])
                np.testing.assert_array_equal(dy0, expected[k][2])
            if rng.random() < 0.1:
                pool_solve(op, LV.params * (1.5 + rng.random()))
    assert op.n_failures == 0


def test_forward_only_calls_keep_the_pool_bounded_and_then_reuse_still_works():
    """Posterior predictive: 60 calls of 5 subjects' values, each at new params, and no
    gradients. The pool stops at its initial 8 solvers (it would grow only when a gradient
    call asks for a solve it evicted for lack of room). Logp + dlogp evaluations afterwards:
    the first looks forward-only until its gradients come (2 K - 1 = 9 forward solves),
    the next ones evict the unconsumed forward-only solves first and solve each subject
    once."""
    op = lv_op(71_300)
    params = [pt.dvector(f"p{k}") for k in range(5)]
    values = pytensor.function(params, [op(LV.y0, p, LV.tvals, 0.0) for p in params])
    reference = single_subject(op)
    before = op.n_forward_solves
    for i in range(60):
        points = subject_params(5, shift=1e-3 * i)
        ys = values(*points)
        if i % 20 == 0:
            for y, p in zip(ys, points):
                np.testing.assert_array_equal(y, fresh_adjoint(op, p, np.zeros((len(LV.tvals), 2)))[0])
    assert op.n_forward_solves - before == 300
    assert pool_size(op) == BASE_SOLVERS
    f = loss_and_grads(op, 5)
    per_evaluation = []
    for shift in (0.5, 0.6, 0.7):
        before = op.n_forward_solves
        _, *grads = f(*subject_params(5, shift))
        per_evaluation.append(op.n_forward_solves - before)
        for k in (0, 4):
            np.testing.assert_array_equal(grads[k], reference(subject_params(5, shift)[k], data(k))[1])
    assert per_evaluation == [9, 5, 5]
    assert pool_size(op) == BASE_SOLVERS


def test_threads_evaluating_a_hierarchical_logp_get_the_single_threaded_bits():
    """Two threads run copies of a 5-subject logp + dlogp at their own points (the pool
    serves both, 10 unconsumed solves at a time at most): the results are bitwise those of
    one thread, and the pool holds no more solvers than its bound allows."""
    op = lv_op(71_400)
    f = loss_and_grads(op, 5)
    shifts = [0.01 * i for i in range(8)]
    expected = [f(*subject_params(5, s)) for s in shifts]
    results = {}

    def work(tid):
        g = f.copy()
        for i in range(len(shifts)):
            j = (i + 3 * tid) % len(shifts)
            results[tid, i] = (j, g(*subject_params(5, shifts[j])))

    threads = [threading.Thread(target=work, args=(tid,)) for tid in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 * len(shifts)
    for j, outputs in results.values():
        for a, b in zip(outputs, expected[j]):
            np.testing.assert_array_equal(a, b)
    assert pool_size(op) <= 2 * 5 + 2


def one_compartment(t, y, p):
    return {"gut": -p.ka * y.gut, "central": p.ka * y.gut - p.CL / p.V * y.central}


PK = sl.SympyProblem(params={"ka": (), "CL": (), "V": ()}, states={"gut": (), "central": ()},
                     rhs_sympy=one_compartment)
PK_TVALS = np.linspace(0.0, 24.0, 25)
PK_PARAMS = np.array([1.3, 2.0, 10.0])


def test_subjects_that_differ_only_in_their_doses_keep_their_own_forward_solves():
    """4 subjects with the same params and dose times but their own dose amounts (the
    doses are part of a solve's inputs): one forward solve per subject and evaluation, and
    each gradient (also wrt the amounts) is that of the subject alone."""
    op = SolveODE(PK, dict(rtol=1e-10, atol=1e-10, max_steps=71_500, solver_backward="ERK"),
                  dose_states=(0, 0))
    times = np.array([0.0, 12.0])
    p, amounts = pt.dvector("p"), [pt.dvector(f"amount{k}") for k in range(4)]
    observed = [np.linspace(1.0, 5.0 + k, len(PK_TVALS)) for k in range(4)]
    ys = [op(np.zeros(2), p, PK_TVALS, 0.0, times, a, np.zeros(2)) for a in amounts]
    loss = sum(((y[:, 1] - d) ** 2).sum() for y, d in zip(ys, observed))
    f = pytensor.function([p, *amounts], [loss, *pytensor.grad(loss, [p, *amounts])])
    a1, d1 = pt.dvector("a1"), pt.dvector("d1")
    y1 = op(np.zeros(2), p, PK_TVALS, 0.0, times, a1, np.zeros(2))
    loss1 = ((y1[:, 1] - d1) ** 2).sum()
    one = pytensor.function([p, a1, d1], [loss1, *pytensor.grad(loss1, [p, a1])])
    for shift in (0.0, 0.1, 0.2):
        doses = [np.array([100.0, 50.0]) * (1 + 0.25 * k + shift) for k in range(4)]
        before = op.n_forward_solves
        loss_value, dparams, *damounts = f(PK_PARAMS, *doses)
        assert op.n_forward_solves - before == 4
        separate = [one(PK_PARAMS, a, d) for a, d in zip(doses, observed)]
        np.testing.assert_allclose(loss_value, sum(s[0] for s in separate), rtol=1e-13)
        np.testing.assert_allclose(dparams, sum(s[1] for s in separate), rtol=1e-13)
        for k in range(4):
            np.testing.assert_array_equal(damounts[k], separate[k][2])
    # linear model: dL/damount of a dose at t0 is the closed form's 2 sum (c - d) dc/dD with
    # c = D ka / (ka - ke) (exp(-ke t) - exp(-ka t)) / D per unit dose (+ the second dose's share)
    ka, ke = PK_PARAMS[0], PK_PARAMS[1] / PK_PARAMS[2]

    def central(t, amount):
        out = np.zeros_like(t)
        for tau, a in zip(times, amount):
            s = np.clip(t - tau, 0.0, None)
            out = out + a * ka / (ka - ke) * (np.exp(-ke * s) - np.exp(-ka * s))
        return out

    unit = ka / (ka - ke) * (np.exp(-ke * PK_TVALS) - np.exp(-ka * PK_TVALS))
    exact = 2 * np.sum((central(PK_TVALS, doses[3]) - observed[3]) * unit)
    assert damounts[3][0] == pytest.approx(exact, rel=1e-7)
    assert op.n_failures == 0


@pytest.mark.parametrize("options, expected", [
    ({}, 204),  # 2**28 bytes / (1001 steps * 2 vectors * 8 * (2 states + 80))
    ({"interpolation": "polynomial"}, 408),  # 1 vector per step
    ({"checkpoint_steps": 50_000}, 8),  # 66 MB each: no more than the initial bound
])
def test_the_pool_grows_to_at_most_256_mib_of_checkpoint_storage(options, expected):
    """Each solver preallocates one checkpoint interval (measured 1.2 MB for LV with the
    default 1000 steps), so gradient calls raise the pool's bound to at most 256 MiB of it."""
    op = SolveODE(LV.problem, dict(OPTIONS, max_steps=71_600, **options), "adjoint")
    assert lib.sl_pool_max_size(op._ptr) == expected
