"""Gradients of a scalar loss L(y(tvals[0]), ..., y(tvals[-1])) three independent ways.

* adjoint: `AdjointSolver.gradients` (and `solve_backward`, whose lambda_out is -dL/dy0);
* forward sensitivities: `Solver(sens_mode=...)` gives S[i, k, j] = dy_j(tvals[i])/dtheta_k,
  theta = (derivative params, y0), so dL/dtheta = sum_i S[i] @ grads[i] with
  grads[i] = dL/dy(tvals[i]); dL/dtvals[i] = grads[i] . f(tvals[i], y_i) and
  dL/dt0 = -(dL/dy0) . f(t0, y0);
* finite differences of L (4th-order central stencils; one-sided where t0 = tvals[0] pins a
  direction), solved at tighter tolerance than the gradients.

They must agree to 1e-5 relative on y0, every derivative param, t0 and every tvals entry.
"""
import numpy as np
import pytest

import sunode_like as sl
from sunode_like import AdjointSolver, Gradients, Solver, SolverError

import gradient_problems as gpm

RTOL = 1e-5


# -- losses: y_out (n_t, n_states) -> (L, dL/dy_out) ----------------------------------------
def linear_loss(weights):
    return lambda y: (float(np.sum(weights * y)), weights)


def squared_loss(data):
    return lambda y: (float(np.sum((y - data) ** 2)), 2.0 * (y - data))


def make_loss(kind, gp, seed=0):
    """A linear loss with random fixed weights, or sum (y - data)^2 with noisy data."""
    rng = np.random.default_rng(seed)
    shape = (len(gp.tvals), gp.problem.n_states)
    y = forward(gp)
    scale = np.abs(y).max(axis=0) + 1e-300  # weight every state by its size, e.g. y2 ~ 1e-5
    if kind == "linear":
        return linear_loss(rng.normal(size=shape) / scale)
    data = y + 0.2 * scale * rng.normal(size=shape)
    return squared_loss(data)


# -- the three ways -----------------------------------------------------------------------
def forward(gp):
    """y_out of shape (n_t, n_states) at the problem's options."""
    solver = Solver(gp.problem, **gp.options)
    solver.set_params(gp.params)
    y_out = solver.make_output_buffers(gp.tvals)
    solver.solve(gp.t0, gp.tvals, gp.y0, y_out)
    return y_out


def adjoint_gradients(gp, loss, **options):
    adj = AdjointSolver(gp.problem, **(gp.options | options))
    adj.set_params(gp.params)
    y_out, _, _ = adj.make_output_buffers(gp.tvals)
    adj.solve_forward(gp.t0, gp.tvals, gp.y0, y_out)
    return adj.gradients(gp.t0, gp.tvals, gp.y0, y_out, loss(y_out)[1])


def sensitivity_gradients(gp, loss, sens_mode, **options):
    solver = Solver(gp.problem, sens_mode=sens_mode, **(gp.options | options))
    solver.set_params(gp.params)
    y_out, sens_out = solver.make_output_buffers(gp.tvals)
    solver.solve(gp.t0, gp.tvals, gp.y0, y_out, sens_out)
    grads = loss(y_out)[1]
    dtheta = np.einsum("ikj,ij->k", sens_out, grads)
    n_p = gp.problem.n_dparams
    dy0 = dtheta[n_p:]
    dtvals = np.array([g @ solver.rhs(t, y) for g, t, y in zip(grads, gp.tvals, y_out)])
    return Gradients(dy0, dtheta[:n_p], float(-dy0 @ solver.rhs(gp.t0, gp.y0)), dtvals)


def _central(f, h):
    return (-f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h)


def _one_sided(f, h):
    """f'(0) from f(0), f(h), f(2h), f(3h); h < 0 looks backward."""
    return (-11 * f(0.0) + 18 * f(h) - 9 * f(2 * h) + 2 * f(3 * h)) / (6 * h)


