"""Bad input fails early with an error naming the entry; what is accepted gives right numbers.

Issue 10, items 1 (the content hash covers names, order and shapes), 2 (a Piecewise that is
undefined somewhere is rejected at problem build) and 10 (options, complex or string values,
and sympy functions the kernels cannot compile), and the order of ``grad_out`` (issue 14).
Warnings are errors here: complex input must raise, not warn and drop the imaginary part.
"""
import numpy as np
import pytest
import sympy
from sympy.codegen import cfunctions

import sunode_like as sl
from sunode_like._codegen import compile_dae_model, compile_model
from sunode_like.wrappers.as_pytensor import SolveODE

import gradient_problems as gpm
import helpers

pytestmark = pytest.mark.filterwarnings("error")


def _linear(t, y, p):
    return {"x": -p.a * y.x + p.b}


def _dense(colptr, rows, values, n_rows):
    out = np.zeros((n_rows, len(colptr) - 1))
    for j in range(len(colptr) - 1):
        out[rows[colptr[j]:colptr[j + 1]], j] = values[colptr[j]:colptr[j + 1]]
    return out


# -- item 1: the content hash covers everything the kernels depend on ----------------------
def test_param_order_gives_other_kernels_hash_and_op():
    ab = sl.SympyProblem(params={"a": (), "b": ()}, states={"x": ()}, rhs_sympy=_linear)
    ba = sl.SympyProblem(params={"b": (), "a": ()}, states={"x": ()}, rhs_sympy=_linear)
    assert ab.content_hash != ba.content_hash
    # The same flat vector means a=2.5, b=1 for one and b=2.5, a=1 for the other.
    flat = np.array([2.5, 1.0])
    values = []
    for problem in (ab, ba):
        solver = sl.Solver(problem)
        solver.set_params(flat)
        values.append(solver.rhs(0.0, np.array([1.0]))[0])
        solver.set_params_dict({"a": 2.5, "b": 1.0})
        assert solver.rhs(0.0, np.array([1.0]))[0] == -1.5
    assert values == [-1.5, 1.5]
    assert SolveODE(ab) != SolveODE(ba)
    assert SolveODE(ab) == SolveODE(sl.SympyProblem(params={"a": (), "b": ()}, states={"x": ()},
                                                    rhs_sympy=_linear))


def test_state_order_shapes_and_nesting_change_the_hash():
    def rhs(t, y, p):
        return {"x": -y.x, "v": y.x}

    xv = sl.SympyProblem(params={}, states={"x": (), "v": ()}, rhs_sympy=rhs)
    vx = sl.SympyProblem(params={}, states={"v": (), "x": ()}, rhs_sympy=rhs)
    assert xv.content_hash != vx.content_hash
    solver = sl.Solver(vx)
    np.testing.assert_array_equal(solver.rhs(0.0, np.array([3.0, 2.0])), [2.0, -2.0])  # (v', x')
    # Same symbol names (y_a_b), other layouts.
    nested = sl.SympyProblem(params={}, states={"a": {"b": ()}}, rhs_sympy=lambda t, y, p: {"a": {"b": -y.a.b}})
    flat = sl.SympyProblem(params={}, states={"a_b": ()}, rhs_sympy=lambda t, y, p: {"a_b": -y.a_b})
    assert nested.content_hash != flat.content_hash


def test_dae_param_order_gives_other_kernels():
    def make(params):
        return sl.DAEProblem(params=params, differential_states={"x": ()}, algebraic_states={"z": ()},
                             rhs_sympy=lambda t, x, z, p: {"x": -p.a * x.x + p.b * z.z},
                             algebraic_sympy=lambda t, x, z, p: {"z": z.z - 1})
    ab, ba = make({"a": (), "b": ()}), make({"b": (), "a": ()})
    assert ab.content_hash != ba.content_hash
    out = []
    for problem in (ab, ba):
        res = np.empty(2)
        compile_dae_model(problem).res(0.0, np.array([1.0, 1.0, 0.0, 0.0]), np.array([2.5, 1.0]), res)
        out.append(res[0])  # x' - (-a x + b z) at x = z = 1, x' = 0
    assert out == [1.5, -1.5]


# -- item 2 (build-time half): a Piecewise must cover every input --------------------------
@pytest.mark.parametrize("rhs, where, covered", [
    (lambda t, y, p: {"x": sympy.Piecewise((-y.x, t < 1))}, r"rhs_sympy\['x'\]", r"Interval\.open\(-oo, 1\)"),
    (lambda t, y, p: {"x": sympy.interpolating_spline(3, t, [0, 1, 2, 3], [0, 1, 4, 9]) * y.x},
     r"rhs_sympy\['x'\]", r"Interval\(0, 3\)"),
    (lambda t, y, p: {"x": sympy.Piecewise((-y.x, y.x < p.a))}, r"rhs_sympy\['x'\]", r"where p_a > y_x"),
])
def test_piecewise_without_otherwise_branch(rhs, where, covered):
    with pytest.raises(ValueError, match=where + r"` has a Piecewise .*cover only " + covered
                       + r".*Add an otherwise branch.*\(sympy.nan, True\)"):
        sl.SympyProblem(params={"a": ()}, states={"x": ()}, rhs_sympy=rhs)


