"""The closed-form PK references of sunode_like.examples.pk against a tight scipy solve that
restarts at every dose (DOP853, rtol 1e-12), and their derivatives against central finite
differences. The doses tests of the solvers compare against these references, so they are
proven here independently of sunode_like's solvers."""
import numpy as np
import pytest
import scipy.integrate

from sunode_like.examples import pk

KA, CL, V, F, LAG = 1.2, 5.0, 30.0, 0.8, 0.5
DOSE_TIMES = np.arange(6) * 12.0
DOSE_AMOUNTS = np.array([100.0, 100.0, 150.0, 100.0, 50.0, 100.0])
# 20 output times, none within 0.01 of a (lagged) dose time: the finite differences below
# must not step across a jump.
T_OUT = np.linspace(0.25, 71.75, 20)


def scipy_with_doses(rhs, n_states, t, doses):
    """y(t) (n_t, n_states) for y' = rhs(y) + infusion rates, y(0) = 0, restarting at every
    dose: ``doses`` lists (time, state index, amount, rate); rate 0 is a bolus. Outputs at a
    dose time report the state before the dose."""
    starts = {time for time, _, _, _ in doses}
    ends = {time + amount / rate for time, _, amount, rate in doses if rate > 0}
    breaks = np.array(sorted({0.0} | starts | ends | {float(np.max(t))}))
    y, out = np.zeros(n_states), np.zeros((len(t), n_states))
    for a, b in zip(breaks[:-1], breaks[1:]):
        for time, state, amount, rate in doses:
            if time == a and rate == 0:
                y[state] += amount
        inflow = np.zeros(n_states)
        for time, state, amount, rate in doses:
            if rate > 0 and time <= a < time + amount / rate:
                inflow[state] += rate
        inside = (t > a) & (t <= b)
        t_eval = np.unique(np.append(t[inside], b))  # sorted, ends at b: the restart value
        result = scipy.integrate.solve_ivp(lambda _, z: rhs(z) + inflow, (a, b), y, method="DOP853",
                                           rtol=1e-12, atol=1e-12, t_eval=t_eval)
        assert result.success, result.message
        out[inside] = result.y.T[np.searchsorted(t_eval, t[inside])]
        y = result.y[:, -1].copy()
    return out


def oral_numpy_rhs(ka, CL, V):
    return lambda y: np.array([-ka * y[0], ka * y[0] - CL / V * y[1]])


def oral_scipy(t, ka=KA, CL=CL, V=V, F=F, lag=LAG, times=DOSE_TIMES, amounts=DOSE_AMOUNTS):
    doses = [(tau + lag, 0, F * amount, 0.0) for tau, amount in zip(times, amounts)]
    return scipy_with_doses(oral_numpy_rhs(ka, CL, V), 2, t, doses)


def assert_close(actual, expected, rtol, what):
    """Elementwise within rtol of the largest |expected| of each state (concentrations span
    decades; an error far below the peak is irrelevant); absolute where a state's expected
    values are all zero (the gut does not depend on CL)."""
    scale = np.max(np.abs(expected), axis=tuple(i for i in range(expected.ndim) if i != 1), keepdims=True)
    scale = np.where(scale == 0.0, 1.0, scale)
    error = np.max(np.abs(actual - expected) / scale)
    assert error < rtol, f"{what}: max error {error:.2e} relative to each state's peak"


def central_difference(f, x, h):
    return (f(x + h) - f(x - h)) / (2 * h)


@pytest.mark.parametrize("ka", [KA, CL / V, CL / V * (1 + 1e-7), 0.05])
def test_oral_reference_matches_scipy(ka):
    """Bateman superposition = the ODE restarted at each dose, also at ka == ke (the limit
    s exp(-ke s)), next to it, and for ka < ke (flip-flop kinetics)."""
    t = np.concatenate([T_OUT, DOSE_TIMES[1:] + LAG])  # and outputs at dose times: pre-dose
    reference = pk.oral_reference(t, DOSE_TIMES, DOSE_AMOUNTS, ka, CL, V, F, LAG)
    expected = oral_scipy(t, ka=ka)
    assert_close(reference.y, expected, 1e-10, f"oral, ka={ka}")
    assert np.all(reference.y[t > LAG, 1] > 1.0)  # not vacuous: a real amount after the first dose


