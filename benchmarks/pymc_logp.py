"""One logp+dlogp evaluation of the hares/lynx model: sunode_like against pymc.ode.

    python benchmarks/pymc_logp.py [--nuts] [--repeats 7]

Times, in one run and on the same model (priors, log-normal likelihood, the 1900-1920 data,
rtol = atol = 1.49012e-8, odeint's defaults, which `pymc.ode.DifferentialEquation` does not
let one change):
  * sunode_like with PyTensor's default (C/Python) backend, with the numba backend, and
    nutpie's compiled logp (a numba cfunc called through ctypes), each with the adjoint's
    default (BDF) backward problem, with ``solver_backward="ERK"`` (explicit Runge-Kutta) and
    with ``solver="ERK"`` (ERK forward and backward, ARKODE only);
    the default backend also with ADAMS forward and backward;
  * `pymc.ode.DifferentialEquation` (scipy odeint on the forward-sensitivity system);
  * the bare solver calls of one evaluation (a forward solve with checkpoints and the adjoint
    backward, as single C calls), so that ``ours - bare`` is the overhead per call of
    everything else: PyTensor's function call, our Ops' Python code, the likelihood.
With ``--nuts`` also NUTS effective samples per second (PyMC's sampler and nutpie; ERK
backward).
Each time is the minimum over ``--repeats`` batches (the machine may be shared).
"""
import argparse
import ctypes
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from sunode_like.examples.lotka_volterra import HARES, LYNX, YEARS, build_model  # noqa: E402

TOL = 1.49012e-8  # scipy.integrate.odeint's default rtol and atol


def pymc_ode_model():
    """The same model with pymc.ode.DifferentialEquation (times after t0; y(t0) = z0)."""
    import pymc as pm
    import pytensor.tensor as pt
    from pymc.ode import DifferentialEquation

    def rhs(y, t, p):
        return [p[0] * y[0] - p[1] * y[0] * y[1], p[3] * y[0] * y[1] - p[2] * y[1]]

    ode = DifferentialEquation(func=rhs, times=(YEARS[1:] - YEARS[0]).astype(float), n_states=2,
                               n_theta=4, t0=0)
    with pm.Model() as model:
        alpha = pm.LogNormal("alpha", mu=np.log(1.0), sigma=0.5)
        beta = pm.LogNormal("beta", mu=np.log(0.05), sigma=0.5)
        gamma = pm.LogNormal("gamma", mu=np.log(1.0), sigma=0.5)
        delta = pm.LogNormal("delta", mu=np.log(0.05), sigma=0.5)
        z0 = pm.LogNormal("z0", mu=np.log(10.0), sigma=1.0, shape=2)
        sigma = pm.LogNormal("sigma", mu=-1.0, sigma=1.0, shape=2)
        z = pt.concatenate([z0[None, :], ode(y0=z0, theta=pt.stack([alpha, beta, gamma, delta]))])
        pm.LogNormal("observed", mu=pt.log(z), sigma=sigma, observed=np.stack([HARES, LYNX], 1))
    return model