def test_dae_piecewise_without_otherwise_branch_names_the_equation():
    with pytest.raises(ValueError, match=r"algebraic_sympy\['z\[1\]'\]` has a Piecewise .*Interval.open\(0, oo\)"):
        sl.DAEProblem(params={}, differential_states={"x": ()}, algebraic_states={"z": (2,)},
                      rhs_sympy=lambda t, x, z, p: {"x": -x.x},
                      algebraic_sympy=lambda t, x, z, p: {"z": [z.z[0], z.z[1] - sympy.Piecewise((x.x, t > 0))]})


def test_covering_piecewise_and_spline_with_otherwise_branch_solve():
    # Conditions that cover every t without a literal True branch are accepted.
    spline = sympy.interpolating_spline(1, sympy.Symbol("t", real=True), [0, 1, 2], [1, 3, 2])
    problem = sl.SympyProblem(
        params={}, states={"x": (), "w": ()},
        rhs_sympy=lambda t, y, p: {"x": sympy.Piecewise((1, t < 1), (2, t >= 1)),
                                   "w": sympy.Piecewise(*spline.args, (sympy.nan, True))})
    solver = sl.Solver(problem, rtol=1e-10, atol=1e-10, tstop=2.0)
    tvals = np.array([0.5, 1.0, 1.5, 2.0])
    y = solver.make_output_buffers(tvals)
    solver.solve(0.0, tvals, np.zeros(2), y)
    np.testing.assert_allclose(y[:, 0], [0.5, 1.0, 2.0, 3.0], rtol=1e-7)
    # w = integral of the spline 1 + 2t (t < 1), 4 - t (t >= 1).
    np.testing.assert_allclose(y[:, 1], [0.75, 2.0, 3.375, 4.5], rtol=1e-7)
    # Past the knots the spline is NaN: the solve fails instead of returning numbers.
    with pytest.raises(sl.SolverError):
        sl.Solver(problem).solve(0.0, np.array([3.0]), np.zeros(2), np.zeros((1, 2)))


# -- item 10: options are checked before any C call ----------------------------------------
@pytest.mark.parametrize("options, error, match", [
    (dict(bandwidths=(-1, -1)), ValueError, r"bandwidths=\(-1, -1\).*between the Jacobian's own bandwidths \(1, 1\)"),
    (dict(bandwidths=(0, 1)), ValueError, r"bandwidths=\(0, 1\).*\(1, 1\)"),
    (dict(bandwidths=(1, 2)), ValueError, r"bandwidths=\(1, 2\).*n_states - 1 = 1"),
    (dict(bandwidths=(1,)), TypeError, r"bandwidths=\(1,\).*pair of integers"),
    (dict(bandwidths=(1.0, 1.0)), TypeError, r"bandwidths=\(1.0, 1.0\).*pair of integers"),
    (dict(max_steps=2**63), ValueError, r"max_steps=9223372036854775808.*no larger than 9223372036854775807"),
    (dict(max_steps=np.nan), ValueError, r"max_steps=nan.*positive integer"),
    (dict(max_steps=np.inf), ValueError, r"max_steps=inf.*positive integer"),
    (dict(max_steps="100"), TypeError, r"max_steps='100'.*positive integer; got str"),
    (dict(max_steps=True), TypeError, r"max_steps=True.*got bool"),
    (dict(rtol=1e-8 + 1e-9j), TypeError, r"`rtol` must be real; got the complex value"),
    (dict(atol=[1e-8, 1e-8j]), TypeError, r"`atol` must be real; got the complex value"),
    (dict(rtol="1e-8"), TypeError, r"`rtol` must be a real number.*got str"),
    # rtol = 1 gave hares = -241 at t = 20 (true: 29.7) without an error.
    (dict(rtol=1.0), ValueError, r"`rtol=1.0` must be below 1"),
    (dict(rtol=1e10), ValueError, r"`rtol=10000000000.0` must be below 1"),
    (dict(tstop=1j), TypeError, r"`tstop` must be real"),
    (dict(tstop=np.array([5.0])), ValueError, r"`tstop` must be a scalar; got an array of shape \(1,\)"),
    (dict(solver=["BDF"]), ValueError, r"solver=\['BDF'\].*expected one of"),
])
def test_bad_solver_options(options, error, match):
    with pytest.raises(error, match=match):
        sl.Solver(helpers.lotka_volterra_problem(), **options)


@pytest.mark.parametrize("options, error, match", [
    (dict(checkpoint_steps=2**63), ValueError, r"checkpoint_steps=9223372036854775808"),
    (dict(checkpoint_steps=np.nan), ValueError, r"checkpoint_steps=nan"),
    (dict(rtol_backward=1j), TypeError, r"`rtol_backward` must be real"),
    (dict(max_steps_backward=np.nan), ValueError, r"max_steps_backward=nan"),
    (dict(solver_backward="RK4"), ValueError, r"solver_backward='RK4'"),
    (dict(atol_quad="x"), TypeError, r"`atol_quad` must be a real number"),
    (dict(rtol_backward=2.0), ValueError, r"`rtol_backward=2.0` must be below 1"),
    (dict(rtol_quad=1), ValueError, r"`rtol_quad=1` must be below 1"),
])
def test_bad_adjoint_options(options, error, match):
    with pytest.raises(error, match=match):
        sl.AdjointSolver(helpers.lotka_volterra_problem(), **options)


