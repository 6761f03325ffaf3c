"""One-compartment pharmacokinetic models: the sympy problems and their closed forms.

Oral absorption, states ``gut`` and ``central`` (amounts)::

    d gut/dt = -ka gut,    d central/dt = ka gut - ke central,    ke = CL / V,

where dose k (amount D_k at time tau_k) puts F D_k into the gut at tau_k + lag; the
concentration is central / V. Intravenous: the state ``central`` alone,
d central/dt = -ke central + (infusion rates), each dose a bolus (rate 0) or a zero-order
infusion of rate R_k over [tau_k, tau_k + D_k / R_k).

The models are linear, so each state is a sum over doses of one dose's response, with
s = t - (dose time) (superposition; Bateman's function for the oral central compartment)::

    gut     = F D exp(-ka s)
    central = F D ka (exp(-ke s) - exp(-ka s)) / (ka - ke)        (oral)
    central = D exp(-ke s)                                        (IV bolus)
    central = R (1 - exp(-ke u)) / ke * exp(-ke (s - u)),  u = min(s, D / R)   (IV infusion)

for s > 0 and 0 before. An output at a dose time reports the state just before the dose.
The forms are evaluated through phi(x) = (exp(x) - 1) / x with x <= 0, so ka == ke (where
Bateman's function becomes F D ka s exp(-ka s)) and ke -> 0 need no special case and
nothing overflows. Every derivative is analytic: these are the references the tests, the
doses benchmark and the doses notebook check the solvers against.
"""
from typing import NamedTuple

import numpy as np

from .._problem import SympyProblem


def oral_rhs(t, y, p):
    """First-order absorption from the gut into the central compartment, linear elimination."""
    absorption = p.ka * y.gut
    return {"gut": -absorption, "central": absorption - p.CL / p.V * y.central}


def iv_rhs(t, y, p):
    """Linear elimination from the central compartment (doses and infusions come as events)."""
    return {"central": -p.CL / p.V * y.central}


def oral_problem():
    """The oral model as a `SympyProblem`: params ka, CL, V; states gut, central (amounts)."""
    return SympyProblem(params={"ka": (), "CL": (), "V": ()}, states={"gut": (), "central": ()},
                        rhs_sympy=oral_rhs)


def iv_problem():
    """The intravenous model as a `SympyProblem`: params CL, V; state central (amount)."""
    return SympyProblem(params={"CL": (), "V": ()}, states={"central": ()}, rhs_sympy=iv_rhs)


class Reference(NamedTuple):
    """A closed-form solution at output times t.

    ``y`` is (n_t, n_states) in the problem's state order (amounts). ``derivatives`` maps a
    scalar parameter's name to dy/d(it), of shape (n_t, n_states), and ``"dose_amount"``,
    ``"dose_time"`` (and ``"dose_rate"`` for IV) to (n_t, n_states, n_doses): column k is
    dy/d(the k-th dose's value).
    """

    y: np.ndarray
    derivatives: dict


def _phi(x):
    """(exp(x) - 1) / x, 1 at x = 0."""
    x = np.asarray(x, dtype=float)
    safe = np.where(x == 0.0, 1.0, x)
    return np.where(x == 0.0, 1.0, np.expm1(safe) / safe)


# phi'(x) = sum_{n>=1} n x^(n-1) / (n+1)!: its closed form (exp(x) (x - 1) + 1) / x^2 loses
# all digits to cancellation near 0, where the series converges fast (|x| < 1: 25 terms
# leave < 1e-25).
_DPHI_SERIES = np.array([n / np.prod(np.arange(1.0, n + 2.0)) for n in range(1, 26)])


def _dphi(x):
    """d/dx (exp(x) - 1) / x."""
    x = np.asarray(x, dtype=float)
    small = np.abs(x) < 1.0
    series = np.polynomial.polynomial.polyval(np.where(small, x, 0.0), _DPHI_SERIES)
    safe = np.where(small, 1.0, x)
    closed = (np.exp(safe) * (safe - 1.0) + 1.0) / safe**2
    return np.where(small, series, closed)


