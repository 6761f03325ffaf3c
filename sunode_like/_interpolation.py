"""Data-driven inputs u(t): interpolants through static knots of values that are params.

An input is u(t) = sum_k v_k phi_k(t) over knots x_0 < ... < x_{n-1}, with the values v
a param of shape (n,) and phi_k the cardinal basis of the interpolation kind (phi_k(x_j)
= 1 if j = k else 0). u is linear in v for every kind here, so du/dv_k = phi_k(t) and the
gradients wrt the values follow from df/du by the chain rule. Kinds:

- "previous": piecewise constant, right-continuous: u(t) = v_i for x_i <= t < x_{i+1}
  (a switched input).
- "linear": piecewise linear.
- "natural": the C2 cubic spline with zero second derivative at both ends. On
  [x_i, x_{i+1}], with h = x_{i+1} - x_i, a = (x_{i+1} - t)/h, b = 1 - a,

      u(t) = a v_i + b v_{i+1} + h^2/6 ((a^3 - a) M_i + (b^3 - b) M_{i+1}),

  where the second derivatives at the interior knots solve A M = B v (continuity of u'),
  A symmetric tridiagonal and B with three entries per row, both from the knots only
  (M_0 = M_{n-1} = 0). So c M_i + d M_{i+1} = w^T B v with A w = c e_i + d e_{i+1}: one
  tridiagonal solve per evaluation, O(n), whose factors are computed once, when the
  problem is built; and phi_k(t) = a [k = i] + b [k = i+1] + (w^T B)_k is not local
  (every value moves the whole spline).

Outside [x_0, x_{n-1}] every kind is held constant at its end value (u = v_0 before the
first knot, v_{n-1} after the last, du/dt = 0): the integrators step a little past the
last output time, and the input must have a value there.

The numba routines read the values from a params vector ``p`` at ``offset`` (a C
pointer inside the kernels, a numpy array in tests).
"""
import hashlib
import pathlib

import numba
import numpy as np

from ._validate import real_array

KINDS = ("previous", "linear", "natural")
PREVIOUS, LINEAR, NATURAL = range(3)
# Part of the content hash of problems with inputs: numba's cache of a kernel does not
# notice that a function it calls (here `evaluate`, `basis`) changed.
SOURCE_HASH = hashlib.sha256(pathlib.Path(__file__).read_bytes()).hexdigest()[:16]


class Interpolated:
    """An input u(t) interpolating the param ``values`` through the knots ``times``.

    Parameters
    ----------
    times : (n_knots,) array
        Strictly increasing, finite knot times, n_knots >= 2. Static: part of the problem
        and of its content hash.
    values : str or tuple
        Path of the param holding the values at the knots (dotted string or tuple of
        names), of shape (n_knots,). Data or random variables: the solvers give gradients
        wrt it.
    kind : {"previous", "linear", "natural"}
        Right-continuous piecewise constant, piecewise linear, or the natural cubic spline.
        Outside [times[0], times[-1]] u is constant at its end value.

    Raises
    ------
    ValueError, TypeError
        For knots that are not 1-d, finite and strictly increasing, fewer than 2 knots, a
        bad ``values`` path or an unknown ``kind``.
    """

    def __init__(self, times, values, kind="linear"):
        times = real_array("times", times)
        if times.ndim != 1 or len(times) < 2:
            raise ValueError(f"`times` must be a 1-d array of at least 2 knot times; got shape {times.shape}.")
        if not np.all(np.isfinite(times)):
            raise ValueError(f"`times` must be finite; got NaN/inf at indices "
                             f"{np.flatnonzero(~np.isfinite(times)).tolist()}.")
        if not np.all(times[1:] > times[:-1]):
            i = int(np.flatnonzero(times[1:] <= times[:-1])[0])
            raise ValueError(f"`times` must be strictly increasing (no duplicate knots); got times[{i}]="
                             f"{times[i]} >= times[{i + 1}]={times[i + 1]}. Sort them and merge duplicates.")
        if kind not in KINDS:
            raise ValueError(f"`kind={kind!r}` is not supported; expected one of {list(KINDS)}.")
        if isinstance(values, str):
            values = tuple(values.split("."))
        elif isinstance(values, list):
            values = tuple(values)
        if not (isinstance(values, tuple) and values and all(isinstance(k, str) for k in values)):
            raise TypeError(f"`values={values!r}` must name a param (a dotted string or a tuple of names); "
                            f"got {type(values).__name__}.")
        self.times = np.array(times, dtype=np.float64)
        self.times.flags.writeable = False
        self.values = values
        self.kind = kind
        self.kind_code = KINDS.index(kind)
        self.factors = spline_factors(self.times) if kind == "natural" else np.zeros((2, 0))
        self.factors.flags.writeable = False

    @property
    def n_knots(self):
        return len(self.times)

    def __repr__(self):
        return f"Interpolated(<{self.n_knots} knots in [{self.times[0]}, {self.times[-1]}]>, " \
               f"values={'.'.join(self.values)!r}, kind={self.kind!r})"