def _robertson_dae():
    return sl.DAEProblem(
        params={"k1": (), "k2": (), "k3": ()},
        differential_states={"y1": (), "y2": ()}, algebraic_states={"y3": ()},
        rhs_sympy=lambda t, x, z, p: {"y1": -p.k1 * x.y1 + p.k3 * x.y2 * z.y3,
                                      "y2": p.k1 * x.y1 - p.k3 * x.y2 * z.y3 - p.k2 * x.y2 ** 2},
        algebraic_sympy=lambda t, x, z, p: {"y3": x.y1 + x.y2 + z.y3 - 1})


@pytest.mark.parametrize("options, error, match", [
    (dict(bandwidths=(-1, -1)), ValueError, r"bandwidths=\(-1, -1\)"),
    (dict(bandwidths=(3, 3)), ValueError, r"n_states - 1 = 2"),
    (dict(max_steps=2**63), ValueError, r"max_steps=9223372036854775808"),
    (dict(rtol=1j), TypeError, r"`rtol` must be real"),
])
def test_bad_dae_solver_options(options, error, match):
    with pytest.raises(error, match=match):
        sl.DAESolver(_robertson_dae(), **options)


def test_band_solver_with_wider_bandwidths_than_the_pattern():
    case = helpers.lotka_volterra()
    for bandwidths in (None, (1, 1), np.array([1, 1])):
        y = helpers.solve(case, linear_solver="band", bandwidths=bandwidths, rtol=1e-10, atol=1e-10)
        assert helpers.relative_error(y, case.reference) < 1e-6


# -- item 10: values must be real numbers, checked per entry ---------------------------------
@pytest.fixture(scope="module")
def lv():
    case = helpers.lotka_volterra()
    solver = sl.AdjointSolver(case.problem)
    solver.set_params_dict(case.params)
    return case, solver


@pytest.mark.parametrize("params, error, match", [
    ({"alpha": "fast"}, TypeError, r"`params\['alpha'\]` must be a real number.*got str 'fast'"),
    ({"alpha": 0.5 + 0.1j}, TypeError, r"`params\['alpha'\]` must be real; got the complex value"),
    ({"alpha": [0.5, 0.6]}, ValueError, r"`params\['alpha'\]` has shape \(2,\)"),
    ({"alpha": None}, TypeError, r"`params\['alpha'\]` must be a real number.*got NoneType None"),
    ({"alpha": [None]}, TypeError, r"`params\['alpha'\]` must be a real number.*got list \[None\]"),
])
def test_bad_param_values(lv, params, error, match):
    case, solver = lv
    with pytest.raises(error, match=match):
        solver.set_params_dict(case.params | params)
    with pytest.raises(TypeError, match=r"`params` must be real"):
        solver.set_params(np.array([0.5, 0.0, 0.0, 1j]))


@pytest.mark.parametrize("params", [np.array([0.5, np.nan, 0.1, -np.inf]), {"alpha": 0.5, "beta": np.nan,
                                                                              "gamma": 0.1, "delta": -np.inf}])
def test_non_finite_params_are_named(lv, params):
    case, solver = lv
    with pytest.raises(ValueError, match=r"`params` entries \['beta', 'delta'\] are not finite \(NaN or inf\)"):
        (solver.set_params_dict if isinstance(params, dict) else solver.set_params)(params)
    solver.set_params_dict(case.params)


@pytest.mark.parametrize("change, error, match", [
    (dict(y0=np.array([34.0 + 1j, 5.9])), TypeError, r"`y0` must be real; got the complex value"),
    (dict(y0={"hares": 34.0, "lynx": 5.9j}), TypeError, r"`y0\['lynx'\]` must be real"),
    (dict(y0={"hares": "many", "lynx": 5.9}), TypeError, r"`y0\['hares'\]` must be a real number"),
    (dict(tvals=np.arange(21.0) + 0j), TypeError, r"`tvals` must be real"),
    (dict(tvals=["0", "1"]), TypeError, r"`tvals` must be a real number"),
    (dict(t0=np.array([0.0])), ValueError, r"`t0` must be a scalar; got an array of shape \(1,\)"),
    (dict(t0=0j), TypeError, r"`t0` must be real"),
    (dict(t0="0"), TypeError, r"`t0` must be a real number"),
    # None used to become NaN ("`t0=nan` must be finite"), masked values were used unmasked.
    (dict(t0=None), TypeError, r"`t0` must be a real number.*got NoneType None"),
    (dict(y0={"hares": None, "lynx": 5.9}), TypeError, r"`y0\['hares'\]` must be a real number.*NoneType"),
    (dict(y0=np.ma.masked_array([34.0, 5.9], mask=[True, False])), TypeError,
     r"`y0` is a masked array with 1 masked entries.*np.ma.filled"),
    (dict(tvals=np.ma.masked_greater(np.arange(21.0), 19)), TypeError, r"`tvals` is a masked array"),
])
def test_bad_forward_inputs(lv, change, error, match):
    case, solver = lv
    inputs = dict(t0=case.t0, tvals=case.tvals, y0=case.y0) | change
    with pytest.raises(error, match=match):
        solver.solve_forward(inputs["t0"], inputs["tvals"], inputs["y0"],
                             np.zeros((len(case.tvals), 2)))


