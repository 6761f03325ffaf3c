"""A six-dose oral PK study in PyMC: simulated data, and the model solved in one solve with
doses or by chaining one solve per dose interval.

One subject takes 100 mg every 12 h, six times; the central concentration is measured 20
times over 84 h with log-normal noise. The model is `pk.oral_problem` (first-order
absorption, linear elimination) with priors on ka, CL, V and the noise sigma::

    log(observed_i) ~ Normal(log(central(t_i) / V), sigma)

``build_model(..., doses="chained")`` restarts the ODE at every dose: one `solve_ivp` per
interval [tau_k, tau_(k+1)], its initial state the previous interval's end plus the dose
(y+ = y- + F D_k in the gut). That is how a multiple-dose model had to be written before
doses; the doses benchmark times it against ``doses="events"`` (one solve with
``solve_ivp(..., doses=...)``).
"""
import numpy as np

from . import pk

DOSE_TIMES = 12.0 * np.arange(6)
DOSE_AMOUNTS = np.full(6, 100.0)
OBSERVATION_TIMES = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 12.5, 14.0, 24.0, 26.0, 36.0,
                              38.0, 48.0, 50.0, 60.0, 61.0, 62.0, 66.0, 72.0, 84.0])
TRUTH = {"ka": 0.8, "CL": 5.0, "V": 30.0, "sigma": 0.15}
# Concentrations span about 1-10 mg/L, noise is 15%: 1e-8 is far tighter than the data need.
# The model is not stiff: the explicit Runge-Kutta backward problem suits it (and doses need
# a one-step backward method).
SOLVER_KWARGS = {"rtol": 1e-8, "atol": 1e-8, "solver_backward": "ERK"}


def simulate(seed=0, truth=TRUTH, times=OBSERVATION_TIMES):
    """Noisy concentrations at ``times`` from the closed form at ``truth``."""
    central = pk.oral_reference(times, DOSE_TIMES, DOSE_AMOUNTS, truth["ka"], truth["CL"], truth["V"]).y[:, 1]
    rng = np.random.default_rng(seed)
    return central / truth["V"] * np.exp(truth["sigma"] * rng.standard_normal(len(times)))


def chained_central(ka, CL, V, dose_times, dose_amounts, tvals, solver_kwargs=None):
    """The central amount at ``tvals`` (tensor) by one `solve_ivp` per dose interval.

    Interval k starts at tau_k from the state at the end of interval k - 1 plus the dose in
    the gut, and reports the outputs in (tau_k, tau_(k+1)] and y(tau_(k+1)) (pre-dose, the
    next restart). Outputs before the first dose are 0. ``dose_times`` and ``tvals`` are
    numpy arrays (they decide the graph's shape); the amounts may be tensors.
    """
    import pytensor.tensor as pt

    from ..wrappers.as_pytensor import solve_ivp

    params = {"ka": (ka, ()), "CL": (CL, ()), "V": (V, ())}
    bounds = np.append(dose_times, np.inf)
    pieces = [pt.zeros(int(np.count_nonzero(tvals <= dose_times[0])))]
    gut, central = pt.as_tensor_variable(0.0), pt.as_tensor_variable(0.0)
    for k, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        outputs = tvals[(tvals > start) & (tvals <= end)]
        restart = np.isfinite(end) and (len(outputs) == 0 or outputs[-1] != end)
        segment_t = np.append(outputs, end) if restart else outputs
        if len(segment_t) == 0:
            break
        solution = solve_ivp(y0={"gut": (gut + dose_amounts[k], ()), "central": (central, ())},
                             params=params, rhs=pk.oral_rhs, tvals=segment_t, t0=start,
                             solver_kwargs=solver_kwargs)
        y = solution.y_hat
        pieces.append(y["central"][:len(outputs)])
        gut, central = y["gut"][-1], y["central"][-1]
    return pt.concatenate(pieces)


def build_model(observed, doses="chained", times=OBSERVATION_TIMES, solver_kwargs=None,
                dose_times=DOSE_TIMES, dose_amounts=DOSE_AMOUNTS):
    """The PyMC model of the study, its ODE solved by chaining (``doses="chained"``) or in one
    solve with doses (``doses="events"``, which needs `sunode_like.Doses`)."""
    import pymc as pm

    from ..wrappers.as_pytensor import solve_ivp

    kwargs = {**SOLVER_KWARGS, **(solver_kwargs or {})}
    with pm.Model() as model:
        ka = pm.LogNormal("ka", mu=np.log(1.0), sigma=0.5)
        CL = pm.LogNormal("CL", mu=np.log(4.0), sigma=0.5)
        V = pm.LogNormal("V", mu=np.log(25.0), sigma=0.5)
        sigma = pm.HalfNormal("sigma", sigma=0.5)
        if doses == "chained":
            central = chained_central(ka, CL, V, dose_times, dose_amounts, times, kwargs)
        elif doses == "events":
            from .. import Doses

            solution = solve_ivp(y0={"gut": (0.0, ()), "central": (0.0, ())},
                                 params={"ka": (ka, ()), "CL": (CL, ()), "V": (V, ())},
                                 rhs=pk.oral_rhs, tvals=times, t0=0.0, solver_kwargs=kwargs,
                                 doses=Doses(dose_times, dose_amounts, "gut"))
            central = solution.y_hat["central"]
        else:
            raise ValueError(f"`doses={doses!r}` is not a variant; expected 'chained' or 'events'.")
        concentration = pm.Deterministic("concentration", central / V)
        pm.LogNormal("observed", mu=pm.math.log(concentration), sigma=sigma, observed=observed)
    return model
