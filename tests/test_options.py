"""Options declared once (sunode_like._options): the solvers' keywords, signatures and
docstrings, and `pool_arguments`, the C structs of the PyTensor Ops' pools.

The model is dy/dt = -k y + b, y(t) = b/k + (y0 - b/k) exp(-k t), and its DAE twin with an
algebraic z = c y.
"""
import inspect

import numpy as np
import pytest

import sunode_like as sl
from sunode_like._options import OPTIONS, accepted
from sunode_like._solver_base import pool_arguments
from sunode_like._sundials import ffi, lib

K, B, Y0 = 0.7, 0.3, 2.0
TVALS = np.array([0.5, 1.0, 2.5, 4.0])
SOLVERS = {"ode": (sl.Solver, sl.AdjointSolver), "dae": (sl.DAESolver, sl.DAEAdjointSolver)}


def closed_form(t, k=K, b=B, y0=Y0):
    return b / k + (y0 - b / k) * np.exp(-k * np.asarray(t))


def decay():
    return sl.SympyProblem(params={"k": (), "b": ()}, states={"y": ()},
                           rhs_sympy=lambda t, y, p: {"y": -p.k * y.y + p.b})


def decay_dae():
    return sl.DAEProblem(params={"k": (), "b": (), "c": ()}, differential_states={"y": ()},
                         algebraic_states={"z": ()},
                         rhs_sympy=lambda t, x, z, p: {"y": -p.k * x.y + p.b},
                         algebraic_sympy=lambda t, x, z, p: {"z": z.z - p.c * x.y})


PROBLEMS = {"ode": decay, "dae": decay_dae}


# -- the solvers' keywords come from the declarations ---------------------------------------
@pytest.mark.parametrize("kind", ["ode", "dae"])
def test_signatures_and_docstrings_list_the_declared_options(kind):
    for cls in SOLVERS[kind]:
        options = accepted(kind, cls._structs)
        parameters = inspect.signature(cls).parameters
        assert list(parameters) == ["problem"] + [option.name for option in options]
        for option in options:
            # The docstrings are written by hand: each accepted option must be in one.
            doc = "".join(c.__doc__ or "" for c in cls.__mro__)
            assert option.name in doc, (cls.__name__, option.name)
    assert "solver" not in inspect.signature(sl.DAESolver).parameters
    assert inspect.signature(sl.AdjointSolver).parameters["rtol_quad"].default is None


def test_unknown_solver_options_are_named_with_the_accepted_ones():
    with pytest.raises(TypeError, match=r"Solver got unknown options \['rtoll'\]; expected some of "
                                        r"\['solver', 'linear_solver', 'rtol'"):
        sl.Solver(decay(), rtoll=1e-8)
    with pytest.raises(TypeError, match=r"unknown options \['checkpoint_steps'\]"):
        sl.Solver(decay(), checkpoint_steps=10)  # an adjoint option
    with pytest.raises(TypeError, match=r"DAESolver got unknown options \['solver'\]"):
        sl.DAESolver(decay_dae(), solver="ADAMS")  # IDAS is BDF only
    with pytest.raises(TypeError, match=r"`problem` must be a DAEProblem for DAESolver; got SympyProblem"):
        sl.DAESolver(decay())


def test_dae_solvers_take_sunodes_names():
    solver = sl.DAEAdjointSolver(decay_dae(), reltol=1e-9, abstol=1e-10, checkpoint_n=17)
    assert solver._checked.values["rtol"] == 1e-9
    assert solver._checked.adjoint.checkpoint_steps == 17
    np.testing.assert_array_equal(solver._checked.values["atol"], [1e-10, 1e-10])


# -- pool_arguments ------------------------------------------------------------------------
def _fields(struct, ctype):
    """The struct's number fields (tstop's NaN as a string, so that it compares equal)."""
    return {name: str(getattr(struct, name)) for name, _ in ffi.typeof(ctype).fields
            if name not in ("atol", "constraints", "backward")}