@pytest.mark.parametrize("change, error, match", [
    (dict(grads=np.ones((21, 2)) * 1j), TypeError, r"`grads` must be real"),
    (dict(grads=[["a", "b"]] * 21), TypeError, r"`grads` must be a real number"),
    (dict(t_last=np.array([20.0])), ValueError, r"`t_last` must be a scalar"),
    (dict(grads=np.ma.masked_array(np.ones((21, 2)), mask=np.eye(21, 2))), TypeError,
     r"`grads` is a masked array with 2 masked entries"),
])
def test_bad_backward_inputs(lv, change, error, match):
    case, solver = lv
    y_out, grad_out, lambda_out = solver.make_output_buffers(case.tvals)
    solver.solve_forward(case.t0, case.tvals, case.y0, y_out)
    inputs = dict(t_last=case.tvals[-1], grads=np.ones((21, 2))) | change
    with pytest.raises(error, match=match):
        solver.solve_backward(inputs["t_last"], case.t0, case.tvals, inputs["grads"], grad_out, lambda_out)


def test_solving_before_setting_params_is_an_error():
    """Params used to start at 0: LV without set_params solved to a plausible hares = 34 e^0
    (no predation, no growth) with no error."""
    case = helpers.lotka_volterra()
    y_out = np.zeros((len(case.tvals), 2))
    for solver in (sl.Solver(case.problem), sl.AdjointSolver(case.problem)):
        solve = solver.solve if isinstance(solver, sl.Solver) else solver.solve_forward
        with pytest.raises(ValueError, match=r"params are not set; call set_params_dict.*'alpha', 'beta'"):
            solve(case.t0, case.tvals, case.y0, y_out)
        solver.set_params_dict(case.params)
        solve(case.t0, case.tvals, case.y0, y_out)
        assert helpers.relative_error(y_out, case.reference) < 1e-5
    dae = sl.DAESolver(_robertson_dae())
    with pytest.raises(ValueError, match=r"params are not set"):
        dae.solve(0.0, np.array([1.0]), np.array([1.0, 0.0]), np.zeros((1, 3)))
    # A model that uses no param needs none set.
    free = sl.Solver(sl.SympyProblem(params={"unused": ()}, states={"x": ()}, rhs_sympy=lambda t, y, p: {"x": -y.x}))
    x = np.zeros((1, 1))
    free.solve(0.0, np.array([1.0]), np.array([1.0]), x)
    assert x[0, 0] == pytest.approx(np.exp(-1.0), rel=1e-6)


def test_unmasked_masked_array_is_its_values(lv):
    """A masked array without masked entries is plain numbers and gives the same solution."""
    case, solver = lv
    y_plain, y_masked = np.zeros((21, 2)), np.zeros((21, 2))
    solver.solve_forward(case.t0, case.tvals, case.y0, y_plain)
    solver.solve_forward(case.t0, case.tvals, np.ma.masked_array(case.y0, mask=[False, False]), y_masked)
    np.testing.assert_array_equal(y_masked, y_plain)


def test_dae_complex_differential_y0():
    solver = sl.DAESolver(_robertson_dae())
    solver.set_params_dict({"k1": 0.04, "k2": 3e7, "k3": 1e4})
    tvals = np.array([1.0])
    with pytest.raises(TypeError, match=r"`y0` must be real"):
        solver.solve(0.0, tvals, np.array([1.0 + 0j, 0.0]), solver.make_output_buffers(tvals))


def test_dae_constraints_are_named():
    with pytest.raises(TypeError, match=r"`constraints\['y3'\]` must be real"):
        sl.DAESolver(_robertson_dae(), constraints={"y1": 1, "y2": 1, "y3": 1j})


@pytest.mark.parametrize("derivative_params, error, match", [
    (0, TypeError, r"derivative_params=0.*must be a list of param paths.*got int"),
    ("alpha", TypeError, r"derivative_params='alpha'.*got str. Write \['alpha'\]"),
    ([0], TypeError, r"`derivative_params` entry 0 must be a dotted string or a tuple"),
    ([("alpha", 1)], TypeError, r"entry \('alpha', 1\)"),
])
def test_bad_derivative_params_types(derivative_params, error, match):
    with pytest.raises(error, match=match):
        sl.SympyProblem(params={"alpha": ()}, states={"x": ()}, derivative_params=derivative_params,
                        rhs_sympy=lambda t, y, p: {"x": -p.alpha * y.x})
    with pytest.raises(error, match=match):
        sl.DAEProblem(params={"alpha": ()}, states={"x": ()}, derivative_params=derivative_params,
                      residual_sympy=lambda t, y, yp, p: {"x": yp.x + p.alpha * y.x})


