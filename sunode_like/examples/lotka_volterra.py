"""Fit the Lotka-Volterra model to the Hudson's Bay Company hares and lynx pelts, 1900-1920.

    python -m sunode_like.examples.lotka_volterra [--sampler nutpie] [--out lynx_hares.png]

The model (as in Carpenter's Stan case study "Predator-Prey Population Dynamics"):

    dH/dt = alpha H - beta H L,    dL/dt = delta H L - gamma L,    (H, L)(1900) = z0,
    log(observed_s(t)) ~ Normal(log z_s(t), sigma_s)

with weakly informative log-normal priors. NUTS samples the posterior; every log density
and gradient evaluation solves the ODE forward and its adjoint backward with CVODES through
`sunode_like.wrappers.as_pytensor.solve_ivp`. Prints the posterior summary with r-hat and
saves a plot of the data, the posterior mean trajectory and its 90% band.
"""
import argparse
import time

import numpy as np

# Pelts in thousands, years 1900-1920 (Hudson's Bay Company records; as tabulated in
# Carpenter's case study and the original Hewitt (1921) / Odum (1953) tables).
YEARS = np.arange(1900, 1921)
HARES = np.array([30.0, 47.2, 70.2, 77.4, 36.3, 20.6, 18.1, 21.4, 22.0, 25.4, 27.1,
                  40.3, 57.0, 76.6, 52.3, 19.5, 11.2, 7.6, 14.6, 16.2, 24.7])
LYNX = np.array([4.0, 6.1, 9.8, 35.2, 59.4, 41.7, 19.0, 13.0, 8.3, 9.1, 7.4,
                 8.0, 12.3, 19.5, 45.7, 51.1, 29.7, 15.8, 9.7, 10.1, 8.6])
PARAMS = ("alpha", "beta", "gamma", "delta")
# The data are noisy (sigma ~ 0.25 on the log scale): 1e-6 is far more accurate than needed.
SOLVER_KWARGS = {"rtol": 1e-6, "atol": 1e-6}
# Predator-prey dynamics are not stiff: the explicit Runge-Kutta backward solve is the
# fastest adjoint for them (see the README's "Which gradient method when").
BACKWARD_KWARGS = {"adjoint": {"solver_backward": "ERK"}, "forward": {}}


def lotka_volterra(t, y, p):
    """The right-hand side in sympy: y.hares, p.alpha, ... are symbols."""
    return {
        "hares": p.alpha * y.hares - p.beta * y.hares * y.lynx,
        "lynx": p.delta * y.hares * y.lynx - p.gamma * y.lynx,
    }


def build_model(hares=HARES, lynx=LYNX, years=YEARS, solver_kwargs=None, derivatives="adjoint"):
    """The PyMC model; observations at t = years - years[0], with t0 = 0."""
    import pymc as pm

    from sunode_like.wrappers.as_pytensor import solve_ivp

    tvals = (years - years[0]).astype(float)
    coords = {"time": years, "species": ["hares", "lynx"]}
    with pm.Model(coords=coords) as model:
        alpha = pm.LogNormal("alpha", mu=np.log(1.0), sigma=0.5)
        beta = pm.LogNormal("beta", mu=np.log(0.05), sigma=0.5)
        gamma = pm.LogNormal("gamma", mu=np.log(1.0), sigma=0.5)
        delta = pm.LogNormal("delta", mu=np.log(0.05), sigma=0.5)
        z0 = pm.LogNormal("z0", mu=np.log(10.0), sigma=1.0, dims="species")
        sigma = pm.LogNormal("sigma", mu=-1.0, sigma=1.0, dims="species")
        solution = solve_ivp(
            y0={"hares": (z0[0], ()), "lynx": (z0[1], ())},
            params={"alpha": (alpha, ()), "beta": (beta, ()), "gamma": (gamma, ()),
                    "delta": (delta, ())},
            rhs=lotka_volterra, tvals=tvals, t0=0.0, derivatives=derivatives,
            solver_kwargs={**SOLVER_KWARGS, **BACKWARD_KWARGS[derivatives], **(solver_kwargs or {})},
        )
        z = pm.Deterministic("z", solution.flat, dims=("time", "species"))
        pm.LogNormal("observed", mu=pm.math.log(z), sigma=sigma,
                     observed=np.stack([hares, lynx], axis=1), dims=("time", "species"))
    return model, solution


def posterior_trajectories(idata, problem, t_fine, n_draws=400, seed=0):
    """ODE solutions (n_draws, len(t_fine), 2) for posterior draws, on a fine grid."""
    import sunode_like as sl

    post = idata.posterior.stack(sample=("chain", "draw"))
    rng = np.random.default_rng(seed)
    picks = rng.choice(post.sizes["sample"], size=min(n_draws, post.sizes["sample"]), replace=False)
    solver = sl.Solver(problem, **SOLVER_KWARGS)
    out = np.empty((len(picks), len(t_fine), 2))
    for k, i in enumerate(picks):
        solver.set_params_dict({name: float(post[name].values[i]) for name in PARAMS})
        y = solver.make_output_buffers(t_fine)
        solver.solve(0.0, t_fine, post["z0"].values[:, i], y)
        out[k] = y
    return out


def plot(idata, problem, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_fine = np.linspace(0.0, float(YEARS[-1] - YEARS[0]), 401)
    traj = posterior_trajectories(idata, problem, t_fine)
    mean = traj.mean(axis=0)
    lo, hi = np.quantile(traj, [0.05, 0.95], axis=0)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for j, (name, data, color) in enumerate((("hares", HARES, "C0"), ("lynx", LYNX, "C3"))):
        ax.fill_between(YEARS[0] + t_fine, lo[:, j], hi[:, j], color=color, alpha=0.25,
                        label=f"{name}: 90% posterior band")
        ax.plot(YEARS[0] + t_fine, mean[:, j], color=color, label=f"{name}: posterior mean")
        ax.plot(YEARS, data, "o", color=color, markeredgecolor="k", label=f"{name}: data")
    ax.set_ylim(0, 1.3 * max(hi.max(), HARES.max(), LYNX.max()))  # room for the legend
    ax.set_xticks(YEARS[::2])
    ax.set_xlabel("year")
    ax.set_ylabel("pelts (thousands)")
    ax.set_title("Hudson's Bay Company hares and lynx, Lotka-Volterra fit (NUTS)")
    ax.legend(ncol=3, fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sampler", choices=["pymc", "nutpie"], default="pymc",
                        help="PyMC's NUTS (default) or nutpie (numba backend)")
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="lotka_volterra.png", help="where to save the plot")
    args = parser.parse_args(argv)

    import arviz as az
    import pymc as pm

    model, solution = build_model()
    start = time.perf_counter()
    with model:
        idata = pm.sample(
            draws=args.draws, tune=args.tune, chains=args.chains, cores=args.cores,
            random_seed=args.seed, nuts_sampler=args.sampler, progressbar=False,
        )
    elapsed = time.perf_counter() - start
    names = list(PARAMS) + ["z0", "sigma"]
    summary = az.summary(idata, var_names=names, hdi_prob=0.9)
    divergences = int(idata.sample_stats["diverging"].sum())
    print(summary.to_string())
    print(f"\nsampler: {args.sampler}, {args.chains} chains x {args.draws} draws "
          f"(+{args.tune} tune) in {elapsed:.1f} s; max r-hat {summary['r_hat'].max():.3f}; "
          f"min bulk ESS {summary['ess_bulk'].min():.0f}; divergences {divergences}")
    plot(idata, solution.problem, args.out)
    print(f"plot saved to {args.out}")
    return idata


if __name__ == "__main__":
    main()