@pytest.mark.parametrize("kind", ["ode", "dae"])
@pytest.mark.parametrize("mode", ["adjoint", "sens"])
def test_pool_arguments_equal_the_solvers_structs(kind, mode):
    """The same options give the same C structs as the Python solver, but for the Ops'
    max_steps default (50,000) and their sensitivities of y0."""
    problem = PROBLEMS[kind]()
    options = {"rtol": 1e-9, "atol": [1e-10, 1e-11][:problem.n_states], "rtol_backward": 1e-7,
               "interpolation": "polynomial"} if mode == "adjoint" else {"rtol": 1e-9, "sens_errcon": False}
    args = pool_arguments(problem, mode, options)
    solver_options = dict(options, max_steps=50_000)
    if mode == "sens":
        solver_options["sens_mode"] = "simultaneous"
    solver = SOLVERS[kind][mode == "adjoint"](problem, **solver_options)
    assert args.values.keys() == solver._checked.values.keys()
    for name, value in solver._checked.values.items():
        assert np.array_equal(args.values[name], value), name
    assert _fields(args.options, "sl_options") == _fields(solver._checked.options, "sl_options")
    assert args.options.max_steps == 50_000 and args.options.rtol == 1e-9
    assert args.n_params == problem.n_params
    assert [args.dparam_index[i] for i in range(problem.n_dparams)] == list(problem.derivative_indices)
    if mode == "adjoint":
        assert args.sens == ffi.NULL
        assert _fields(args.adjoint, "sl_adjoint_options") == _fields(solver._checked.adjoint,
                                                                     "sl_adjoint_options")
        backward = args.adjoint.backward
        assert (backward.rtol, backward.max_steps, args.adjoint.rtol_quad) == (1e-7, 50_000, 1e-7)
        assert backward.atol[0] == 1e-10  # the largest forward atol
        assert args.adjoint.interpolation == lib.SL_POLYNOMIAL
    else:
        assert args.adjoint == ffi.NULL
        assert (args.sens.mode, args.sens.errcon) == (lib.SL_SENS_SIMULTANEOUS, 0)
        assert args.n_sens == args.sens.n_sens == problem.n_dparams + problem.n_differential
    # The same model: the same kernels and patterns (arrays of their own for the DAE's ids).
    for name, _ in ffi.typeof(args.problem).item.fields:
        ours, theirs = getattr(args.problem, name), getattr(solver._problem_struct, name)
        if name in ("id", "equation_id"):
            assert [ours[i] for i in range(problem.n_states)] == [theirs[i] for i in range(problem.n_states)]
        elif name != "params":
            assert str(ours) == str(theirs), name


@pytest.mark.parametrize("methods", [{}, {"solver": "ERK"}], ids=["BDF", "ERK"])
def test_pool_arguments_solve_and_differentiate_in_the_c_pool(methods):
    """A pool created from them gives the closed form's values and gradient (with
    solver="ERK" on ARKODE forward and backward: solver_backward follows solver)."""
    problem = decay()
    args = pool_arguments(problem, "adjoint", {"rtol": 1e-11, "atol": 1e-11, **methods})
    out = ffi.new("sl_pool **")
    assert lib.sl_pool_create(*args[:6], out) == 0
    try:
        pool, params, y0 = out[0], np.array([K, B]), np.array([Y0])
        y = np.zeros((len(TVALS), 1))
        status = ffi.new("sl_status *")
        ptr = lambda a: ffi.from_buffer("double[]", a)  # noqa: E731
        assert lib.sl_pool_solve(pool, 0.0, ptr(y0), ptr(params), len(TVALS), ptr(TVALS), ptr(y),
                                 ffi.NULL, ffi.NULL, ffi.NULL, status) == 0
        np.testing.assert_allclose(y[:, 0], closed_form(TVALS), rtol=1e-9)
        grads, dy0, dparams, dt0, dtvals = (np.ones_like(y), np.zeros(1), np.zeros(2), np.zeros(1),
                                            np.zeros(len(TVALS)))
        assert lib.sl_pool_gradient(pool, 0.0, ptr(y0), ptr(params), len(TVALS), ptr(TVALS),
                                    ptr(grads), ptr(dy0), ptr(dparams), ptr(dt0), ptr(dtvals),
                                    status) == 0
    finally:
        lib.sl_pool_free(out[0])
    h = 1e-6
    fd = [(closed_form(TVALS, **{n: v + h}).sum() - closed_form(TVALS, **{n: v - h}).sum()) / (2 * h)
          for n, v in (("k", K), ("b", B), ("y0", Y0))]
    np.testing.assert_allclose(np.append(dparams, dy0), fd, rtol=1e-6)


def test_pool_arguments_defaults_and_errors():
    problem = decay()
    assert pool_arguments(problem, "sens", {}).values["sens_mode"] == "simultaneous"
    # CVODES keeps constraints only with staggered sensitivities.
    assert pool_arguments(problem, "sens", {"constraints": 1}).values["sens_mode"] == "staggered"
    assert pool_arguments(problem, "adjoint", {"reltol": 1e-5}).options.rtol == 1e-5  # sunode's name
    with pytest.raises(ValueError, match=r"`solver_kwargs` \(mode 'sens'\) got unknown options "
                                         r"\['sens_y0'\]; expected some of \[.*'sens_errcon'\]"):
        pool_arguments(problem, "sens", {"sens_y0": False})
    with pytest.raises(ValueError, match=r"unknown options \['quad_errcon'\]"):
        pool_arguments(problem, "sens", {"quad_errcon": True})
    with pytest.raises(ValueError, match=r"unknown options \['solver_backward'\]"):
        pool_arguments(decay_dae(), "adjoint", {"solver_backward": "BDF"})
    with pytest.raises(ValueError, match=r"sens_mode=None.*cannot give forward derivatives"):
        pool_arguments(problem, "sens", {"sens_mode": None})
    with pytest.raises(ValueError, match=r"`mode='forward'` is not supported"):
        pool_arguments(problem, "forward", {})
    with pytest.raises(ValueError, match=r"`rtol_backward=2.0` must be below 1"):
        pool_arguments(problem, "adjoint", {"rtol_backward": 2.0})
    with pytest.raises(TypeError, match=r"`max_steps='5'` must be a positive integer"):
        pool_arguments(problem, "adjoint", {"max_steps": "5"})
    # The explicit method on ARKODE: its own checks, as the solvers'.
    assert pool_arguments(problem, "adjoint", {"solver": "ERK"}).adjoint.backward.method == lib.SL_ERK
    with pytest.raises(ValueError, match=r"`solver_backward='BDF'` needs CVODES' checkpoints"):
        pool_arguments(problem, "adjoint", {"solver": "ERK", "solver_backward": "BDF"})
    with pytest.raises(ValueError, match=r"`sens_mode='staggered'` is CVODES' corrector"):
        pool_arguments(problem, "sens", {"solver": "ERK", "sens_mode": "staggered"})


