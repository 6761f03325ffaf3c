"""Interpolated inputs against the same forcing written as a sympy Piecewise.

Problem: x' = -k x + 0.1 u(t) (1 + 0.01 x), u piecewise linear through 49 hourly knots of
a random walk (the values are params), x(0) = 5, 25 output times over 48 h, BDF, rtol =
atol = 1e-8. Ours: ``inputs={"temp": Interpolated(knots, "v", "linear")}``. Peer: u written
as a Piecewise of 48 linear pieces over the same params (what a user could write before
inputs existed; its kernels branch through the pieces and df/dv has 2 terms per piece).
Both are the same function of t and v, so their solutions agree to the tolerance.

Reported: the build of problem + solver with a cold cache (in this process, after numba's
start-up), then per call a forward solve and a value + adjoint gradient wrt (k, v), as
the median over interleaved rounds of our time over the peer's.

Run: ``python benchmarks/inputs.py`` (about half a minute).
"""
import os
import statistics
import tempfile
import time

import numpy as np
import sympy

import sunode_like as sl

KNOTS = np.linspace(0.0, 48.0, 49)
VALUES = 10 + np.cumsum(np.random.default_rng(0).normal(0.0, 1.0, len(KNOTS)))
TVALS = np.linspace(0.0, 48.0, 25)
PARAMS = {"k": 0.1, "v": VALUES}
OPTIONS = {"rtol": 1e-8, "atol": 1e-8}


def model(u, t, y, p):
    return {"x": -p.k * y.x + 0.1 * u * (1 + 0.01 * y.x)}


def ours():
    return sl.SympyProblem(params={"k": (), "v": (len(KNOTS),)}, states={"x": ()},
                           inputs={"temp": sl.Interpolated(KNOTS, "v", "linear")},
                           rhs_sympy=lambda t, y, p, u: model(u.temp, t, y, p))


def piecewise(t, v):
    """np.interp(t, KNOTS, v) (constant outside) as a sympy Piecewise."""
    pieces = [(v[0], t < KNOTS[0])]
    for i in range(len(KNOTS) - 1):
        a, b = KNOTS[i], KNOTS[i + 1]
        pieces.append((v[i] + (v[i + 1] - v[i]) * (t - a) / (b - a), t < b))
    return sympy.Piecewise(*pieces, (v[-1], True))


def peer():
    return sl.SympyProblem(params={"k": (), "v": (len(KNOTS),)}, states={"x": ()},
                           rhs_sympy=lambda t, y, p: model(piecewise(t, p.v), t, y, p))


def build(make):
    """(seconds to build problem and solvers with a cold cache, forward call, gradient call)."""
    os.environ["SUNODE_LIKE_CACHE_DIR"] = tempfile.mkdtemp(prefix="sl-inputs-bench-")
    start = time.perf_counter()
    problem = make()
    forward, adjoint = sl.Solver(problem, **OPTIONS), sl.AdjointSolver(problem, **OPTIONS)
    y = forward.make_output_buffers(TVALS)
    forward.set_params_dict(PARAMS)
    forward.solve(0.0, TVALS, np.array([5.0]), y)
    adjoint.set_params_dict(PARAMS)
    y_out, grad_out, lambda_out = adjoint.make_output_buffers(TVALS)
    grads = np.ones_like(y_out)

    def gradient():
        adjoint.solve_forward(0.0, TVALS, np.array([5.0]), y_out)
        adjoint.solve_backward(TVALS[-1], 0.0, TVALS, grads, grad_out, lambda_out)
        return grad_out

    gradient()
    seconds = time.perf_counter() - start
    return seconds, lambda: forward.solve(0.0, TVALS, np.array([5.0]), y), gradient, y, forward.stats()


def batch_us(fn, n=50):
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return 1e6 * (time.perf_counter() - start) / n


def main():
    # numba's start-up, paid once per process, out of both builds:
    sl.Solver(sl.SympyProblem(params={}, states={"x": ()}, rhs_sympy=lambda t, y, p: {"x": -y.x}))
    our_build, our_solve, our_gradient, our_y, our_stats = build(ours)
    peer_build, peer_solve, peer_gradient, peer_y, peer_stats = build(peer)
    print(f"solutions differ by {np.abs(our_y - peer_y).max():.2g}; gradients by "
          f"{np.abs(our_gradient() - peer_gradient()).max() / np.abs(peer_gradient()).max():.2g} (relative)")
    print(f"steps: ours {our_stats['steps']}, peer {peer_stats['steps']}")
    print(f"cold build: ours {our_build:.2f} s, Piecewise {peer_build:.2f} s, ratio {our_build / peer_build:.2f}")
    for name, mine, theirs in (("forward solve", our_solve, peer_solve), ("value + gradient", our_gradient, peer_gradient)):
        rounds = [(batch_us(mine), batch_us(theirs)) for _ in range(7)]
        ratio = statistics.median(a / b for a, b in rounds)
        print(f"{name}: ours {statistics.median(a for a, _ in rounds):.0f} us, Piecewise "
              f"{statistics.median(b for _, b in rounds):.0f} us, ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