def _bateman(s, a, b):
    """B = (exp(-b s) - exp(-a s)) / (a - b) (symmetric in a, b; s exp(-a s) at a == b) and
    dB/da, dB/db, dB/ds, for s >= 0. With lo = min(a, b), hi = max(a, b) and
    x = -(hi - lo) s <= 0: B = s exp(-lo s) phi(x), dB/d(hi) = -s^2 exp(-lo s) phi'(x),
    dB/d(lo) = s^2 exp(-lo s) (phi'(x) - phi(x))."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    x = -(hi - lo) * s
    decay = np.exp(-lo * s)
    value = s * decay * _phi(x)
    d_hi = -s**2 * decay * _dphi(x)
    d_lo = s**2 * decay * (_dphi(x) - _phi(x))
    d_a, d_b = (d_hi, d_lo) if a >= b else (d_lo, d_hi)
    # d/ds: the oral central compartment's own ODE, per unit ka F D: exp(-a s) - b B.
    return value, d_a, d_b, np.exp(-a * s) - b * value


def _dose_arrays(t, dose_time, dose_amount, extra=()):
    t = np.asarray(t, dtype=float)
    arrays = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=float))
                                   for v in (dose_time, dose_amount) + tuple(extra)))
    if t.ndim != 1 or arrays[0].ndim != 1:
        raise ValueError(f"`t` and the dose arrays must be 1-d; got shapes {t.shape} and {arrays[0].shape}.")
    return t, arrays


def _elimination_chain(d_ke, CL, V):
    """dy/dCL and dy/dV from dy/dke (ke = CL / V; amounts depend on V only through ke)."""
    return d_ke / V, -d_ke * CL / V**2


def oral_reference(t, dose_time, dose_amount, ka, CL, V, F=1.0, lag=0.0):
    """The oral model's states at times t after bolus doses into the gut, and their
    derivatives wrt ka, CL, V, F, lag and each dose's amount and time.

    Parameters
    ----------
    t : (n_t,) array
        Output times (any order); the state is zero before the first (lagged) dose.
    dose_time, dose_amount : (n_doses,) arrays
        tau_k and D_k; F D_k enters the gut at tau_k + lag.
    ka, CL, V, F, lag : float
        Absorption rate constant, clearance, volume, bioavailability, lag time.

    Returns
    -------
    Reference
        ``y`` (n_t, 2): gut, central. ``derivatives``: "ka", "CL", "V", "F", "lag";
        "dose_amount", "dose_time" (n_t, 2, n_doses). A derivative wrt a dose time at an
        output equal to that (lagged) dose time is the one from the left (the state jumps).
    """
    t, (tau, amount) = _dose_arrays(t, dose_time, dose_amount)
    ke = CL / V
    s = t[:, None] - (tau[None, :] + lag)  # (n_t, n_doses)
    after = s > 0.0  # pre-dose at s == 0
    s = np.where(after, s, 0.0)
    dose = F * amount * after  # (n_t, n_doses), zero before each dose
    gut_unit = np.exp(-ka * s)
    bateman, d_ka, d_ke, d_s = _bateman(s, ka, ke)

    gut, central = dose * gut_unit, dose * ka * bateman  # per dose
    d_ds = np.stack([-ka * gut, dose * ka * d_s], axis=1)  # d state / d s, (n_t, 2, n_doses)
    d_ke_total = (dose * ka * d_ke).sum(axis=1)
    zeros = np.zeros(len(t))
    d_CL, d_V = _elimination_chain(np.stack([zeros, d_ke_total], axis=1), CL, V)
    derivatives = {
        "ka": np.stack([(-s * gut).sum(axis=1), (dose * (bateman + ka * d_ka)).sum(axis=1)], axis=1),
        "CL": d_CL,
        "V": d_V,
        "F": np.stack([gut.sum(axis=1), central.sum(axis=1)], axis=1) / F,
        "lag": -d_ds.sum(axis=2),
        "dose_amount": F * after[:, None, :] * np.stack([gut_unit, ka * bateman], axis=1),
        "dose_time": -d_ds,
    }
    y = np.stack([gut.sum(axis=1), central.sum(axis=1)], axis=1)
    return Reference(y, derivatives)


def iv_reference(t, dose_time, dose_amount, CL, V, dose_rate=0.0):
    """The intravenous model's central amount at times t after bolus doses (rate 0) and
    zero-order infusions (rate R_k > 0 over [tau_k, tau_k + D_k / R_k)), and its
    derivatives wrt CL, V and each dose's amount, time and rate.

    Parameters
    ----------
    t : (n_t,) array
        Output times.
    dose_time, dose_amount, dose_rate : (n_doses,) arrays (or scalars, broadcast)
        tau_k, D_k, R_k; rate 0 is a bolus.
    CL, V : float
        Clearance and volume.

    Returns
    -------
    Reference
        ``y`` (n_t, 1): central. ``derivatives``: "CL", "V"; "dose_amount" (at a fixed rate,
        so an infusion lasts longer), "dose_time", "dose_rate" (at a fixed amount, so it
        ends sooner) of shape (n_t, 1, n_doses). d/d(rate) of a bolus is NaN: a bolus is no
        infusion's limit at rate 0.
    """
    t, (tau, amount, rate) = _dose_arrays(t, dose_time, dose_amount, (dose_rate,))
    if np.any(rate < 0) or np.any(amount < 0):
        raise ValueError("`dose_rate` and `dose_amount` must be >= 0; got "
                         f"rates {rate.tolist()}, amounts {amount.tolist()}.")
    ke = CL / V
    s = t[:, None] - tau[None, :]
    after = s > 0.0
    s = np.where(after, s, 0.0)
    bolus = rate == 0.0
    duration = np.where(bolus, 0.0, amount / np.where(bolus, 1.0, rate))
    u = np.minimum(s, duration)  # time infused so far
    tail = np.exp(-ke * (s - u))  # decay since the infusion ended
    infused = u * _phi(-ke * u)  # (1 - exp(-ke u)) / ke
    ended = s > duration

    # A bolus is the same formula with R u -> D: central = D exp(-ke s).
    central = np.where(bolus, amount * np.exp(-ke * s), rate * infused * tail) * after
    d_ke = np.where(bolus, -s * central,
                    rate * tail * (-u**2 * _dphi(-ke * u) - (s - u) * infused)) * after
    # d/ds: during an infusion R - ke central (= R exp(-ke s)); after it (and a bolus) -ke central.
    d_s = np.where(ended | bolus, -ke * central, rate * np.exp(-ke * s)) * after
    # Lengthening an infusion by dT adds R dT at its end, decaying since: R tail.
    d_duration = np.where(ended & ~bolus & after, rate * tail, 0.0)
    d_amount = np.where(bolus, np.exp(-ke * s) * after, d_duration / np.where(bolus, 1.0, rate))
    d_rate = np.where(bolus, np.nan,
                      (central - d_duration * duration) / np.where(bolus, 1.0, rate))
    d_CL, d_V = _elimination_chain(d_ke.sum(axis=1)[:, None], CL, V)
    derivatives = {"CL": d_CL, "V": d_V, "dose_amount": d_amount[:, None, :],
                   "dose_time": -d_s[:, None, :], "dose_rate": d_rate[:, None, :]}
    return Reference(central.sum(axis=1)[:, None], derivatives)