# -- item 10: sympy the kernels cannot compute is rejected at problem build ------------------
@pytest.mark.parametrize("term, match", [
    (lambda x: sympy.Function("f")(x), r"uses the undefined function f\(y_v_1\)"),
    (lambda x: sympy.besselj(0, x), r"uses besselj \(in besselj\(0, y_v_1\)\).*Allowed: numbers"),
    (lambda x: sympy.gamma(x), r"uses gamma .*cannot compute or differentiate. Allowed: .*exp, log"),
    (lambda x: sympy.floor(x), r"uses floor "),
    (lambda x: sympy.Mod(x, 2), r"uses Mod "),
    (lambda x: sympy.Derivative(sympy.Function("g")(x), x), r"uses Derivative "),
    (lambda x: sympy.I * x, r"uses I, which is not a finite real number"),
    (lambda x: sympy.sqrt(-2) * x, r"uses I, which is not a finite real number"),
    (lambda x: sympy.Integer(-2) ** sympy.Rational(1, 3) * x, r"uses \(-2\)\*\*\(1/3\), which is not real"),
    (lambda x: sympy.asin(2) * x, r"uses asin\(2\), which is not real"),
    # Built, then failed to compile: d/dx (-1.5)**x = (-1.5)**x log(-1.5) is complex.
    (lambda x: sympy.Float(-1.5) ** x, r"uses \(-1\.5.*\)\*\*y_v_1, a negative number to a variable power"),
    (lambda x: sympy.Integer(-2) ** (x + 1), r"uses \(-2\)\*\*\(y_v_1 \+ 1\), a negative number"),
    (lambda x: sympy.sqrt(-x**2 - 1), r"uses sqrt\(-y_v_1\*\*2 - 1\), which is not real"),
    (lambda x: sympy.Integer(10) ** 400 * x, r"uses the number 100000000000\.\.\. \(401 characters\), which overflows float64"),
    (lambda x: sympy.Float("1e400") * x, r"uses the number 1000.*, which overflows float64"),
    (lambda x: sympy.oo + x, r"uses oo, which is not a finite real number"),
    (lambda x: sympy.zoo * x, r"uses zoo"),
    (lambda x: sympy.TribonacciConstant * x, r"uses the constant TribonacciConstant"),
    (lambda x: x < 1, r"must be a real-valued expression; got StrictLessThan"),
])
def test_unsupported_sympy_is_rejected_at_problem_build(term, match):
    def rhs(t, y, p):
        return {"u": -y.u, "v": [-y.v[0], term(y.v[1])]}

    with pytest.raises(ValueError, match=r"`rhs_sympy\['v\[1\]'\]` " + match):
        sl.SympyProblem(params={}, states={"u": (), "v": (2,)}, rhs_sympy=rhs)
    with pytest.raises(ValueError, match=r"`residual_sympy\['x'\]` "):
        sl.DAEProblem(params={}, states={"x": ()},
                      residual_sympy=lambda t, y, yp, p: {"x": term(y.x)})


def test_float_constants_compile_to_the_same_double():
    """sympy prints a Float with its 15 default digits: 1/3 compiled as 0.333333333333333 and
    0.1 + 0.2 as 0.3, and 2**80 written as an unevaluated power lost its last digits."""
    constants = [1 / 3, 0.1 + 0.2, np.pi * 1e-300, 6.02214076e23 / 7, 2.0**-1074]
    constants += np.random.default_rng(0).uniform(-1, 1, 10).tolist()
    two_80 = sympy.Pow(sympy.Integer(2**40), 2, evaluate=False)
    problem = sl.SympyProblem(
        params={}, states={"x": (len(constants),), "big": ()},
        rhs_sympy=lambda t, y, p: {"x": [c * y.x[i] for i, c in enumerate(constants)], "big": two_80 * y.big})
    out = np.empty(len(constants) + 1)
    compile_model(problem).rhs(0.0, np.ones(len(constants) + 1), np.zeros(1), out)
    assert out.tolist() == constants + [2.0**80]


def test_non_sympy_rhs_entry_is_a_type_error():
    with pytest.raises(TypeError, match=r"`rhs_sympy\['x'\]` must be a sympy expression or a number; got str"):
        sl.SympyProblem(params={}, states={"x": ()}, rhs_sympy=lambda t, y, p: {"x": "-x"})


