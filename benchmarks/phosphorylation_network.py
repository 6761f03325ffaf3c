"""A multisite phosphorylation network with mass-action kinetics, as a `SympyProblem`.

A substrate with ``n_sites`` sites is phosphorylated one site at a time by a kinase E and
dephosphorylated by a phosphatase F, each step through an enzyme-substrate complex:

    S_i + E <-> C_i -> S_{i+1} + E      (kon_i, koff_i, kcat_i),   i = 0 .. n_sites-1
    S_{i+1} + F <-> D_i -> S_i + F      (lon_i, loff_i, lcat_i)

States: S_0 .. S_n, C_i, D_i, E, F (3 n_sites + 3); params: six rate constants per site
(6 n_sites). ``n_sites=30`` gives the 93-state, 180-parameter model of the build-time
benchmark. Total substrate, kinase and phosphatase are conserved, which the tests of a
solve can check.
"""
import numpy as np

RATES = ("kon", "koff", "kcat", "lon", "loff", "lcat")


def phosphorylation_problem(n_sites=30):
    import sunode_like as sl

    def rhs(t, y, p):
        s, c, d, e, f = y.S, y.C, y.D, y.E, y.F
        bind = [p.kon[i] * s[i] * e - p.koff[i] * c[i] for i in range(n_sites)]
        fire = [p.kcat[i] * c[i] for i in range(n_sites)]
        unbind = [p.lon[i] * s[i + 1] * f - p.loff[i] * d[i] for i in range(n_sites)]
        refire = [p.lcat[i] * d[i] for i in range(n_sites)]
        ds = []
        for i in range(n_sites + 1):
            flux = 0
            if i < n_sites:
                flux += -bind[i] + refire[i]
            if i > 0:
                flux += fire[i - 1] - unbind[i - 1]
            ds.append(flux)
        return {
            "S": np.array(ds),
            "C": np.array([bind[i] - fire[i] for i in range(n_sites)]),
            "D": np.array([unbind[i] - refire[i] for i in range(n_sites)]),
            "E": sum(fire[i] - bind[i] for i in range(n_sites)),
            "F": sum(refire[i] - unbind[i] for i in range(n_sites)),
        }

    return sl.SympyProblem(
        params={name: (n_sites,) for name in RATES},
        states={"S": (n_sites + 1,), "C": (n_sites,), "D": (n_sites,), "E": (), "F": ()},
        rhs_sympy=rhs)


def phosphorylation_values(n_sites=30, seed=0):
    """(params dict, flat y0): rates spread over an order of magnitude, all substrate
    unphosphorylated, enzymes free."""
    rng = np.random.default_rng(seed)
    params = {name: rng.uniform(0.5, 5.0, n_sites) for name in RATES}
    y0 = np.zeros(3 * n_sites + 3)
    y0[0] = 10.0                 # S_0
    y0[-2], y0[-1] = 1.0, 0.8    # E, F
    return params, y0
