"""The six-dose study of sunode_like.examples.multiple_dose: the chained solves (one
solve_ivp per dose interval) against the closed form, value and gradient."""
import numpy as np
import pytest

from sunode_like.examples import multiple_dose as md
from sunode_like.examples import pk

pytensor = pytest.importorskip("pytensor")
pt = pytest.importorskip("pytensor.tensor")

POINT = {"ka": 1.1, "CL": 4.0, "V": 27.0}


def test_chained_solves_match_the_closed_form():
    """Central amounts and d(w . central)/d(ka, CL, V) through the chain of six Ops (adjoint
    through every restart: y0 of each interval is the previous one's output)."""
    ka, CL, V = (pt.dscalar(name) for name in POINT)
    central = md.chained_central(ka, CL, V, md.DOSE_TIMES, md.DOSE_AMOUNTS, md.OBSERVATION_TIMES,
                                 {"rtol": 1e-10, "atol": 1e-10})
    w = np.random.default_rng(1).normal(size=len(md.OBSERVATION_TIMES))
    fn = pytensor.function([ka, CL, V], [central, *pytensor.grad(pt.dot(w, central), [ka, CL, V])])
    value, *grad = fn(*POINT.values())
    reference = pk.oral_reference(md.OBSERVATION_TIMES, md.DOSE_TIMES, md.DOSE_AMOUNTS, **POINT)
    np.testing.assert_allclose(value, reference.y[:, 1], rtol=1e-7)
    expected = [w @ reference.derivatives[name][:, 1] for name in POINT]
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


POINT_LOG = {"ka_log__": np.log(POINT["ka"]), "CL_log__": np.log(POINT["CL"]),
             "V_log__": np.log(POINT["V"]), "sigma_log__": np.log(0.2)}


@pytest.mark.parametrize("doses", ["chained", "events"])
def test_model_logp_uses_the_concentration(doses):
    """The model's log density at a point = the log-normal likelihood of the closed form's
    concentrations plus the priors (computed here by hand), chained or in one solve."""
    import scipy.stats

    observed = md.simulate(seed=3)
    model = md.build_model(observed, doses=doses, solver_kwargs={"rtol": 1e-10, "atol": 1e-10})
    logp = model.compile_logp()(POINT_LOG)
    conc = pk.oral_reference(md.OBSERVATION_TIMES, md.DOSE_TIMES, md.DOSE_AMOUNTS, **POINT).y[:, 1] / POINT["V"]
    likelihood = scipy.stats.lognorm.logpdf(observed, s=0.2, scale=conc).sum()
    priors = sum(scipy.stats.lognorm.logpdf(POINT[name], s=0.5, scale=scale) + np.log(POINT[name])
                 for name, scale in (("ka", 1.0), ("CL", 4.0), ("V", 25.0)))
    priors += scipy.stats.halfnorm.logpdf(0.2, scale=0.5) + np.log(0.2)  # log-Jacobians of the transforms
    np.testing.assert_allclose(logp, likelihood + priors, rtol=1e-7)


def test_one_solve_gradient_equals_the_chained_one():
    """dlogp of the one-solve model (adjoint across the doses) = that of the chained Ops
    (proven against the closed form above)."""
    observed = md.simulate(seed=3)
    tight = {"rtol": 1e-10, "atol": 1e-10}
    chained, events = (md.build_model(observed, doses=doses, solver_kwargs=tight).compile_dlogp()(POINT_LOG)
                       for doses in ("chained", "events"))
    np.testing.assert_allclose(events, chained, rtol=1e-6)
    assert np.all(np.abs(chained) > 1e-3)
