"""Data-driven inputs u(t): the interpolation math against scipy's interpolants, and
models with inputs against scipy solves, closed forms and finite differences."""
import numpy as np
import pytest
import scipy.interpolate

from sunode_like import _interpolation
from sunode_like._interpolation import Interpolated

KNOTS = np.array([0.0, 0.7, 1.5, 2.0, 3.2, 4.0, 5.5])
VALUES = np.array([1.0, 2.5, -0.5, 0.3, 1.7, 1.1, -0.8])


def scipy_interpolant(kind, knots=KNOTS, values=VALUES):
    """scipy's interpolant of ``kind``, held constant outside the knots (our rule)."""
    if kind == "natural":
        spline = scipy.interpolate.CubicSpline(knots, values, bc_type="natural")
    else:
        spline = scipy.interpolate.interp1d(knots, values, kind=kind)
    return lambda t: spline(np.clip(t, knots[0], knots[-1]))


def ours(kind, t, values=VALUES, knots=KNOTS, derivative=False):
    spec = Interpolated(knots, "v", kind)
    return np.array([_interpolation.evaluate(s, spec.times, spec.kind_code, spec.curvature, values, 0, derivative)
                     for s in np.atleast_1d(t)])


# Between the knots, on them, and outside on both sides.
T = np.concatenate([np.linspace(-1.0, 6.5, 301), KNOTS])


@pytest.mark.parametrize("kind", ["previous", "linear", "natural"])
def test_values_match_scipy(kind):
    np.testing.assert_allclose(ours(kind, T), scipy_interpolant(kind)(T), rtol=1e-14, atol=1e-14)


def test_previous_is_right_continuous_and_holds_the_ends():
    # At a knot the new value holds; before the first and after the last knot, the end values.
    np.testing.assert_array_equal(ours("previous", KNOTS), VALUES)
    np.testing.assert_array_equal(ours("previous", KNOTS[1:] - 1e-12), VALUES[:-1])
    np.testing.assert_array_equal(ours("previous", [-5.0, 100.0]), [VALUES[0], VALUES[-1]])


@pytest.mark.parametrize("kind", ["linear", "natural"])
def test_constant_outside_the_knots(kind):
    np.testing.assert_array_equal(ours(kind, [-3.0, -1e-9, 5.5 + 1e-9, 40.0]),
                                  [VALUES[0], VALUES[0], VALUES[-1], VALUES[-1]])
    np.testing.assert_array_equal(ours(kind, [-3.0, 40.0], derivative=True), [0.0, 0.0])


def test_slopes_match_scipy():
    t = np.linspace(0.01, 5.49, 157)
    spline = scipy.interpolate.CubicSpline(KNOTS, VALUES, bc_type="natural")
    np.testing.assert_allclose(ours("natural", t, derivative=True), spline(t, 1), rtol=1e-13, atol=1e-13)
    linear = np.interp(t + 1e-7, KNOTS, VALUES) - np.interp(t - 1e-7, KNOTS, VALUES)
    np.testing.assert_allclose(ours("linear", t, derivative=True), linear / 2e-7, rtol=1e-7)
    np.testing.assert_array_equal(ours("previous", t, derivative=True), 0.0)


@pytest.mark.parametrize("kind", ["previous", "linear", "natural"])
def test_basis_is_the_derivative_wrt_the_values(kind):
    # u is linear in the values: u(t) = sum_k v_k phi_k(t), phi_k = u for v = e_k.
    spec = Interpolated(KNOTS, "v", kind)
    phi = np.empty(len(KNOTS) + 3)
    for t in T:
        _interpolation.basis(t, spec.times, spec.kind_code, spec.curvature, phi, 3)
        cardinal = [ours(kind, t, values=e)[0] for e in np.eye(len(KNOTS))]
        np.testing.assert_allclose(phi[3:], cardinal, rtol=1e-14, atol=1e-14)
        assert abs(phi[3:] @ VALUES - ours(kind, t)[0]) < 1e-13


def test_two_knot_natural_spline_is_linear():
    knots, values = np.array([1.0, 3.0]), np.array([2.0, -1.0])
    t = np.linspace(0.0, 4.0, 41)
    np.testing.assert_allclose(ours("natural", t, values, knots), np.interp(t, knots, values), rtol=1e-15)


@pytest.mark.parametrize("times, message", [
    ([0.0, 2.0, 1.0], "strictly increasing"),
    ([0.0, 1.0, 1.0, 2.0], "duplicate knots"),
    ([0.0, np.nan, 2.0], "finite"),
    ([0.0, np.inf], "finite"),
    ([1.0], "at least 2"),
    ([[0.0, 1.0]], "1-d"),
])
def test_bad_knots(times, message):
    with pytest.raises(ValueError, match=message):
        Interpolated(times, "v")


def test_bad_kind_and_values():
    with pytest.raises(ValueError, match="`kind='cubic'` is not supported"):
        Interpolated(KNOTS, "v", kind="cubic")
    with pytest.raises(TypeError, match="must name a param"):
        Interpolated(KNOTS, 3)
    with pytest.raises(TypeError, match="`times` must be real"):
        Interpolated(KNOTS + 1j, "v")
