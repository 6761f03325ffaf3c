"""The cost of state-dependent events: root finding where no event fires, and a restart at
each event against the same restarts made by doses.

    python benchmarks/events.py [--repeats 7]

  * Lotka-Volterra (default options: ERK, rtol = atol = 1e-8, 21 outputs over [0, 20])
    without events, and with an event g = hares - 1000 that never fires: what the root
    finding costs per solve (forward solve, and value + gradient with the ERK backward).
  * A threshold model x' = a - k x, x -> x - 0.5 when x reaches 1 (rising), over [0, 20],
    against the same restarts made by doses: boluses cannot be negative, so the peer is its
    mirror z = 1.5 - x (z' = 1.5 k - a - k z, z += 0.5 at the event times), the same
    trajectory up to sign, with the event times given instead of found; by the default
    (ERK: ARKODE's root finding) and by BDF (CVODES').
Each time is the fastest of ``--repeats`` batches; ratios against the peer in the same run.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import sunode_like as sl  # noqa: E402

TOL = dict(rtol=1e-8, atol=1e-8)


def lotka_volterra(t, y, p):
    return {"hares": p.alpha * y.hares - p.beta * y.hares * y.lynx,
            "lynx": p.delta * y.hares * y.lynx - p.gamma * y.lynx}


LV_PARAMS = {"alpha": 0.52, "beta": 0.026, "gamma": 0.84, "delta": 0.026}
LV_Y0 = np.array([34.0, 5.9])
LV_TVALS = np.linspace(0, 20, 21)


def lv_problem(events):
    params = {name: () for name in LV_PARAMS}
    return sl.SympyProblem(params=params, states={"hares": (), "lynx": ()}, rhs_sympy=lotka_volterra,
                           events=events)


def fastest(function, repeats, number):
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            function()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def lv_timings(problem, repeats):
    solver = sl.Solver(problem, **TOL)
    solver.set_params_dict(LV_PARAMS)
    y = solver.make_output_buffers(LV_TVALS)
    adj = sl.AdjointSolver(problem, solver_backward="ERK", **TOL)
    adj.set_params_dict(LV_PARAMS)
    y2, grad, lam = adj.make_output_buffers(LV_TVALS)
    grads = np.ones_like(y2)

    def value_and_gradient():
        adj.solve_forward(0.0, LV_TVALS, LV_Y0, y2)
        adj.solve_backward(LV_TVALS[-1], 0.0, LV_TVALS, grads, grad, lam)

    forward = fastest(lambda: solver.solve(0.0, LV_TVALS, LV_Y0, y), repeats, 200)
    return forward, fastest(value_and_gradient, repeats, 100), y.copy()


def threshold_timings(repeats, method):
    rhs = lambda t, y, p: {"x": p.a - p.k * y.x}  # noqa: E731
    events = {"fire": sl.Event(condition=lambda t, y, p: y.x - 1, direction="rising",
                               reset=lambda t, y, p: {"x": y.x - 0.5})}
    with_events = sl.SympyProblem(params={"a": (), "k": ()}, states={"x": ()}, rhs_sympy=rhs, events=events)
    solver = sl.Solver(with_events, solver=method, **TOL)
    solver.set_params_dict({"a": 2.0, "k": 0.5})
    tvals = np.linspace(0, 20, 41)
    y = solver.make_output_buffers(tvals)
    solver.solve(0.0, tvals, np.array([0.0]), y)
    # The event times, from a dense solve: the peer restarts there by doses.
    dense = np.linspace(0, 20, 200001)
    y_dense = solver.make_output_buffers(dense)
    solver.solve(0.0, dense, np.array([0.0]), y_dense)
    times = dense[1:][np.diff(y_dense[:, 0]) < -0.25]
    mirror = lambda t, y, p: {"z": 1.5 * p.k - p.a - p.k * y.z}  # noqa: E731
    plain = sl.Solver(sl.SympyProblem(params={"a": (), "k": ()}, states={"z": ()}, rhs_sympy=mirror), solver=method, **TOL)
    plain.set_params_dict({"a": 2.0, "k": 0.5})
    doses = sl.Doses(time=times, amount=0.5, state="z")
    y_doses = plain.make_output_buffers(tvals)
    plain.solve(0.0, tvals, np.array([1.5]), y_doses, doses=doses)
    assert np.allclose(1.5 - y_doses[:, 0], y[:, 0], atol=1e-3)
    by_events = fastest(lambda: solver.solve(0.0, tvals, np.array([0.0]), y), repeats, 200)
    by_doses = fastest(lambda: plain.solve(0.0, tvals, np.array([1.5]), y_doses, doses=doses), repeats, 200)
    return len(times), by_events, by_doses


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    repeats = parser.parse_args().repeats
    print(f"load average {os.getloadavg()[0]:.2f}")
    never = {"never": sl.Event(condition=lambda t, y, p: y.hares - 1000, direction="rising")}
    base_forward, base_gradient, base_y = lv_timings(lv_problem(None), repeats)
    event_forward, event_gradient, event_y = lv_timings(lv_problem(never), repeats)
    assert np.allclose(base_y, event_y, rtol=1e-6)
    print(f"Lotka-Volterra forward: {base_forward * 1e6:.0f} us, with a root function that never "
          f"fires {event_forward * 1e6:.0f} us: ratio {event_forward / base_forward:.2f}")
    print(f"Lotka-Volterra value + gradient (ERK backward): {base_gradient * 1e6:.0f} us, with it "
          f"{event_gradient * 1e6:.0f} us: ratio {event_gradient / base_gradient:.2f}")
    events = {}
    for method in ("auto", "BDF"):
        n, events[method], by_doses = threshold_timings(repeats, method)
        print(f"threshold model, {n} events, solver={method!r}: {events[method] * 1e6:.0f} us; the "
              f"same {n} restarts by doses {by_doses * 1e6:.0f} us: ratio {events[method] / by_doses:.2f}")
    print(f"threshold model with events, default / BDF: {events['auto'] / events['BDF']:.2f}")


if __name__ == "__main__":
    main()
