"""SympyProblem and Layout: flat order, structured views, derivative params, bad specs,
symbol assumptions."""
import numpy as np
import pytest
import sympy

import sunode_like as sl
from sunode_like._codegen import compile_model

STATES = {"b": (2, 3), "a": (), "n": {"z": (2,), "y": ()}}
PARAMS = {"a": (), "b": (2,), "c": {"d": (), "e": (3,)}}


def _rhs(t, y, p):
    # Each entry distinct, so positions in the flat vector can be read off the values.
    return {"b": sympy.Matrix(2, 3, lambda i, j: 10 * i + j + 0 * y.a), "a": y.a * p.a,
            "n": {"z": [100 + y.n.z[0], 200 + y.n.z[1]], "y": -y.n.y}}


def _problem(**kwargs):
    return sl.SympyProblem(params=PARAMS, states=STATES, rhs_sympy=_rhs, **kwargs)


def test_flat_order_is_depth_first_dict_order_c_order():
    problem = _problem()
    leaves = problem.states.leaves
    assert [leaf.name for leaf in leaves] == ["b", "a", "n.z", "n.y"]
    assert [leaf.slice for leaf in leaves] == [slice(0, 6), slice(6, 7), slice(7, 9), slice(9, 10)]
    assert problem.n_states == 10 and problem.n_params == 7
    b = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    flat = problem.states.flatten({"b": b, "a": 7.0, "n": {"z": [8.0, 9.0], "y": 10.0}})
    np.testing.assert_array_equal(flat, np.arange(1.0, 11.0))  # b[i, j] at 3 i + j
    # The symbols and the compiled right-hand side use the same order.
    names = [str(s) for s in problem.state_symbols]
    assert names[:3] == ["y_b_0_0", "y_b_0_1", "y_b_0_2"] and names[6:] == ["y_a", "y_n_z_0",
                                                                             "y_n_z_1", "y_n_y"]
    solver = sl.Solver(problem)
    solver.set_params(np.array([2.0, 0, 0, 0, 0, 0, 0]))
    np.testing.assert_array_equal(solver.rhs(0.0, flat),
                                  [0, 1, 2, 10, 11, 12, 14.0, 108.0, 209.0, -10.0])


def test_structured_views_share_memory_with_flat():
    problem = _problem()
    assert problem.state_dtype.itemsize == 8 * problem.n_states
    y = np.zeros((4, problem.n_states))
    view = problem.states.as_structured(y)
    assert view.shape == (4,) and np.shares_memory(view, y)
    view["n"]["z"][2] = [5.0, 6.0]
    view["b"][1, 1, 2] = 3.0
    assert y[2, 7] == 5.0 and y[2, 8] == 6.0 and y[1, 5] == 3.0
    nested = problem.states.unflatten(y)
    assert nested["b"].shape == (4, 2, 3) and nested["n"]["y"].shape == (4,)
    assert np.shares_memory(nested["b"], y)
    nested["n"]["y"][3] = -1.0
    assert y[3, 9] == -1.0
    # Structured and flat inputs give the same flat vector.
    one = np.zeros((), dtype=problem.state_dtype)
    one["a"] = 4.0
    one["n"]["z"] = [1.0, 2.0]
    np.testing.assert_array_equal(problem.states.flatten(one), [0] * 6 + [4.0, 1.0, 2.0, 0])
    with pytest.raises(ValueError, match="dtype"):
        problem.states.flatten(np.zeros((), dtype=problem.params_dtype))


