"""One logp+dlogp evaluation of the six-dose oral PK model: one solve with doses against
one solve per dose interval (chained Ops), and the cost of a dose.

    python benchmarks/doses.py [--repeats 7]

The model is `sunode_like.examples.multiple_dose` (100 mg every 12 h, six times; 20
log-normal concentrations; priors on ka, CL, V, sigma; rtol = atol = 1e-8; the explicit
Runge-Kutta backward problem), in three forms:
  * ``events``: one `solve_ivp(..., doses=Doses(...))`, forward solve and adjoint across the
    six doses in one C call each (needs `sunode_like.Doses`; said so when missing); the
    default forward method (ERK here) and (``events BDF``) CVODES' BDF;
  * ``chained``: six `solve_ivp` Ops, interval k starting from interval k - 1's last state
    plus the dose: how a multiple-dose model is written without doses (the peer), with the
    same options and (``chained BDF``) with the default BDF backward problem;
  * ``one dose``: one plain `solve_ivp` from y0 = the first dose, same output times: the
    cost of the five later doses is ``events - one dose``.
Each with PyTensor's default backend, its numba backend and nutpie's compiled logp. The
logp and dlogp of ``events`` and ``chained`` must agree (rtol 1e-6) before anything is
timed. Each time is the minimum over ``--repeats`` interleaved batches (see
`pymc_logp.best_times`); the machine's load average is printed.
"""
import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
import sunode_like  # noqa: E402
from pymc_logp import best_times, logp_dlogp, nutpie_logp  # noqa: E402
from sunode_like.examples import multiple_dose as md  # noqa: E402

POINT = {"ka": 0.9, "CL": 4.5, "V": 32.0, "sigma": 0.2}


def flat_point(model):
    return np.array([np.log(POINT[name.removesuffix("_log__")]) for name in model.initial_point()])


def callables(model):
    """Timed zero-argument callables of one model and the (logp, dlogp) each returns."""
    x = flat_point(model)
    fns, values = {}, {}
    fns["default backend"], values["default backend"] = logp_dlogp(model, x)
    fns["numba backend"], values["numba backend"] = logp_dlogp(model, x, mode="NUMBA")
    run, value, _ = nutpie_logp(model, x)
    if run is not None:
        fns["nutpie compiled logp"], values["nutpie compiled logp"] = run, value
    return fns, values


def check_agreement(values, reference_name):
    """Every variant's logp and dlogp = the reference's (rtol 1e-6), or SystemExit."""
    logp_ref, dlogp_ref = (np.asarray(v, dtype=float) for v in values[reference_name])
    for name, (logp, dlogp) in values.items():
        logp_error = abs(float(logp) - float(logp_ref)) / abs(float(logp_ref))
        dlogp_error = np.max(np.abs(np.asarray(dlogp) - dlogp_ref)) / np.max(np.abs(dlogp_ref))
        print(f"  {name:42s} logp {float(logp):.8f}   dlogp {np.array2string(np.asarray(dlogp), precision=5)}"
              f"   rel. error vs {reference_name}: {logp_error:.1e}, {dlogp_error:.1e}")
        if logp_error > 1e-6 or dlogp_error > 1e-6:
            raise SystemExit(f"{name} disagrees with {reference_name}: not timing it")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    start = time.perf_counter()
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    observed = md.simulate(seed=0)
    models = {"chained": md.build_model(observed, doses="chained"),
              "chained BDF": md.build_model(observed, doses="chained", solver_kwargs={"solver_backward": "BDF"})}
    if hasattr(sunode_like, "Doses"):
        models["events"] = md.build_model(observed, doses="events")
        models["events BDF"] = md.build_model(observed, doses="events", solver_kwargs={"solver": "BDF"})
    else:
        print("the one-solve variant (solve_ivp(..., doses=...)) is missing: sunode_like has no "
              "Doses yet; timing the chained Ops and the one-dose solve only")
    # Chaining one dose is one plain solve from y0 = (dose, 0).
    models["one dose"] = md.build_model(observed, doses="chained", dose_times=md.DOSE_TIMES[:1],
                                        dose_amounts=md.DOSE_AMOUNTS[:1])
    fns, values = {}, {}
    for variant, model in models.items():
        variant_fns, variant_values = callables(model)
        fns.update({(variant, k): f for k, f in variant_fns.items()})
        values.update({f"{variant}, {k}": v for k, v in variant_values.items()})

    print(f"\nlogp and dlogp at {POINT} (log-transformed coordinates):")
    reference = "events, default backend" if "events" in models else "chained, default backend"
    check_agreement({k: v for k, v in values.items() if not k.startswith("one dose")}, reference)

    times = best_times(fns, args.repeats)
    print(f"\none logp+dlogp evaluation, rtol = atol = {md.SOLVER_KWARGS['rtol']} "
          f"(min over {args.repeats} interleaved batches):")
    for (variant, backend), t in times.items():
        ratio = ""
        if variant == "events":
            ratio = (f"   chained / events = {times['chained', backend] / t:5.2f}x (target >= 3), "
                     f"chained BDF / events = {times['chained BDF', backend] / t:5.2f}x")
        if variant == "events BDF":
            ratio = f"   events BDF / events = {t / times['events', backend]:5.2f}x"
        if variant == "one dose" and ("events", backend) in times:
            extra = times["events", backend] - t
            ratio = f"   events - one dose = {extra * 1e6:7.1f} us, {extra / 5 * 1e6:6.1f} us per dose"
        print(f"  {variant:11s} {backend:22s} {t * 1e6:9.1f} us{ratio}")
    print(f"load average at end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