def test_oral_reference_at_dose_times_is_pre_dose():
    """At a lagged dose time the gut holds what earlier doses left, not the new dose."""
    tau = DOSE_TIMES[2] + LAG
    just_before = pk.oral_reference([tau - 1e-9], DOSE_TIMES, DOSE_AMOUNTS, KA, CL, V, F, LAG).y
    at = pk.oral_reference([tau], DOSE_TIMES, DOSE_AMOUNTS, KA, CL, V, F, LAG).y
    np.testing.assert_allclose(at, just_before, rtol=1e-8)
    before_first = pk.oral_reference([0.0, LAG], DOSE_TIMES, DOSE_AMOUNTS, KA, CL, V, F, LAG).y
    assert np.all(before_first == 0.0)


def test_oral_ka_equal_ke_is_the_limit():
    """At ka == ke the closed form is F D ka s exp(-ka s) (one dose), and ka -> ke is smooth
    in the value and the derivatives."""
    ke = CL / V
    s = T_OUT
    at = pk.oral_reference(T_OUT + LAG, [0.0], [100.0], ke, CL, V, F, LAG)
    np.testing.assert_allclose(at.y[:, 1], F * 100.0 * ke * s * np.exp(-ke * s), rtol=1e-14)
    for eps in (1e-6, -1e-6, 1e-12):
        near = pk.oral_reference(T_OUT + LAG, [0.0], [100.0], ke * (1 + eps), CL, V, F, LAG)
        np.testing.assert_allclose(near.y, at.y, rtol=10 * abs(eps) * s.max(), atol=1e-300)
        for name in ("ka", "CL", "V"):
            assert_close(near.derivatives[name], at.derivatives[name], 20 * abs(eps) * s.max() + 1e-12, name)


ORAL_SCALARS = {"ka": KA, "CL": CL, "V": V, "F": F, "lag": LAG}


@pytest.mark.parametrize("ka", [KA, CL / V, 0.05])
def test_oral_derivatives_match_finite_differences(ka):
    values = dict(ORAL_SCALARS, ka=ka)
    reference = pk.oral_reference(T_OUT, DOSE_TIMES, DOSE_AMOUNTS, **values)
    for name, x in values.items():
        fd = central_difference(
            lambda v: pk.oral_reference(T_OUT, DOSE_TIMES, DOSE_AMOUNTS, **dict(values, **{name: v})).y,
            x, 1e-5 * x)
        assert_close(reference.derivatives[name], fd, 1e-8, name)
    for name, base in (("dose_amount", DOSE_AMOUNTS), ("dose_time", DOSE_TIMES)):
        for k in range(len(base)):
            def shifted(v, k=k, base=base, name=name):
                doses = {"dose_time": DOSE_TIMES, "dose_amount": DOSE_AMOUNTS}
                doses[name] = np.where(np.arange(len(base)) == k, v, base)
                return pk.oral_reference(T_OUT, **doses, **values).y
            fd = central_difference(shifted, base[k], 1e-4)
            assert_close(reference.derivatives[name][:, :, k], fd, 1e-7, f"{name}[{k}]")
        assert np.any(reference.derivatives[name] != 0.0)


# Doses of the IV model: boluses, infusions that end between outputs, one still running at
# the last output, two overlapping.
IV_TIMES = np.array([0.0, 6.0, 12.0, 14.0, 24.0, 60.0])
IV_AMOUNTS = np.array([200.0, 0.0, 300.0, 100.0, 150.0, 500.0])
IV_RATES = np.array([0.0, 50.0, 100.0, 25.0, 0.0, 40.0])


def iv_scipy(t, CL=CL, V=V, times=IV_TIMES, amounts=IV_AMOUNTS, rates=IV_RATES):
    doses = list(zip(times, [0] * len(times), amounts, rates))
    return scipy_with_doses(lambda y: -CL / V * y, 1, t, doses)