def test_derivative_params_order_and_dotted_paths():
    default = _problem()
    assert default.derivative_params == [("a",), ("b",), ("c", "d"), ("c", "e")]
    np.testing.assert_array_equal(default.derivative_indices, np.arange(7))

    # Listed out of order, they still come in declaration order (sunode's, and DESIGN.md's).
    problem = _problem(derivative_params=["c.e", ("a",)])
    assert problem.derivative_params == [("a",), ("c", "e")]
    np.testing.assert_array_equal(problem.derivative_indices, [0, 4, 5, 6])
    assert problem.n_dparams == 4
    subtree = _problem(derivative_params=["c"])
    np.testing.assert_array_equal(subtree.derivative_indices, [3, 4, 5, 6])
    assert problem.content_hash != default.content_hash
    assert _problem(derivative_params=[["a"], "c.e"]).content_hash == problem.content_hash

    # df/d(derivative params) follows that order: only state "a" (flat index 6) depends on
    # a param, with df/dp_a = y_a, which sits in column 0 of ["a", "c.e"].
    model = compile_model(problem)
    values = np.zeros(model.DFDP_COLPTR[-1])
    y = np.arange(10.0)
    model.dfdp(0.0, y, np.ones(7), values)
    dense = np.zeros((10, 4))
    for j in range(4):
        for k in range(model.DFDP_COLPTR[j], model.DFDP_COLPTR[j + 1]):
            dense[model.DFDP_ROWS[k], j] = values[k]
    expected = np.zeros((10, 4))
    expected[6, 0] = y[6]
    np.testing.assert_array_equal(dense, expected)


@pytest.mark.parametrize("derivative_params, error, match", [
    (["nope"], ValueError, r"no entry 'nope'"),
    (["c.f"], ValueError, r"no entry 'c.f'"),
    (["a", "a"], ValueError, r"twice"),
    (["c", "c.d"], ValueError, r"twice"),
])
def test_bad_derivative_params(derivative_params, error, match):
    with pytest.raises(error, match=match):
        _problem(derivative_params=derivative_params)


def _decay(t, y, p):
    return {"x": -y.x}


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(states={"x": ("species",)}, coords={"site": [1, 2]}), ValueError,
     r"states\['x'\].*dim 'species'.*coords"),
    (dict(states={"x": (2, -1)}), ValueError, r"states\['x'\].*invalid size -1 on axis 1"),
    (dict(states={"x": 2.5}), TypeError, r"states\['x'\].*shape"),
    (dict(states={"x": ()}, params={"k": ("nope",)}), ValueError, r"params\['k'\].*dim 'nope'"),
    (dict(states={}), ValueError, r"states.*at least one"),
    (dict(states=[("x", ())]), TypeError, r"states.*dict"),
    (dict(states={"1x": ()}), ValueError, r"identifiers.*'1x'"),
    (dict(states={"x": True}), ValueError, r"states\['x'\].*invalid size True"),
    (dict(states={"x": (2, np.True_)}), ValueError, r"states\['x'\].*invalid size np.True_ on axis 1"),
    (dict(states={"x": (2**20, 2**20)}), ValueError, r"`states` is too large"),
    (dict(states={"x": ("site",)}, coords={"site": 3}), ValueError, r"`coords\['site'\]` must be a 1-d"),
    (dict(states={"x": ()}, coords=["site"]), TypeError, r"`coords` must be a dict"),
    (dict(states={"x": ()}, rhs_sympy=None), TypeError, r"`rhs_sympy` must be a function.*got NoneType"),
])
def test_bad_specs(kwargs, error, match):
    kwargs = {"params": {}, "rhs_sympy": _decay} | kwargs
    with pytest.raises(error, match=match):
        sl.SympyProblem(**kwargs)


@pytest.mark.parametrize("rhs, error, match", [
    (lambda t, y, p: {"x": [-y.x[0]], "v": y.v}, ValueError,
     r"rhs_sympy.*shape \(1,\).*'x'.*\(2,\)"),
    (lambda t, y, p: {"x": y.v, "v": y.v}, ValueError, r"rhs_sympy.*shape \(\).*'x'"),
    (lambda t, y, p: {"x": [-y.x[0], y.x[1]]}, ValueError, r"missing entries \['v'\]"),
    (lambda t, y, p: {"x": [-y.x[0], y.x[1]], "v": 0, "w": 1}, ValueError,
     r"unknown entries \['w'\]"),
    (lambda t, y, p: {"x": [-y.x[0], y.x[1]], "v": sympy.Symbol("q") * y.v}, ValueError,
     r"'v'.*unknown symbols \['q'\]"),
    # A symbol with the same name but other assumptions is a different symbol.
    (lambda t, y, p: {"x": [-y.x[0], y.x[1]], "v": sympy.Symbol("p_k")}, ValueError,
     r"unknown symbols \['p_k'\]"),
    (lambda t, y, p: [-y.x[0], y.x[1], y.v], TypeError, r"rhs_sympy.*dict"),
])
def test_bad_rhs(rhs, error, match):
    with pytest.raises(error, match=match):
        sl.SympyProblem(params={"k": ()}, states={"x": (2,), "v": ()}, rhs_sympy=rhs)