def fd_gradients(gp, loss):
    """Finite differences of L; steps 1e-3 of each param, ``gp.y0_steps`` in y0, and 1e-3 of
    the gap to the neighbouring output times in t0 and tvals."""
    solver = Solver(gp.problem, **(gp.fd_options or gp.options))

    def L(params=gp.params, y0=gp.y0, t0=gp.t0, tvals=gp.tvals):
        solver.set_params(params)
        y_out = solver.make_output_buffers(tvals)
        solver.solve(t0, tvals, y0, y_out)
        return loss(y_out)[0]

    def unit(n, i):
        e = np.zeros(n)
        e[i] = 1.0
        return e

    n, n_t = gp.problem.n_states, len(gp.tvals)
    y0_steps = 1e-3 * np.maximum(np.abs(gp.y0), 1.0) if gp.y0_steps is None else gp.y0_steps
    dy0 = [_central(lambda h: L(y0=gp.y0 + h * unit(n, i)), y0_steps[i]) for i in range(n)]
    dp = []
    for j in gp.problem.derivative_indices:
        step = 1e-3 * (abs(gp.params[j]) or 1.0)
        dp.append(_central(lambda h: L(params=gp.params + h * unit(len(gp.params), j)), step))
    edges = np.concatenate([[gp.t0], gp.tvals, [gp.tvals[-1] + 1.0]])
    dtvals = []
    for i in range(n_t):
        f = lambda h: L(tvals=gp.tvals + h * unit(n_t, i))  # noqa: E731
        left, right = edges[i + 1] - edges[i], edges[i + 2] - edges[i + 1]
        if left == 0.0:  # tvals[0] == t0 cannot move left
            dtvals.append(_one_sided(f, 1e-3 * right))
        else:
            dtvals.append(_central(f, 1e-3 * min(left, right)))
    f = lambda h: L(t0=gp.t0 + h)  # noqa: E731
    gap = gp.tvals[0] - gp.t0
    dt0 = _central(f, 1e-3 * gap) if gap > 0 else _one_sided(f, -1e-3 * (gp.tvals[1] - gp.tvals[0]))
    return Gradients(np.array(dy0), np.array(dp), float(dt0), np.array(dtvals))


def assert_gradients_close(actual, expected, rtol=RTOL, label=""):
    """Each field to ``rtol`` relative, entry by entry (with a floor of 1e-3 * rtol times
    the field's largest entry, for entries that are zero up to rounding)."""
    for name in Gradients._fields:
        a, e = np.atleast_1d(getattr(actual, name)), np.atleast_1d(getattr(expected, name))
        np.testing.assert_allclose(a, e, rtol=rtol, atol=1e-3 * rtol * np.abs(e).max(initial=0.0),
                                   err_msg=f"{label}: dL/d{name}")


def check_all_ways(gp, loss, fd=True, **adjoint_options):
    """Adjoint vs both sensitivity modes (and finite differences); returns the adjoint's."""
    adjoint = adjoint_gradients(gp, loss, **adjoint_options)
    simultaneous = sensitivity_gradients(gp, loss, "simultaneous")
    assert_gradients_close(adjoint, simultaneous, label="adjoint vs simultaneous")
    assert_gradients_close(adjoint, sensitivity_gradients(gp, loss, "staggered"),
                           label="adjoint vs staggered")
    if fd:
        fd = fd_gradients(gp, loss)
        assert_gradients_close(adjoint, fd, label="adjoint vs finite differences")
        assert_gradients_close(simultaneous, fd, label="simultaneous vs finite differences")
    return adjoint


# -- (a) Lotka-Volterra -------------------------------------------------------------------
@pytest.mark.parametrize("solver_backward", ["BDF", "ERK"])
@pytest.mark.parametrize("t0", [0.0, -1.5])
@pytest.mark.parametrize("kind", ["linear", "squared"])
def test_lotka_volterra(kind, t0, solver_backward):
    gp = gpm.lotka_volterra(t0)
    check_all_ways(gp, make_loss(kind, gp), solver_backward=solver_backward)