def test_iv_reference_matches_scipy():
    t = np.concatenate([T_OUT, IV_TIMES[1:]])
    reference = pk.iv_reference(t, IV_TIMES, IV_AMOUNTS, CL, V, IV_RATES)
    assert_close(reference.y, iv_scipy(t), 1e-10, "iv")
    assert reference.y.max() > 100.0


def test_iv_with_no_elimination():
    """CL = 0 (ke = 0): infusions add R u, boluses D; no division by ke."""
    reference = pk.iv_reference(T_OUT, IV_TIMES, IV_AMOUNTS, 0.0, V, IV_RATES)
    infused = np.clip(T_OUT[:, None] - IV_TIMES, 0.0, IV_AMOUNTS / np.where(IV_RATES > 0, IV_RATES, 1.0))
    expected = np.where(IV_RATES > 0, IV_RATES * infused, IV_AMOUNTS * (T_OUT[:, None] > IV_TIMES)).sum(axis=1)
    np.testing.assert_allclose(reference.y[:, 0], expected, rtol=1e-14)


def test_iv_derivatives_match_finite_differences():
    reference = pk.iv_reference(T_OUT, IV_TIMES, IV_AMOUNTS, CL, V, IV_RATES)
    for name, x in (("CL", CL), ("V", V)):
        fd = central_difference(
            lambda v: pk.iv_reference(T_OUT, IV_TIMES, IV_AMOUNTS, **dict({"CL": CL, "V": V}, **{name: v}),
                                      dose_rate=IV_RATES).y, x, 1e-5 * x)
        assert_close(reference.derivatives[name], fd, 1e-8, name)
    base = {"dose_time": IV_TIMES, "dose_amount": IV_AMOUNTS, "dose_rate": IV_RATES}
    for name in base:
        for k in range(len(IV_TIMES)):
            if name == "dose_rate" and IV_RATES[k] == 0:
                assert np.all(np.isnan(reference.derivatives[name][:, :, k]))
                continue
            def shifted(v, k=k, name=name):
                doses = dict(base, **{name: np.where(np.arange(6) == k, v, base[name])})
                return pk.iv_reference(T_OUT, CL=CL, V=V, **doses).y
            if name == "dose_amount" and IV_AMOUNTS[k] == 0:
                # One-sided (second order): a negative amount is no dose.
                h = 1e-4
                fd = (-3 * shifted(0.0) + 4 * shifted(h) - shifted(2 * h)) / (2 * h)
            else:
                fd = central_difference(shifted, base[name][k], 1e-4)
            assert_close(reference.derivatives[name][:, :, k], fd, 1e-7, f"{name}[{k}]")
        # not vacuous: most doses' derivatives are not zero
        assert np.count_nonzero(np.any(reference.derivatives[name] != 0.0, axis=(0, 1))) >= 3, name


def test_iv_rejects_negative_rates():
    with pytest.raises(ValueError, match="dose_rate"):
        pk.iv_reference(T_OUT, [0.0], [100.0], CL, V, [-1.0])


def test_problems_have_the_references_rhs():
    """The sympy problems' right-hand sides are the ODEs the references solve."""
    oral, iv = pk.oral_problem(), pk.iv_problem()
    assert [leaf.name for leaf in oral.states.leaves] == ["gut", "central"]
    assert [leaf.name for leaf in iv.states.leaves] == ["central"]
    y, p = np.array([3.0, 7.0]), {"ka": KA, "CL": CL, "V": V}
    np.testing.assert_allclose(_rhs_value(oral, y, p), oral_numpy_rhs(KA, CL, V)(y), rtol=1e-15)
    np.testing.assert_allclose(_rhs_value(iv, y[1:], {"CL": CL, "V": V}), [-CL / V * 7.0], rtol=1e-15)


def _rhs_value(problem, y, params):
    import sunode_like as sl

    solver = sl.Solver(problem)
    solver.set_params_dict(params)
    return solver.rhs(0.0, y)