# Each allowed function at a point inside its domain, with sympy's value and derivative there.
UNARY = [
    (sympy.exp, 0.3), (sympy.log, 1.7), (sympy.sin, 0.4), (sympy.cos, 0.4), (sympy.tan, 0.4),
    (sympy.cot, 0.4), (sympy.sec, 0.4), (sympy.csc, 0.4), (sympy.asin, 0.3), (sympy.acos, 0.3),
    (sympy.atan, 0.3), (sympy.acot, 0.3), (sympy.sinh, 0.3), (sympy.cosh, 0.3), (sympy.tanh, 0.3),
    (sympy.coth, 0.3), (sympy.asinh, 0.3), (sympy.acosh, 1.3), (sympy.atanh, 0.3), (sympy.erf, 0.3),
    (sympy.erfc, 0.3), (sympy.Abs, -0.3), (cfunctions.expm1, 0.3), (cfunctions.log1p, 0.3),
    (cfunctions.log2, 1.3), (cfunctions.log10, 1.3), (sympy.sqrt, 1.3), (sympy.cbrt, 1.3),
    (lambda x: sympy.pi * sympy.E * sympy.EulerGamma * sympy.GoldenRatio * sympy.Catalan * x, 0.3),
    (lambda x: sympy.Integer(2) ** 70 * x + sympy.Rational(3, 2 ** 80), 0.3),
    (lambda x: sympy.Piecewise((x**2, x < 1), (x, sympy.Eq(x, 1)), (-x, True)), 0.3),
    (lambda x: sympy.Piecewise((x**2, (x < 1) & ~(x > 2) | sympy.Ne(x, 1)), (x, True)), 1.0),
]
BINARY = [(sympy.atan2, 0.3), (cfunctions.hypot, 0.3), (sympy.Min, 0.3), (sympy.Max, 0.3)]