# -- (b) Robertson, stiff -----------------------------------------------------------------
@pytest.fixture(scope="module")
def robertson():
    gp = gpm.robertson()
    loss = make_loss("linear", gp)
    return gp, loss, check_all_ways(gp, loss)


def test_robertson(robertson):
    gp, loss, adjoint = robertson
    # dL/dk2 is tiny in absolute terms (k2 = 3e7) but not relative to k2
    assert abs(adjoint.params[1] * gp.params[1]) > 1e-3 * np.abs(adjoint.params * gp.params).max()


@pytest.mark.parametrize("linear_solver_backward", ["band", "sparse", "spgmr"])
def test_robertson_backward_linear_solvers(robertson, linear_solver_backward):
    gp, loss, reference = robertson
    got = adjoint_gradients(gp, loss, linear_solver_backward=linear_solver_backward)
    assert_gradients_close(got, reference, label=linear_solver_backward)


def test_robertson_squared_loss():
    gp = gpm.robertson()
    check_all_ways(gp, make_loss("squared", gp))


# -- (c) 20 compartments, 21 params, sparse -----------------------------------------------
@pytest.mark.parametrize("kind", ["linear", "squared"])
def test_chain_sparse(kind):
    gp = gpm.chain(20)
    assert gp.problem.n_states >= 20 and gp.problem.n_dparams >= 20
    assert gp.options["linear_solver"] == "sparse"
    check_all_ways(gp, make_loss(kind, gp))


def test_chain_explicit_backward():
    """The chain's adjoint is not stiff (rates ~1): the explicit backward solve applies."""
    gp = gpm.chain(20)
    check_all_ways(gp, make_loss("squared", gp), fd=False, solver_backward="ERK")


@pytest.mark.parametrize("forward, backward", [
    ("band", "band"), ("spgmr", "spgmr"), ("sparse", "band"), ("dense", "sparse"),
    ("sparse", "spgmr"),
])
def test_chain_linear_solvers(forward, backward):
    """The chain's Jacobian is lower bidiagonal, so the backward one (-J^T) is upper
    bidiagonal: a band solver with swapped widths, KLU on the transposed pattern."""
    gp = gpm.chain(20)
    loss = make_loss("squared", gp)
    reference = sensitivity_gradients(gp, loss, "simultaneous")
    got = adjoint_gradients(gp, loss, linear_solver=forward, linear_solver_backward=backward)
    assert_gradients_close(got, reference, label=f"{forward}/{backward}")


# -- f depending on t explicitly, and a param f does not use ----------------------------------
@pytest.mark.parametrize("solver_backward", ["BDF", "ERK"])
@pytest.mark.parametrize("kind", ["linear", "squared"])
def test_time_dependent_rhs(kind, solver_backward):
    gp = gpm.forced_oscillator()
    adjoint = check_all_ways(gp, make_loss(kind, gp), solver_backward=solver_backward)
    assert adjoint.params[-1] == 0.0  # "unused": an empty column of df/dp


# -- derivative_params --------------------------------------------------------------------
# grad_out lists derivative params in declaration order, whatever order the subset names them.
@pytest.mark.parametrize("factory, subset, columns", [
    (gpm.lotka_volterra, ["delta", ("alpha",)], [0, 3]),
    (gpm.chain, [("d",), "k"], list(range(20)) + [20]),
    (gpm.lotka_volterra, [], []),
])
def test_derivative_params_subset(factory, subset, columns):
    full, part = factory(), factory(derivative_params=subset)
    assert part.problem.n_dparams == len(columns)
    loss = make_loss("linear", full)
    reference = adjoint_gradients(full, loss)
    got = check_all_ways(part, loss, fd=False)
    # the quadrature error test sees fewer components, so not bit-equal
    np.testing.assert_allclose(got.params, reference.params[columns], rtol=1e-6)
    np.testing.assert_allclose(got.y0, reference.y0, rtol=1e-6)