def test_every_option_is_declared_once():
    names = [option.name for option in OPTIONS]
    assert len(names) == len(set(names))
    for option in OPTIONS:
        assert option.struct in ("options", "sens", "adjoint")
        fields = (option.field,) if isinstance(option.field, str) else option.field
        for field in fields:  # each names a field of its C struct
            struct, *path = field.split(".")
            ctype = {"options": "sl_options", "sens": "sl_sens_options", "adjoint": "sl_adjoint_options"}[struct]
            for name in path:
                ctype = dict(ffi.typeof(ctype).fields)[name].type
                ctype = ctype.cname if ctype.kind == "struct" else ctype


# -- one rule for the quadrature tolerances (issue 11's drift bug) -------------------------
def test_quadrature_tolerances_follow_the_backward_ones_for_odes_and_daes():
    """Both adjoints default rtol_quad to rtol_backward and atol_quad to the smallest
    atol_backward (the DAE adjoint used the forward rtol and atol). The gradients then agree
    with the closed form to the forward solve's accuracy."""
    options = dict(rtol=1e-6, atol=1e-8, rtol_backward=1e-10, atol_backward=1e-12)
    c, tvals = 1.5, np.linspace(0.5, 10.0, 20)
    ode, dae = sl.AdjointSolver(decay(), **options), sl.DAEAdjointSolver(decay_dae(), **options)
    for solver in (ode, dae):
        assert (solver._checked.adjoint.rtol_quad, solver._checked.adjoint.atol_quad) == (1e-10, 1e-12)
    # L = sum_i y(t_i) + z(t_i) = (1 + c) sum_i y(t_i).
    h = 1e-6

    def loss(k=K, b=B, y0=Y0, c=c):
        return (1 + c) * closed_form(tvals, k, b, y0).sum()

    fd = [(loss(**{n: v + h}) - loss(**{n: v - h})) / (2 * h)
          for n, v in (("k", K), ("b", B), ("c", c), ("y0", Y0))]
    dae.set_params(np.array([K, B, c]))
    y_out, _, _ = dae.make_output_buffers(tvals)
    dae.solve_forward(0.0, tvals, [Y0], y_out)
    g_dae = dae.gradients(0.0, tvals, None, y_out, np.ones_like(y_out))
    np.testing.assert_allclose(np.append(g_dae.params, g_dae.y0[0]), fd, rtol=5e-6)
    ode.set_params(np.array([K, B]))
    y_ode, _, _ = ode.make_output_buffers(tvals)
    ode.solve_forward(0.0, tvals, [Y0], y_ode)
    g_ode = ode.gradients(0.0, tvals, [Y0], y_ode, np.full_like(y_ode, 1 + c))
    np.testing.assert_allclose(np.append(g_ode.params, g_ode.y0), np.delete(fd, 2), rtol=5e-6)


def test_options_a_kind_does_not_take_hold_their_default():
    """DAEs are BDF only: their checkpoint check uses BDF's maximum order, 5."""
    with pytest.raises(ValueError, match=r"`checkpoint_steps=4` is too small.*solver='BDF'.*at least 5"):
        sl.DAEAdjointSolver(decay_dae(), interpolation="polynomial", checkpoint_steps=4)
    solver = sl.DAEAdjointSolver(decay_dae(), interpolation="polynomial", checkpoint_steps=5)
    assert solver._checked.values["solver_backward"] == "BDF"
    assert solver._checked.adjoint.backward.method == lib.SL_BDF
    with pytest.raises(ValueError, match=r"at least 12"):
        sl.AdjointSolver(decay(), solver="ADAMS", interpolation="polynomial", checkpoint_steps=11)
    # ERK and DIRK keep no checkpoints: any positive count.
    assert sl.AdjointSolver(decay(), solver_backward="ERK", interpolation="polynomial",
                            checkpoint_steps=1)._checked.adjoint.checkpoint_steps == 1
