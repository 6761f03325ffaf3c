"""PyTensor Ops for DAE solves on IDAS, and `solve_dae_ivp`, the DAE sibling of `solve_ivp`.

`SolveDAE` (the value) and `SolveDAEGrad` (its vector-Jacobian product by the IDAS adjoint)
are the Op pair of `sunode_like.wrappers._ops` (the same as `SolveODE`, `SolveODEGrad`),
given a `DAEProblem`: the solver pool in C, numba dispatch (PyMC's numba mode, nutpie), the
failure policy are the ODE Ops'. IDACalcIC makes the initial values consistent, so only the
differential part of y0 matters; the algebraic entries of the ``y0`` input are initial
guesses and get zero gradient. Time derivatives: dy(tvals[i])/dtvals[i] = y'(tvals[i]) and
dy(tvals[i])/dt0 = -S_x0(tvals[i]) x'(t0), with consistent y'.
"""
import numpy as np
import pytensor.tensor as pt

from .._dae_problem import DAEProblem
from ._ivp import Inputs, SolveIvpResult, flat_input, solve_graph
from ._ops import Solve as SolveDAE, SolveGrad as SolveDAEGrad

__all__ = ["solve_dae_ivp", "SolveDAE", "SolveDAEGrad", "SolveDaeIvpResult"]


class SolveDaeIvpResult(SolveIvpResult):
    """What `solve_dae_ivp` returns: as `SolveIvpResult`, with y_hat holding the differential
    and the algebraic states, problem a `DAEProblem`, solver a `DAEAdjointSolver` or
    `DAESolver`, y0_flat the differential values then the algebraic guesses, and sens
    (forward) of shape ``(n_t, n_dparams + n_differential, n_states)``."""


def solve_dae_ivp(y0, params, rhs, algebraic, algebraic_states, tvals, t0, derivatives="adjoint",
                  coords=None, solver_kwargs=None, derivative_subset=None, algebraic_guess=None,
                  inputs=None):
    """Solve the semi-explicit DAE x' = rhs(t, x, z, p), 0 = algebraic(t, x, z, p) inside a
    PyTensor graph; the keywords follow `solve_ivp`.

    Parameters
    ----------
    y0 : dict
        Differential state name -> value (tensor, array, float or ``(value, shape)``).
    params : dict
        As for `solve_ivp`.
    rhs, algebraic : callable
        ``rhs(t, x, z, p)`` and ``algebraic(t, x, z, p)`` as `DAEProblem`'s ``rhs_sympy`` and
        ``algebraic_sympy``.
    algebraic_states : dict
        Algebraic state name -> shape (z0 is computed by IDACalcIC).
    algebraic_guess : dict, optional
        Initial guesses for z0 (numpy values; default 0).
    tvals, t0, derivatives, coords, solver_kwargs, derivative_subset, inputs
        As for `solve_ivp` (with inputs, ``rhs(t, x, z, p, u)`` and ``algebraic(t, x, z, p, u)``).

    Returns
    -------
    SolveDaeIvpResult
        ``(y_hat, flat, problem, solver, y0_flat, params_flat, op)``; y_hat holds the
        differential and the algebraic states.
    """
    given = Inputs(y0, params, derivatives, derivative_subset)
    problem = DAEProblem(given.param_spec, given.state_spec, algebraic_states, rhs, algebraic,
                         derivative_params=given.derivative_subset, coords=coords, inputs=inputs)
    guess = np.zeros(problem.n_algebraic)
    if algebraic_guess is not None:
        guess = problem.algebraic.flatten(algebraic_guess)
    y0_flat = pt.concatenate([flat_input(problem.differential, given.state_leaves, "y0"), pt.constant(guess)])
    return solve_graph(SolveDaeIvpResult, problem, given, y0_flat, tvals, t0, solver_kwargs)