# -- sign convention: closed form of x' = -a x ----------------------------------------------
def test_sign_convention_closed_form():
    """x' = -a x, L = sum_i w_i x(t_i): dL/dx0 = sum w_i e^{-a dt_i} = -lambda_out and
    dL/da = -sum w_i dt_i x0 e^{-a dt_i} = grad_out, with dt_i = t_i - t0."""
    problem = sl.SympyProblem(params={"a": ()}, states={"x": ()},
                              rhs_sympy=lambda t, y, p: {"x": -p.a * y.x})
    a, x0, t0, tvals, w = 0.7, 1.3, 0.5, np.array([1.0, 2.0, 4.0]), np.array([0.3, -1.2, 2.0])
    adj = AdjointSolver(problem, rtol=1e-11, atol=1e-12)
    adj.set_params(np.array([a]))
    y_out, grad_out, lambda_out = adj.make_output_buffers(tvals)
    adj.solve_forward(t0, tvals, np.array([x0]), y_out)
    adj.solve_backward(tvals[-1], t0, tvals, w[:, None], grad_out, lambda_out)
    decay = np.exp(-a * (tvals - t0))
    np.testing.assert_allclose(y_out[:, 0], x0 * decay, rtol=1e-9)
    dL_dx0 = w @ decay
    np.testing.assert_allclose(-lambda_out, [dL_dx0], rtol=1e-8)     # dL/dy0 = -lambda_out
    np.testing.assert_allclose(grad_out, [-(w * (tvals - t0)) @ decay * x0], rtol=1e-8)
    g = adj.gradients(t0, tvals, np.array([x0]), y_out, w[:, None])
    np.testing.assert_allclose(g.y0, [dL_dx0], rtol=1e-8)
    np.testing.assert_allclose(g.t0, a * x0 * dL_dx0, rtol=1e-8)     # -dL/dx0 * f(t0, x0)
    np.testing.assert_allclose(g.tvals, -a * w * y_out[:, 0], rtol=1e-8)


def test_single_output_time_at_t0():
    """tvals = [t0]: no integration; lambda_out = -grads[0] and grad_out = 0."""
    gp = gpm.lotka_volterra()
    adj = AdjointSolver(gp.problem, **gp.options)
    adj.set_params(gp.params)
    tvals = np.array([gp.t0])
    y_out, grad_out, lambda_out = adj.make_output_buffers(tvals)
    adj.solve_forward(gp.t0, tvals, gp.y0, y_out)
    grad_out[:], lambda_out[:] = np.nan, np.nan
    adj.solve_backward(gp.t0, gp.t0, tvals, np.array([[2.0, -3.0]]), grad_out, lambda_out)
    np.testing.assert_array_equal(y_out[0], gp.y0)
    np.testing.assert_array_equal(lambda_out, [-2.0, 3.0])
    np.testing.assert_array_equal(grad_out, np.zeros(4))


# -- adjoint options: all give the same gradient ---------------------------------------------
@pytest.fixture(scope="module")
def lv_reference():
    gp = gpm.lotka_volterra(-1.5)
    loss = make_loss("squared", gp, seed=1)
    return gp, loss, sensitivity_gradients(gp, loss, "simultaneous")