def test_rhs_may_return_a_column_matrix_for_a_vector_state():
    problem = sl.SympyProblem(
        params={}, states={"x": (2,)},
        rhs_sympy=lambda t, y, p: {"x": sympy.Matrix([[0, 1], [-1, 0]]) * sympy.Matrix(y.x)})
    assert problem.rhs_exprs == [problem.state_symbols[1], -problem.state_symbols[0]]


def test_symbols_are_real_and_not_positive():
    seen = {}

    def rhs(t, y, p):
        seen.update(t=t, y=y.x, p=p.k[1])
        return {"x": -p.k[0] * y.x + sympy.sqrt(y.x**2) + sympy.sqrt(p.k[1] ** 2) + sympy.sqrt(t**2)}

    problem = sl.SympyProblem(params={"k": (2,)}, states={"x": ()}, rhs_sympy=rhs)
    for symbol in seen.values():
        assert symbol.is_real is True
        assert symbol.is_positive is None and symbol.is_nonnegative is None
    assert sympy.sqrt(seen["y"] ** 2) == sympy.Abs(seen["y"])
    assert problem.rhs_exprs[0].has(sympy.Abs(seen["y"]), sympy.Abs(seen["p"]), sympy.Abs(seen["t"]))
    # ... and the compiled rhs keeps the absolute value: at x = -2, f = -k0 x + |x| + |k1| + |t|.
    solver = sl.Solver(problem)
    solver.set_params_dict({"k": [1.0, -3.0]})
    assert solver.rhs(-0.5, np.array([-2.0]))[0] == pytest.approx(2.0 + 2.0 + 3.0 + 0.5)


def test_content_hash_identifies_the_model():
    def make(rate):
        return sl.SympyProblem(params={"k": ()}, states={"x": ()},
                               rhs_sympy=lambda t, y, p: {"x": -rate * p.k * y.x})
    assert make(2).content_hash == make(2).content_hash
    assert make(2).content_hash != make(3).content_hash


def test_dae_solution_to_xarray_uses_the_states_layout():
    problem = sl.DAEProblem(params={}, differential_states={"x": ("site",)}, algebraic_states={"z": ()},
                            rhs_sympy=lambda t, x, z, p: {"x": -x.x}, algebraic_sympy=lambda t, x, z, p: {"z": z.z},
                            coords={"site": ["a", "b"]})
    y = np.arange(9.0).reshape(3, 3)
    ds = problem.solution_to_xarray([0.0, 1.0, 2.0], y)
    np.testing.assert_array_equal(ds["x"].sel(site="b").values, [1.0, 4.0, 7.0])
    np.testing.assert_array_equal(ds["z"].values, [2.0, 5.0, 8.0])


