"""Small test problems, each with params, y0, output times and a reference solution.

Every factory returns a `Case`: ``reference`` has shape (len(tvals), n_states) in the
problem's flat layout. Closed forms where they exist; otherwise published reference values
(Robertson, HIRES) or a tight scipy solve (Lotka-Volterra).
"""
import gc
from dataclasses import dataclass

import numpy as np
import scipy.integrate
import scipy.linalg
import sympy

import sunode_like as sl
from sunode_like.examples import test_set


@dataclass
class Case:
    problem: sl.SympyProblem
    params: dict
    y0: np.ndarray  # flat, float64
    t0: float
    tvals: np.ndarray
    reference: np.ndarray  # (len(tvals), n_states)


def normalised_error(y, reference, rtol, atol):
    """max |y - ref| / (atol + rtol |ref|): below a few means 'within the tolerance'."""
    return float(np.max(np.abs(y - reference) / (atol + rtol * np.abs(reference))))


def relative_error(y, reference):
    return float(np.max(np.abs(y - reference) / np.abs(reference)))


def exponential_decay():
    """x' = -k x, x(t) = x0 exp(-k t)."""
    problem = sl.SympyProblem(params={"k": ()}, states={"x": ()},
                              rhs_sympy=lambda t, y, p: {"x": -p.k * y.x})
    k, x0 = 0.7, 2.5
    tvals = np.linspace(0.0, 10.0, 21)
    return Case(problem, {"k": k}, np.array([x0]), 0.0, tvals, (x0 * np.exp(-k * tvals))[:, None])


def harmonic_oscillator():
    """x' = v, v' = -w^2 x; x = x0 cos(wt) + v0/w sin(wt)."""
    problem = sl.SympyProblem(
        params={"omega": ()}, states={"x": (), "v": ()},
        rhs_sympy=lambda t, y, p: {"x": y.v, "v": -p.omega**2 * y.x})
    w, x0, v0 = 1.3, 1.0, -0.5
    tvals = np.linspace(0.0, 10.0, 41)
    x = x0 * np.cos(w * tvals) + v0 / w * np.sin(w * tvals)
    v = -x0 * w * np.sin(w * tvals) + v0 * np.cos(w * tvals)
    return Case(problem, {"omega": w}, np.array([x0, v0]), 0.0, tvals, np.stack([x, v], axis=1))


# Non-symmetric, eigenvalues with negative real parts (two of them complex), so the solution
# both rotates and decays.
LINEAR_A = np.array([
    [-0.5, 1.0, 0.0, 0.2],
    [-1.0, -0.3, 0.4, 0.0],
    [0.1, 0.0, -0.8, 0.5],
    [0.0, 0.3, -0.2, -1.1],
])


def linear_system():
    """y' = A y with a 4x4 non-symmetric A (a param), y(t) = expm(A t) y0."""
    problem = sl.SympyProblem(
        params={"A": (4, 4)}, states={"y": (4,)},
        rhs_sympy=lambda t, y, p: {"y": sympy.Matrix(p.A) * sympy.Matrix(y.y)})
    y0 = np.array([1.0, -2.0, 0.5, 3.0])
    tvals = np.linspace(0.0, 5.0, 11)
    reference = np.array([scipy.linalg.expm(LINEAR_A * t) @ y0 for t in tvals])
    return Case(problem, {"A": LINEAR_A}, y0, 0.0, tvals, reference)


def lotka_volterra_problem():
    return sl.SympyProblem(
        params={"alpha": (), "beta": (), "gamma": (), "delta": ()},
        states={"hares": (), "lynx": ()},
        rhs_sympy=lambda t, y, p: {
            "hares": p.alpha * y.hares - p.beta * y.hares * y.lynx,
            "lynx": p.delta * y.hares * y.lynx - p.gamma * y.lynx})