def best_times(fns, repeats, min_batch_seconds=0.2):
    """Seconds per call of each callable: the minimum over ``repeats`` batches, the batches of
    all callables interleaved so that a change of the machine's load hits them alike."""
    sizes = {}
    for name, fn in fns.items():
        n, t = 1, 0.0
        while t < min_batch_seconds / 4:
            start = time.perf_counter()
            for _ in range(n):
                fn()
            t = time.perf_counter() - start
            n *= 2
        sizes[name] = max(1, int(n * min_batch_seconds / max(t, 1e-9) / 2))
    best = dict.fromkeys(fns, np.inf)
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(sizes[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / sizes[name])
    return best


def logp_dlogp(model, x, mode=None):
    """A zero-argument callable evaluating logp and dlogp at the flat point x, as PyMC's
    samplers do (the compiled function, inputs trusted), and its result."""
    kwargs = {} if mode is None else {"mode": mode}
    f = model.logp_dlogp_function(ravel_inputs=True, **kwargs)
    f.set_extra_values({})
    fn = f._pytensor_function
    fn.trust_input = True
    return (lambda: fn(x)), f(x)


def bare_solver(solution, point, tvals, solver_kwargs):
    """One forward (with checkpoints) + one adjoint backward solve as raw C calls, and the
    same through the AdjointSolver Python API."""
    from sunode_like import AdjointSolver
    from sunode_like._sundials import ffi, lib

    adj = AdjointSolver(solution.problem, **solver_kwargs)
    adj.set_params_dict({k: float(point[k]) for k in ("alpha", "beta", "gamma", "delta")})
    y0 = np.asarray(point["z0"], dtype=float)
    y, g, lam = adj.make_output_buffers(tvals)
    grads = np.ones_like(y)
    ptr = lambda a: ffi.cast("double *", a.ctypes.data)  # noqa: E731
    args_f = (adj._ptr, 0.0, ptr(y0), ffi.NULL, len(tvals), ptr(tvals), ptr(y), ffi.NULL)
    args_b = (adj._ptr, 0.0, len(tvals), ptr(tvals), ptr(grads), ptr(g), ptr(lam))
    # The C functions of the solver's backend: sl_cvodes_*, or sl_arkode_* for solver="ERK".
    solve, backward = getattr(lib, adj._c + "_solve"), getattr(lib, adj._c + "_backward")

    keep_alive = (adj, y0, y, g, lam, grads, tvals)  # the raw pointers above do not

    def run():
        solve(*args_f)
        backward(*args_b)
        return keep_alive

    def run_python_api():
        adj.solve_forward(0.0, tvals, y0, y)
        adj.solve_backward(tvals[-1], 0.0, tvals, grads, g, lam)

    return run, run_python_api


def nutpie_logp(model, x):
    """nutpie's compiled logp+dlogp (numba cfunc) called through ctypes, or None."""
    try:
        import nutpie
    except ImportError:
        return None, None, None
    compiled = nutpie.compile_pymc_model(model)
    cfunc = compiled.compiled_logp_func.ctypes
    x = np.ascontiguousarray(x, dtype=np.float64)
    grad, logp = np.zeros_like(x), np.zeros(1)
    user_data = compiled.user_data
    dp = lambda a: a.ctypes.data_as(ctypes.POINTER(ctypes.c_double))  # noqa: E731
    args = (len(x), dp(x), dp(grad), dp(logp), user_data.ctypes.data)

    def run():
        return cfunc(*args)
    run.keep_alive = compiled  # args holds only a raw address into compiled.user_data

    if run() != 0:
        raise RuntimeError("nutpie's compiled logp failed at the test point")
    return run, (logp[0], grad), compiled


def ess_per_second(model, sampler, draws, tune, chains, compiled=None):
    import arviz as az
    import pymc as pm

    start = time.perf_counter()
    if sampler == "nutpie" and compiled is not None:
        import nutpie
        idata = nutpie.sample(compiled, draws=draws, tune=tune, chains=chains, cores=chains,
                              seed=1, progress_bar=False)
    else:
        with model:
            idata = pm.sample(draws=draws, tune=tune, chains=chains, cores=chains, random_seed=1,
                              progressbar=False, compute_convergence_checks=False,
                              nuts_sampler=sampler)
    elapsed = time.perf_counter() - start
    summary = az.summary(idata, var_names=["alpha", "beta", "gamma", "delta"], kind="diagnostics")
    return float(summary["ess_bulk"].min()) / elapsed, elapsed, float(summary["r_hat"].max())


def op_performs(solution, point, tvals):
    """Our two Ops' ``perform`` (forward, then gradient) called directly, and the same two
    C pool calls without Python around them: the Ops' own share of the overhead."""
    from sunode_like._sundials import ffi, lib
    from sunode_like.wrappers.as_pytensor import SolveODEGrad

    op = solution.op
    grad_op = SolveODEGrad(op.problem, op.solver_kwargs)
    y0 = np.asarray(point["z0"], dtype=float)
    params = np.array([point[k] for k in ("alpha", "beta", "gamma", "delta")])
    t0, grads = np.array(0.0), np.ones((len(tvals), 2))
    node = op.make_node(y0, params, tvals, t0)
    storage, grad_storage = [[None]], [[None] for _ in range(4)]
    op.perform(node, [y0, params, tvals, t0], storage)
    # The gradient Op also takes the value y (so that the forward solve runs first).
    grad_node = grad_op.make_node(y0, params, tvals, t0, grads, storage[0][0])

    def performs():
        op.perform(node, [y0, params, tvals, t0], storage)
        grad_op.perform(grad_node, [y0, params, tvals, t0, grads, storage[0][0]], grad_storage)

    y, outs = np.empty((len(tvals), 2)), [np.empty(2), np.empty(4), np.empty(()), np.empty(len(tvals))]
    p = lambda a: ffi.cast("double *", a.ctypes.data)  # noqa: E731
    pool = op.ensure_pool().ptr
    forward = (pool, 0.0, p(y0), p(params), len(tvals), p(tvals), p(y), ffi.NULL, ffi.NULL,
               ffi.NULL, ffi.NULL)
    backward = (pool, 0.0, p(y0), p(params), len(tvals), p(tvals), p(grads), *map(p, outs), ffi.NULL)

    keep_alive = (y, outs, y0, params, tvals, grads)  # the raw pointers above do not

    def bare_pool():
        lib.sl_pool_solve(*forward)
        lib.sl_pool_gradient(*backward)
        return keep_alive

    return performs, bare_pool


POINT = {"alpha": 0.55, "beta": 0.028, "gamma": 0.8, "delta": 0.024,
         "z0": np.array([33.0, 6.0]), "sigma": np.array([0.25, 0.25])}


def flat_point(model):
    values = {f"{k}_log__": np.log(v) for k, v in POINT.items()}
    return np.concatenate([np.ravel(values[k]) for k in model.initial_point()])


def ours(solver_kwargs, n_years=len(YEARS), with_nutpie=True):
    """Timed callables of our model (default backend, numba backend, nutpie, bare solver)."""
    model, solution = build_model(HARES[:n_years], LYNX[:n_years], YEARS[:n_years],
                                  solver_kwargs=solver_kwargs)
    x = flat_point(model)
    fns, values = {}, {}
    fns["default backend"], values["default backend"] = logp_dlogp(model, x)
    fns["numba backend"], values["numba backend"] = logp_dlogp(model, x, mode="NUMBA")
    compiled = None
    if with_nutpie:
        fns["nutpie compiled logp"], values["nutpie compiled logp"], compiled = nutpie_logp(model, x)
    tvals = (YEARS[:n_years] - YEARS[0]).astype(float)
    fns["bare C solver calls"], fns["bare AdjointSolver API"] = bare_solver(
        solution, POINT, tvals, dict({"rtol": TOL, "atol": TOL}, **solver_kwargs))
    fns["Ops' perform alone"], fns["bare C pool calls"] = op_performs(solution, POINT, tvals)
    return model, fns, values, compiled


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--nuts", action="store_true", help="also measure NUTS ESS/s")
    parser.add_argument("--draws", type=int, default=1000)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    # The backward method is always given: the example model may choose its own default.
    tol = {"rtol": TOL, "atol": TOL}
    variants = {"BDF": dict(tol, solver_backward="BDF"),
                "BDF+ERK bwd": dict(tol, solver_backward="ERK"),
                "ERK+ERK bwd": dict(tol, solver="ERK", solver_backward="ERK"),
                "ADAMS": dict(tol, solver="ADAMS", solver_backward="ADAMS")}
    runs = {name: ours(kwargs, with_nutpie=name != "ADAMS") for name, kwargs in variants.items()}
    model, compiled = runs["BDF+ERK bwd"][0], runs["BDF+ERK bwd"][3]  # for --nuts
    peer = pymc_ode_model()
    peer_fn, peer_value = logp_dlogp(peer, flat_point(peer))

    print(f"logp at the test point: pymc.ode {float(peer_value[0]):.6f}; |dlogp| up to "
          f"{np.max(np.abs(peer_value[1])):.1f}")
    for name, (_, _, values, _) in runs.items():
        print(f"  sunode_like {name:12s} logp " + ", ".join(f"{float(v[0]):.6f}" for v in values.values())
              + f" ({', '.join(values)}); max |dlogp - pymc.ode| "
              + ", ".join(f"{np.max(np.abs(v[1] - peer_value[1])):.2e}" for v in values.values()))

    everything = {f"sunode_like {name}, {k}": f for name, run in runs.items() for k, f in run[1].items()}
    everything["pymc.ode.DifferentialEquation"] = peer_fn
    times = best_times(everything, args.repeats)
    peer_time = times["pymc.ode.DifferentialEquation"]
    print(f"\none logp+dlogp evaluation, rtol = atol = {TOL} (min over {args.repeats} interleaved batches):")
    for name, t in times.items():
        print(f"  {name:46s} {t * 1e6:10.1f} us   pymc.ode / this = {peer_time / t:6.1f}x")

    # The overhead, measured where the solve costs nothing: the same model and data with the
    # single output time t0 (the solver returns y0 and the adjoint is a copy), so what remains
    # is PyTensor's call, our Ops' code, the likelihood and its gradient.
    small = {(name, k): f for name in ("BDF", "BDF+ERK bwd", "ERK+ERK bwd")
             for k, f in ours(variants[name], n_years=1)[1].items()}
    small_times = best_times(small, args.repeats)
    print("\noverhead per logp+dlogp call over the bare solver calls (model with tvals = [t0]):")
    for (name, k), t in small_times.items():
        bare = small_times[name, "bare C solver calls"]
        print(f"  {f'sunode_like {name}, {k}':46s} {t * 1e6:8.2f} us   overhead {(t - bare) * 1e6:8.2f} us")

    if args.nuts:
        print("\nNUTS (2 chains on 2 cores, min bulk ESS of alpha..delta per second of sampling):")
        for sampler in ("pymc", "nutpie"):
            rate, elapsed, rhat = ess_per_second(model, sampler, args.draws, args.draws, 2, compiled)
            print(f"  sunode_like (ERK backward) + {sampler:7s} {rate:8.1f} ESS/s  ({elapsed:.1f} s, max r-hat {rhat:.3f})")


if __name__ == "__main__":
    main()