@pytest.mark.parametrize("options", [
    dict(interpolation="polynomial"),
    dict(checkpoint_steps=5),
    dict(checkpoint_steps=5, interpolation="polynomial"),
    dict(rtol_backward=1e-11, atol_backward=1e-11, rtol=1e-9, atol=1e-9),
    dict(quad_errcon=False),
    dict(solver_backward="ADAMS"),
    dict(solver="ADAMS", solver_backward="ADAMS"),
    dict(rtol_quad=1e-11, atol_quad=1e-11),
    dict(solver_backward="ERK", quad_errcon=False),
    dict(solver="ADAMS", solver_backward="ERK"),
    dict(solver_backward="ERK", rtol_backward=1e-11, atol_backward=1e-11, rtol=1e-9, atol=1e-9),
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_adjoint_options_same_gradient(lv_reference, options):
    gp, loss, reference = lv_reference
    assert_gradients_close(adjoint_gradients(gp, loss, **options), reference, label=str(options))


@pytest.mark.parametrize("options", [
    dict(quad_errcon=False),
    dict(rtol_quad=1e-4, atol_quad=1e-4),
])
@pytest.mark.parametrize("solver_backward", ["BDF", "ERK"])
def test_backward_tolerances_are_used(lv_reference, options, solver_backward):
    """Loose rtol_backward/atol_backward move the gradient by about their size once the
    quadrature no longer holds the steps small (by default it is in the error test at the
    forward tolerances)."""
    gp, loss, reference = lv_reference
    loose = adjoint_gradients(gp, loss, rtol_backward=1e-4, atol_backward=1e-4,
                              solver_backward=solver_backward, **options)
    error = np.abs(loose.params / reference.params - 1).max()
    assert 1e-4 < error < 1e-1


def test_checkpoint_steps_is_used(lv_reference):
    """Few steps per checkpoint change the backward step sequence (the backward solve
    stops at every checkpoint, whose forward steps are recomputed), so the result moves,
    but only by solver error."""
    gp, loss, _ = lv_reference
    stored = adjoint_gradients(gp, loss)
    recomputed = adjoint_gradients(gp, loss, checkpoint_steps=5)
    assert not np.array_equal(recomputed.params, stored.params)
    assert_gradients_close(recomputed, stored, rtol=1e-6)


def test_repeated_backward_and_new_forward(lv_reference):
    """solve_backward twice gives the same result; a new forward at other params then
    gives that point's gradient (the backward problem is reused, not rebuilt)."""
    gp, loss, _ = lv_reference
    adj = AdjointSolver(gp.problem, checkpoint_steps=20, **gp.options)
    adj.set_params(gp.params)
    y_out, _, _ = adj.make_output_buffers(gp.tvals)
    adj.solve_forward(gp.t0, gp.tvals, gp.y0, y_out)
    grads = loss(y_out)[1]
    first = adj.gradients(gp.t0, gp.tvals, gp.y0, y_out, grads)
    second = adj.gradients(gp.t0, gp.tvals, gp.y0, y_out, grads)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    other = gp._replace(params=gp.params * 1.1, y0=gp.y0 * 0.9)
    adj.set_params(other.params)
    adj.solve_forward(other.t0, other.tvals, other.y0, y_out)
    again = adj.gradients(other.t0, other.tvals, other.y0, y_out, loss(y_out)[1])
    assert_gradients_close(again, sensitivity_gradients(other, loss, "simultaneous"))
    # Not bit-equal to a fresh solver: state of the previous solve's checkpoint
    # recomputation survives CVodeReInit and moves the steps (1e-7 in dL/dbeta here).
    assert_gradients_close(again, adjoint_gradients(other, loss, checkpoint_steps=20), rtol=1e-6)


def test_explicit_backward_keeps_no_state(lv_reference):
    """With solver_backward="ERK" the forward solve records its steps afresh and the
    backward solve starts from its own step estimate: a reused solver gives bit for bit
    what a new one gives."""
    gp, loss, _ = lv_reference
    adj = AdjointSolver(gp.problem, solver_backward="ERK", **gp.options)
    other = gp._replace(params=gp.params * 1.1, y0=gp.y0 * 0.9)
    y_out, _, _ = adj.make_output_buffers(gp.tvals)
    for case in (gp, other, other):
        adj.set_params(case.params)
        adj.solve_forward(case.t0, case.tvals, case.y0, y_out)
        got = adj.gradients(case.t0, case.tvals, case.y0, y_out, loss(y_out)[1])
        fresh = adjoint_gradients(case, loss, solver_backward="ERK")
        for a, b in zip(got, fresh):
            np.testing.assert_array_equal(a, b)
    assert_gradients_close(got, sensitivity_gradients(other, loss, "simultaneous"))


def test_explicit_backward_on_stiff_problem_fails_clearly(robertson):
    """An explicit method cannot follow Robertson's stiff adjoint: it runs out of steps
    and says so, instead of returning a gradient."""
    gp, loss, _ = robertson
    with pytest.raises(SolverError) as info:
        adjoint_gradients(gp, loss, solver_backward="ERK", max_steps_backward=2000)
    assert info.value.flag_name == "ARK_TOO_MUCH_WORK"


def test_explicit_backward_forward_failure():
    """The recording forward solve keeps max_steps per output interval, as CVode does."""
    gp = gpm.lotka_volterra()
    adj = AdjointSolver(gp.problem, solver_backward="ERK", max_steps=5)
    adj.set_params(gp.params)
    y_out, _, _ = adj.make_output_buffers(gp.tvals)
    with pytest.raises(SolverError, match="max_steps") as info:
        adj.solve_forward(gp.t0, gp.tvals, gp.y0, y_out)
    assert info.value.flag_name == "CV_TOO_MUCH_WORK"


# -- errors -------------------------------------------------------------------------------
@pytest.fixture
def lv_adjoint():
    gp = gpm.lotka_volterra()
    adj = AdjointSolver(gp.problem, rtol=1e-8, atol=1e-8)
    adj.set_params(gp.params)
    y_out, grad_out, lambda_out = adj.make_output_buffers(gp.tvals)
    return gp, adj, y_out, grad_out, lambda_out


def test_backward_before_forward(lv_adjoint):
    gp, adj, y_out, grad_out, lambda_out = lv_adjoint
    with pytest.raises(ValueError, match="solve_forward"):
        adj.solve_backward(gp.tvals[-1], gp.t0, gp.tvals, np.ones_like(y_out), grad_out, lambda_out)


@pytest.mark.parametrize("change", ["tvals", "t0", "params"])
def test_backward_after_different_forward(lv_adjoint, change):
    gp, adj, y_out, grad_out, lambda_out = lv_adjoint
    adj.solve_forward(gp.t0, gp.tvals, gp.y0, y_out)
    t0, tvals = gp.t0, gp.tvals
    if change == "tvals":
        tvals = gp.tvals.copy()
        tvals[5] += 0.5
    elif change == "t0":
        t0 = gp.t0 - 1.0
    else:
        adj.set_params(gp.params * 1.01)
    with pytest.raises(ValueError, match="solve_forward"):
        adj.solve_backward(tvals[-1], t0, tvals, np.ones_like(y_out), grad_out, lambda_out)


def test_backward_after_failed_forward():
    gp = gpm.lotka_volterra()
    adj = AdjointSolver(gp.problem, max_steps=3)
    adj.set_params(gp.params)
    y_out, grad_out, lambda_out = adj.make_output_buffers(gp.tvals)
    with pytest.raises(SolverError):
        adj.solve_forward(gp.t0, gp.tvals, gp.y0, y_out)
    with pytest.raises(ValueError, match="solve_forward"):
        adj.solve_backward(gp.tvals[-1], gp.t0, gp.tvals, np.ones_like(y_out), grad_out, lambda_out)


@pytest.mark.parametrize("name, shape", [
    ("grads", (21, 3)), ("grads", (20, 2)), ("grads", (42,)),
    ("grad_out", (3,)), ("grad_out", (4, 1)), ("lambda_out", (3,)), ("lambda_out", (1, 2)),
])
def test_bad_shapes(lv_adjoint, name, shape):
    gp, adj, y_out, grad_out, lambda_out = lv_adjoint
    adj.solve_forward(gp.t0, gp.tvals, gp.y0, y_out)
    args = dict(grads=np.ones_like(y_out), grad_out=grad_out, lambda_out=lambda_out)
    args[name] = np.zeros(shape)
    with pytest.raises(ValueError, match=f"`{name}`"):
        adj.solve_backward(gp.tvals[-1], gp.t0, gp.tvals, **args)


@pytest.mark.parametrize("name", ["grad_out", "lambda_out"])
def test_bad_output_buffers(lv_adjoint, name):
    """Outputs must be writeable C-contiguous float64 (they are written in place)."""
    gp, adj, y_out, grad_out, lambda_out = lv_adjoint
    adj.solve_forward(gp.t0, gp.tvals, gp.y0, y_out)
    good = dict(grad_out=grad_out, lambda_out=lambda_out)
    strided = np.zeros(2 * good[name].size)[::2]
    for bad in (good[name].astype(np.float32), strided, list(good[name])):
        args = dict(good, **{name: bad})
        with pytest.raises(ValueError, match=f"`{name}`"):
            adj.solve_backward(gp.tvals[-1], gp.t0, gp.tvals, np.ones_like(y_out), **args)


def test_nonfinite_grads(lv_adjoint):
    gp, adj, y_out, grad_out, lambda_out = lv_adjoint
    adj.solve_forward(gp.t0, gp.tvals, gp.y0, y_out)
    grads = np.ones_like(y_out)
    grads[3, 1] = np.nan
    with pytest.raises(ValueError, match="`grads`"):
        adj.solve_backward(gp.tvals[-1], gp.t0, gp.tvals, grads, grad_out, lambda_out)


@pytest.mark.parametrize("t_last", [19.0, 21.0])
def test_t_last_must_be_last_tval(lv_adjoint, t_last):
    gp, adj, y_out, grad_out, lambda_out = lv_adjoint
    adj.solve_forward(gp.t0, gp.tvals, gp.y0, y_out)
    with pytest.raises(ValueError, match="t_last"):
        adj.solve_backward(t_last, gp.t0, gp.tvals, np.ones_like(y_out), grad_out, lambda_out)


@pytest.mark.parametrize("solver_backward, flag_name", [
    ("BDF", "CV_TOO_MUCH_WORK"), ("ERK", "ARK_TOO_MUCH_WORK")])
@pytest.mark.parametrize("max_steps_backward", [2, 10])
def test_backward_failure_raises_solver_error(max_steps_backward, solver_backward, flag_name):
    """Too few backward steps for 20 time units: SolverError with the flag and the time
    reached; the solver still works afterwards on a span short enough for 10 steps."""
    gp = gpm.lotka_volterra()
    adj = AdjointSolver(gp.problem, max_steps_backward=max_steps_backward,
                        solver_backward=solver_backward)
    adj.set_params(gp.params)
    y_out, grad_out, lambda_out = adj.make_output_buffers(gp.tvals)
    adj.solve_forward(gp.t0, gp.tvals, gp.y0, y_out)
    grads = np.ones_like(y_out)
    with pytest.raises(SolverError) as info:
        adj.solve_backward(gp.tvals[-1], gp.t0, gp.tvals, grads, grad_out, lambda_out)
    assert info.value.flag < 0
    assert info.value.flag_name == flag_name
    assert gp.t0 < info.value.t < gp.tvals[-1]
    if max_steps_backward < 10:
        return
    short = gp._replace(tvals=np.array([0.0, 1e-4]))
    loss = linear_loss(np.ones((2, 2)))
    y_out, grad_out, lambda_out = adj.make_output_buffers(short.tvals)
    adj.solve_forward(short.t0, short.tvals, short.y0, y_out)
    got = adj.gradients(short.t0, short.tvals, short.y0, y_out, loss(y_out)[1])
    assert_gradients_close(got, sensitivity_gradients(short, loss, "simultaneous"))