def lotka_volterra():
    """Predator-prey; reference from scipy's DOP853 at rtol=1e-13."""
    params = dict(alpha=0.52, beta=0.026, gamma=0.84, delta=0.026)
    y0 = np.array([34.0, 5.9])
    tvals = np.linspace(0.0, 20.0, 21)

    def f(t, y):
        h, l = y
        return [params["alpha"] * h - params["beta"] * h * l,
                params["delta"] * h * l - params["gamma"] * l]

    ref = scipy.integrate.solve_ivp(f, (0.0, 20.0), y0, method="DOP853", t_eval=tvals,
                                    rtol=1e-13, atol=1e-13)
    return Case(lotka_volterra_problem(), params, y0, 0.0, tvals, ref.y.T)


def robertson():
    """Robertson's stiff chemical kinetics (test set ROBER), output at t = 40 and 1e11.

    t = 1e11: the test set's reference. t = 40: Hairer & Wanner, Solving ODEs II, quote
    y(40) = (0.7158270687, 9.185534764e-6, 0.2841637457) to 10 digits; the 16 digits below
    are scipy Radau at rtol=1e-13, atol=1e-20 with the analytic Jacobian (scipy 1.17.1),
    which agrees with those 10 digits and with the test set's t = 1e11 values to 1e-12
    relative.
    """
    rober = test_set.rober()
    y40 = [0.7158270687194066, 9.185534764557775e-06, 0.2841637457458316]
    params = dict(zip(("k1", "k2", "k3"), rober.params))
    return Case(rober.problem, params, rober.y0, 0.0, np.array([40.0, rober.t_end]),
                np.array([y40, rober.reference]))


def hires():
    """HIRES (8 states as one (8,) array, 12 rate constants), reference at t = 321.8122.
    The test set's reference was checked here against scipy Radau at rtol=1e-13: agreement
    to 3e-13 relative in every component."""
    h = test_set.hires()
    return Case(h.problem, {"k": h.params}, h.y0, 0.0, np.array([h.t_end]), h.reference[None])


def solve(case, **options):
    """Solve a case with a fresh `Solver`; returns y_out (len(tvals), n_states)."""
    solver = sl.Solver(case.problem, **options)
    solver.set_params_dict(case.params)
    y_out = solver.make_output_buffers(case.tvals)
    solver.solve(case.t0, case.tvals, case.y0, y_out)
    return y_out


RSS_SLACK = 5 * 2**20  # bytes: page-level noise of the process
MALLOC_SLACK = 128 * 2**10  # bytes: catches > 13 B per solve, > 650 B per solver (noise ~5 KB)


def assert_no_memory_growth(memory, run, warmup, repeats):
    """run(warmup), then check that run(repeats) leaves memory() (the conftest fixture: RSS
    and, where glibc tells, malloc's bytes in use) within the slacks; returns its result."""
    run(warmup)
    gc.collect()
    before = memory()
    result = run(repeats)
    gc.collect()
    after = memory()
    assert after[0] - before[0] < RSS_SLACK
    if before[1] is not None:
        assert after[1] - before[1] < MALLOC_SLACK
    return result


def nutpie_logp_and_gradient(model, x):
    """(logp, gradient) of a PyMC model at the unconstrained point x from nutpie's compiled
    logp function (numba, no Python in the call), as nutpie's sampler calls it."""
    import ctypes

    import nutpie

    compiled = nutpie.compile_pymc_model(model)
    x, grad, logp = np.array(x, dtype=np.float64), np.zeros(len(x)), np.zeros(1)
    pointer = lambda a: a.ctypes.data_as(ctypes.POINTER(ctypes.c_double))  # noqa: E731
    status = compiled.compiled_logp_func.ctypes(len(x), pointer(x), pointer(grad), pointer(logp),
                                                compiled.user_data.ctypes.data)
    assert status == 0
    return logp[0], grad


def jvp_graph(y, wrt, tangents):
    """J @ tangents through the Op's own pushforward (pytensor 3.x) or R_op (2.x)."""
    import pytensor

    if hasattr(pytensor.gradient, "pushforward"):
        return pytensor.gradient.pushforward(y, wrt, tangents, use_op_pushforward=True)
    return pytensor.gradient.Rop(y, wrt, tangents, use_op_rop_implementation=True)