def test_every_allowed_function_compiles_and_matches_sympy():
    """f_i(x_i) (and g_j(x_j, c)) in one problem: the compiled rhs and df/dy, df/dc match
    sympy's own evaluation at the given points."""
    n, m = len(UNARY), len(BINARY)
    c = sympy.Symbol("c", real=True)
    x = sympy.symbols(f"x:{n + m}", real=True)
    exprs = [f(x[i]) for i, (f, _) in enumerate(UNARY)] + [g(x[n + j], c) for j, (g, _) in enumerate(BINARY)]
    point = np.array([v for _, v in UNARY + BINARY])
    c_value = 0.5
    problem = sl.SympyProblem(
        params={"c": ()}, states={"x": (n + m,)},
        rhs_sympy=lambda t, y, p: {"x": [e.subs({x[i]: y.x[i] for i in range(n + m)} | {c: p.c}) for e in exprs]})
    values = {x[i]: point[i] for i in range(n + m)} | {c: c_value}
    expected = [float(e.evalf(subs=values)) for e in exprs]
    d_dx = [float(sympy.diff(e, x[i]).evalf(subs=values)) for i, e in enumerate(exprs)]
    d_dc = [float(sympy.diff(e, c).evalf(subs=values)) for e in exprs]
    model = compile_model(problem)
    out = np.empty(n + m)
    assert model.rhs(0.0, point, np.array([c_value]), out) == 0
    np.testing.assert_allclose(out, expected, rtol=1e-14)
    jac = np.empty(len(model.JAC_ROWS))
    model.jac(0.0, point, np.array([c_value]), jac)
    dense = _dense(model.JAC_COLPTR, model.JAC_ROWS, jac, n + m)
    np.testing.assert_allclose(dense, np.diag(d_dx), rtol=1e-13, atol=1e-15)
    dfdp = np.empty(len(model.DFDP_ROWS))
    model.dfdp(0.0, point, np.array([c_value]), dfdp)
    np.testing.assert_allclose(_dense(model.DFDP_COLPTR, model.DFDP_ROWS, dfdp, n + m)[:, 0], d_dc,
                               rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("inner", [sympy.log, sympy.sqrt])
def test_sign_and_abs_of_an_argument_sympy_cannot_show_real(inner):
    """sympy rewrites sign(u) and Abs(u) as Piecewise only for u it knows to be real, so
    sign(log(x)) stayed, and its derivative failed to print when the solver was built."""
    a = sympy.Symbol("a", real=True)
    x = sympy.Symbol("x", real=True)

    def f(u, c):
        return c * sympy.sign(u - 1) + sympy.Abs(u - 1)

    problem = sl.SympyProblem(params={"a": ()}, states={"x": ()}, rhs_sympy=lambda t, y, p: {"x": f(inner(y.x), p.a)})
    model = compile_model(problem)
    for point in (0.25, 2.0, 3.5):
        out, jac = np.empty(1), np.empty(len(model.JAC_ROWS))
        model.rhs(0.0, np.array([point]), np.array([0.5]), out)
        model.jac(0.0, np.array([point]), np.array([0.5]), jac)
        values = {x: point, a: 0.5}
        assert out[0] == pytest.approx(float(f(inner(x), a).evalf(subs=values)), rel=1e-14)
        # d/dx |u - 1| = sign(u - 1) u'; the sign term's derivative is 0.
        expected = float((sympy.sign(inner(x) - 1) * sympy.diff(inner(x), x)).evalf(subs=values))
        assert jac.sum() == pytest.approx(expected, rel=1e-14)
    # In a DAE, dF/dy' = f(u) is differentiated once more (d/dt dF/dy').
    dae = sl.DAEProblem(params={"a": ()}, states={"x": ()},
                        residual_sympy=lambda t, y, yp, p: {"x": (3 + f(inner(y.x), p.a)) * yp.x + y.x})
    out = np.empty(1)
    compile_dae_model(dae).res(0.0, np.array([2.0, 0.5]), np.array([0.5]), out)
    assert out[0] == pytest.approx(float((3 + f(inner(x), a)).evalf(subs={x: 2.0, a: 0.5})) * 0.5 + 2.0, rel=1e-14)


@pytest.mark.parametrize("x, heaviside, sign", [(-2.0, 0.0, -1.0), (0.0, 0.5, 0.0), (3.0, 1.0, 1.0)])
def test_heaviside_and_sign_have_derivative_zero(x, heaviside, sign):
    """f = a H(x) + b sign(x) + H(x - 1, 1): df/dx = 0 (not DiracDelta), df/d(a, b) = (H, sign)."""
    problem = sl.SympyProblem(
        params={"a": (), "b": ()}, states={"x": ()},
        rhs_sympy=lambda t, y, p: {"x": p.a * sympy.Heaviside(y.x) + p.b * sympy.sign(y.x)
                                   + sympy.Heaviside(y.x - 1, 1)})
    model = compile_model(problem)
    assert len(model.JAC_ROWS) == 0  # no structural entry: the derivative is 0
    out, dfdp = np.empty(1), np.empty(len(model.DFDP_ROWS))
    model.rhs(0.0, np.array([x]), np.array([2.0, 3.0]), out)
    assert out[0] == 2.0 * heaviside + 3.0 * sign + float(x >= 1)
    model.dfdp(0.0, np.array([x]), np.array([2.0, 3.0]), dfdp)
    np.testing.assert_array_equal(_dense(model.DFDP_COLPTR, model.DFDP_ROWS, dfdp, 1), [[heaviside, sign]])


def test_heaviside_in_time_solves_with_the_right_gradient():
    """x' = k H(t - 1): x(t) = x0 + k max(t - 1, 0), so dx(T)/dk = T - 1 and dx(T)/dx0 = 1."""
    problem = sl.SympyProblem(params={"k": ()}, states={"x": ()},
                              rhs_sympy=lambda t, y, p: {"x": p.k * sympy.Heaviside(t - 1)})
    adj = sl.AdjointSolver(problem, rtol=1e-10, atol=1e-10)
    adj.set_params(np.array([0.7]))
    tvals = np.array([0.5, 2.0, 3.0])
    y_out, grad_out, lambda_out = adj.make_output_buffers(tvals)
    adj.solve_forward(0.0, tvals, np.array([2.0]), y_out)
    np.testing.assert_allclose(y_out[:, 0], [2.0, 2.7, 3.4], rtol=1e-8)
    adj.solve_backward(3.0, 0.0, tvals, np.ones((3, 1)), grad_out, lambda_out)
    np.testing.assert_allclose(grad_out, [0.0 + 1.0 + 2.0], rtol=1e-6)
    np.testing.assert_allclose(-lambda_out, [3.0], rtol=1e-8)


# -- issue 14: grad_out lists derivative params in declaration order -------------------------
def test_grad_out_in_declaration_order_matches_finite_differences():
    """LV with derivative_params named in reverse: grad_out = (dL/dbeta, dL/ddelta), checked
    against central differences; forward sensitivities use the same order."""
    gp = gpm.lotka_volterra(derivative_params=["delta", ("beta",)])
    problem, params, y0 = gp.problem, gp.params, gp.y0
    assert problem.derivative_params == [("beta",), ("delta",)]
    tvals = np.linspace(1.0, 10.0, 10)
    weights = np.random.default_rng(0).normal(size=(10, 2))

    def loss(p):
        solver = sl.Solver(problem, rtol=1e-12, atol=1e-12)
        solver.set_params(p)
        y = solver.make_output_buffers(tvals)
        solver.solve(0.0, tvals, y0, y)
        return float(np.sum(weights * y))

    fd = []
    for index in (1, 3):  # beta, delta
        step = 1e-4 * params[index]
        up, down = params.copy(), params.copy()
        up[index] += step
        down[index] -= step
        fd.append((loss(up) - loss(down)) / (2 * step))
    adj = sl.AdjointSolver(problem, rtol=1e-11, atol=1e-11)
    adj.set_params(params)
    y_out, grad_out, lambda_out = adj.make_output_buffers(tvals)
    adj.solve_forward(0.0, tvals, y0, y_out)
    adj.solve_backward(tvals[-1], 0.0, tvals, weights, grad_out, lambda_out)
    np.testing.assert_allclose(grad_out, fd, rtol=1e-6)
    sens = sl.Solver(problem, sens_mode="simultaneous", rtol=1e-11, atol=1e-11)
    sens.set_params(params)
    y_out, sens_out = sens.make_output_buffers(tvals)
    sens.solve(0.0, tvals, y0, y_out, sens_out)
    np.testing.assert_allclose(np.einsum("ikj,ij->k", sens_out, weights)[:2], fd, rtol=1e-6)


@pytest.mark.parametrize("residual", [
    lambda t, y, yp, p: {"x": sympy.Abs(y.x + yp.x) - 1},
    lambda t, y, yp, p: {"x": sympy.Max(y.x, yp.x) - 1},
    lambda t, y, yp, p: {"x": sympy.Min(y.x, 2 * yp.x) + sympy.sign(y.x) * yp.x - 1},
])
def test_dae_kinks_in_the_residual_compile(residual):
    """d/dt of dF/dy' (a second derivative) used to need DiracDelta; F(y, y') matches sympy."""
    problem = sl.DAEProblem(params={}, states={"x": ()}, residual_sympy=residual)
    model = compile_dae_model(problem)
    y, yp = sympy.symbols("y yp", real=True)
    symbolic = residual(None, type("Y", (), {"x": y}), type("Y", (), {"x": yp}), None)["x"]
    for point in ([0.3, 0.9], [0.3, -0.9], [-0.7, 0.2]):
        out = np.empty(1)
        model.res(0.0, np.array(point), np.zeros(1), out)
        assert out[0] == pytest.approx(float(symbolic.subs({y: point[0], yp: point[1]})), rel=1e-15)


# -- options and calls the fuzzing found reaching C unchecked (issue 10) ----------------------
def _decay_problem():
    return sl.SympyProblem(params={"k": ()}, states={"x": ()},
                                    rhs_sympy=lambda t, y, p: {"x": -p.k * y.x})


@pytest.mark.parametrize("make", [
    lambda pr: sl.Solver(pr, sens_mode="simultaneous", sens_errcon="False"),
    lambda pr: sl.Solver(pr, sens_mode="simultaneous", sens_y0="no"),
    lambda pr: sl.AdjointSolver(pr, quad_errcon="no"),
])
def test_boolean_options_reject_strings(make):
    # bool("False") is True: the option would silently be on.
    with pytest.raises(TypeError, match=r"must be True or False; got str"):
        make(_decay_problem())


@pytest.mark.parametrize("options", [{"atol_quad": 0.0}, {"atol_backward": 0.0}])
def test_zero_quadrature_atol_in_the_error_test_is_rejected(options):
    # It used to fail in C as CV_ILL_INPUT: the quadrature starts at 0 (infinite weight).
    with pytest.raises(ValueError, match=r"`atol_quad` must be positive while `quad_errcon=True`"):
        sl.AdjointSolver(_decay_problem(), **options)
    sl.AdjointSolver(_decay_problem(), quad_errcon=False, **options)


def test_gradients_reject_a_y0_or_y_out_other_than_the_forward_solves():
    adj = sl.AdjointSolver(_decay_problem(), rtol=1e-10, atol=1e-10)
    adj.set_params_dict({"k": 0.5})
    tvals = np.array([1.0, 2.0])
    y_out, _, _ = adj.make_output_buffers(tvals)
    adj.solve_forward(0.0, tvals, np.array([2.0]), y_out)
    grads = np.ones_like(y_out)
    g = adj.gradients(0.0, tvals, np.array([2.0]), y_out, grads)
    # L = x(1) + x(2) = 2 (e^-k + e^-2k): dL/dt0 = -dL/dy0 . f(t0, y0) = (e^-k + e^-2k) k 2.
    np.testing.assert_allclose(g.t0, (np.exp(-0.5) + np.exp(-1.0)) * 0.5 * 2.0, rtol=1e-7)
    # A different y0 made the t0 gradient wrong (-2.52 vs -7.37 in the fuzzing) without an error.
    with pytest.raises(ValueError, match=r"`y0` and `y_out` must be those of the preceding solve_forward"):
        adj.gradients(0.0, tvals, np.array([3.0]), y_out, grads)
    with pytest.raises(ValueError, match=r"must be those of the preceding solve_forward"):
        adj.gradients(0.0, tvals, np.array([2.0]), y_out[:1], grads)


def test_solve_ivp_rejects_strings_bools_and_complex_numpy_inputs():
    from sunode_like.wrappers.as_pytensor import solve_ivp
    for bad, error in (("0.5", TypeError), (True, TypeError), (0.5 + 1j, TypeError)):
        with pytest.raises(error, match=r"`params\['k'\]`"):
            solve_ivp(y0={"x": (np.array(1.0), ())}, params={"k": (bad, ())},
                      rhs=lambda t, y, p: {"x": -p.k * y.x}, tvals=np.array([1.0, 2.0]), t0=0.0)


def test_make_output_buffers_and_rhs_name_a_bad_time():
    solver = sl.Solver(_decay_problem())
    solver.set_params_dict({"k": 0.5})
    with pytest.raises(ValueError, match=r"`tvals` must be a 1-d array of output times; got shape \(\)"):
        solver.make_output_buffers(20.0)
    with pytest.raises(TypeError, match=r"`t` must be real"):
        solver.rhs(1j, np.array([1.0]))
    with pytest.raises(ValueError, match=r"`t` must be a scalar"):
        solver.rhs(np.array([1.0, 2.0]), np.array([1.0]))
    np.testing.assert_allclose(solver.rhs(np.float32(1.0), np.array([2.0])), [-1.0])