@pytest.mark.parametrize("spec, names", [
    (dict(params={"k": (2,), "k_0": ()}), r"`params` entries 'k\[0\]' and 'k_0' both become .*p_k_0"),
    (dict(params={"a_b": (), "a": {"b": ()}}), r"`params` entries 'a_b' and 'a.b' both become .*p_a_b"),
    (dict(params={"k": ()}, states={"x": (), "c": (1, 1), "c_0": (1,)}),
     r"`states` entries 'c\[0, 0\]' and 'c_0\[0\]'"),
])
def test_entries_with_the_same_symbol_name_are_rejected(spec, names):
    """k[0] and k_0 used to become one sympy symbol: x' = -k[0] x + k_0 at k = (2, 0),
    k_0 = 3, x = 1 gave 0 (both read k_0) instead of 1."""
    spec = {"params": {"k": (2,), "k_0": ()}, "states": {"x": ()}} | spec

    def rhs(t, y, p):
        return {name: 0 * y.x for name in spec["states"]} | {"x": -y.x}

    with pytest.raises(ValueError, match=names + r".*Rename one of them"):
        sl.SympyProblem(rhs_sympy=rhs, **spec)
    with pytest.raises(ValueError, match=r"`differential_states` entries 'x\[0\]' and 'x_0'"):
        sl.DAEProblem(params={}, differential_states={"x": (1,), "x_0": ()}, algebraic_states={"z": ()},
                      rhs_sympy=lambda t, x, z, p: {"x": [-x.x[0]], "x_0": x.x_0},
                      algebraic_sympy=lambda t, x, z, p: {"z": z.z - x.x_0})


def test_distinct_entries_keep_their_own_values():
    problem = sl.SympyProblem(params={"k": (2,), "k0": ()}, states={"x": ()},
                              rhs_sympy=lambda t, y, p: {"x": -p.k[0] * y.x + p.k0})
    solver = sl.Solver(problem)
    solver.set_params_dict({"k": [2.0, 0.0], "k0": 3.0})
    assert solver.rhs(0.0, np.array([1.0]))[0] == 1.0


@pytest.mark.parametrize("rhs, error, match", [
    (lambda t, y, p: {"x": y.z}, AttributeError, r"`states` has no entry 'z'; entries here are \['x'\]"),
    (lambda t, y, p: {"x": y["z"]}, KeyError, r"`states` has no entry 'z'"),
    (lambda t, y, p: {"x": p.n.q}, AttributeError, r"`params` has no entry 'n.q'; entries here are \['a'\]"),
])
def test_missing_entry_in_the_model_names_the_spec(rhs, error, match):
    with pytest.raises(error, match=match):
        sl.SympyProblem(params={"n": {"a": ()}}, states={"x": ()}, rhs_sympy=rhs)


def test_structured_value_must_be_one_record():
    problem = _problem()
    flat = np.arange(10.0)
    one = problem.states.as_structured(flat)
    np.testing.assert_array_equal(problem.states.flatten(one), flat)
    np.testing.assert_array_equal(problem.states.flatten(one.reshape(1)), flat)
    # A record taken out of a structured array is a numpy.void scalar, not an array.
    records = problem.states.as_structured(np.stack([flat, 2 * flat]))
    assert isinstance(records[1], np.void)
    np.testing.assert_array_equal(problem.states.flatten(records[1]), 2 * flat)
    with pytest.raises(ValueError, match=r"`states` has dtype .*; expected"):
        problem.states.flatten(np.zeros(1, dtype=problem.params_dtype)[0])
    with pytest.raises(ValueError, match=r"`states` is a structured array of shape \(2,\); expected one record"):
        problem.states.flatten(problem.states.as_structured(np.zeros((2, 10))))


@pytest.mark.parametrize("tvals, y_out", [
    (np.arange(3.0), np.zeros((3, 3))),            # a column too many: used to drop it silently
    (np.arange(3.0), np.zeros((2, 2))),
    (np.arange(3.0), np.zeros((3, 2, 1))),         # e.g. sens_out instead of y_out
    (np.zeros((3, 1)), np.zeros((3, 2))),
])
def test_solution_to_xarray_checks_shapes(tvals, y_out):
    problem = sl.SympyProblem(params={}, states={"x": (), "v": ()}, rhs_sympy=lambda t, y, p: {"x": y.v, "v": -y.x})
    with pytest.raises(ValueError, match=r"`y_out` has shape .*; expected \(len\(tvals\), n_states\) = \(3, 2\)"):
        problem.solution_to_xarray(tvals, y_out)