def spline_factors(times):
    """The LDL^T factors of the natural spline's A over the n - 2 interior knots: row 0 the
    pivots D, row 1 the multipliers L (L[0] unused). Row j of A (knot i = j + 1) has
    2 (h_{i-1} + h_i) on the diagonal and h_i right of it, h = diff(times)."""
    h = np.diff(times)
    m = len(times) - 2
    factors = np.zeros((2, max(m, 0)))
    for j in range(m):
        diagonal = 2 * (h[j] + h[j + 1])
        if j:
            factors[1, j] = h[j] / factors[0, j - 1]
            diagonal -= factors[1, j] * h[j]
        factors[0, j] = diagonal
    return factors


@numba.njit(cache=True, error_model="numpy")
def interval(t, knots):
    """i in [0, n-2] with knots[i] <= t < knots[i+1]; 0 before the knots, n-2 from the
    last interior knot on (binary search)."""
    lo, hi = 0, len(knots) - 2
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if knots[mid] <= t:
            lo = mid
        else:
            hi = mid - 1
    return lo


@numba.njit(cache=True, error_model="numpy")
def local_weights(t, knots, kind, derivative):
    """(i, w_a, w_b, w_c, w_d): u(t) = w_a v_i + w_b v_{i+1} + w_c M_i + w_d M_{i+1}
    (``derivative`` False), or du/dt the same way (True); M the spline's second
    derivatives (w_c = w_d = 0 unless natural)."""
    n = len(knots)
    i = interval(t, knots)
    inside = knots[0] <= t <= knots[n - 1]
    if kind == PREVIOUS:
        if derivative:
            return i, 0.0, 0.0, 0.0, 0.0
        last = t >= knots[n - 1]
        return i, 0.0 if last else 1.0, 1.0 if last else 0.0, 0.0, 0.0
    h = knots[i + 1] - knots[i]
    clamped = min(max(t, knots[0]), knots[n - 1])
    a = (knots[i + 1] - clamped) / h
    b = 1.0 - a
    natural = kind == NATURAL
    if not derivative:
        if not natural:
            return i, a, b, 0.0, 0.0
        return i, a, b, (a * a * a - a) * h * h / 6, (b * b * b - b) * h * h / 6
    if not inside:
        return i, 0.0, 0.0, 0.0, 0.0
    if not natural:
        return i, -1.0 / h, 1.0 / h, 0.0, 0.0
    return i, -1.0 / h, 1.0 / h, -(3 * a * a - 1) * h / 6, (3 * b * b - 1) * h / 6


@numba.njit(cache=True, error_model="numpy")
def _spline_weights(knots, factors, i, wc, wd):
    """w with A w = wc e_i + wd e_{i+1} (knot indices; the end knots have no unknown), so
    that wc M_i + wd M_{i+1} = w^T B v; w[j] belongs to knot j + 1."""
    m = len(knots) - 2
    w = np.zeros(m)
    if i >= 1:
        w[i - 1] = wc
    if i + 1 <= m:
        w[i] = wd
    for j in range(1, m):
        w[j] -= factors[1, j] * w[j - 1]
    for j in range(m - 1, -1, -1):
        w[j] /= factors[0, j]
        if j + 1 < m:
            w[j] -= factors[1, j + 1] * w[j + 1]
    return w


@numba.njit(cache=True, error_model="numpy")
def evaluate(t, knots, kind, factors, p, offset, derivative):
    """u(t) (``derivative`` False) or du/dt (True), the values being p[offset:offset+n]."""
    i, wa, wb, wc, wd = local_weights(t, knots, kind, derivative)
    value = wa * p[offset + i] + wb * p[offset + i + 1]
    if kind == NATURAL and (wc != 0.0 or wd != 0.0):
        w = _spline_weights(knots, factors, i, wc, wd)
        for j in range(len(w)):  # (B v)_j: 6 times the jump of the slope at knot j + 1
            slope_jump = ((p[offset + j + 2] - p[offset + j + 1]) / (knots[j + 2] - knots[j + 1])
                          - (p[offset + j + 1] - p[offset + j]) / (knots[j + 1] - knots[j]))
            value += 6 * w[j] * slope_jump
    return value


@numba.njit(cache=True, error_model="numpy")
def basis(t, knots, kind, factors, out, start):
    """out[start + k] = phi_k(t) = du(t)/dv_k for k < n."""
    n = len(knots)
    i, wa, wb, wc, wd = local_weights(t, knots, kind, False)
    for k in range(n):
        out[start + k] = 0.0
    out[start + i] = wa
    out[start + i + 1] = wb
    if kind == NATURAL and (wc != 0.0 or wd != 0.0):
        w = _spline_weights(knots, factors, i, wc, wd)
        for j in range(len(w)):  # w^T B, B's row j: 6/h_j, -6/h_j - 6/h_{j+1}, 6/h_{j+1}
            left, right = 6 * w[j] / (knots[j + 1] - knots[j]), 6 * w[j] / (knots[j + 2] - knots[j + 1])
            out[start + j] += left
            out[start + j + 1] -= left + right
            out[start + j + 2] += right
