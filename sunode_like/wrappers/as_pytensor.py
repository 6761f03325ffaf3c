"""PyTensor Ops for ODE solves, and `solve_ivp`, the sunode-compatible way to build them.

`SolveODE` (the value) and `SolveODEGrad` (its vector-Jacobian product by the adjoint) are
the Op pair of `sunode_like.wrappers._ops`, which serves DAEs too (`as_pytensor_dae`); see
there for the math, the solver pool and the failure policy. y(tvals) of dy/dt = f(t, y, p)
comes from CVODES; gradients by the adjoint (``derivatives="adjoint"``) or by forward
sensitivities (``derivatives="forward"``), dy(tvals[i])/dtvals[i] = f(tvals[i], y_i) and
dy(tvals[i])/dt0 = -S_y0(tvals[i]) f(t0, y0).
"""
from .._problem import SympyProblem
from ._ivp import Inputs, SolveIvpResult as SolveIvpResult, flat_input, solve_graph
from ._ops import Solve as SolveODE, SolveGrad as SolveODEGrad

__all__ = ["solve_ivp", "SolveODE", "SolveODEGrad", "SolveIvpResult"]


def solve_ivp(y0, params, rhs, tvals, t0, derivatives="adjoint", coords=None,
              solver_kwargs=None, derivative_subset=None, inputs=None, doses=None, events=None):
    """Solve dy/dt = rhs(t, y, p), y(t0) = y0 inside a PyTensor graph (sunode's interface).

    Parameters
    ----------
    y0, params : dict
        Name -> value, or nested dicts. A value is a PyTensor variable, a numpy array, a float,
        or ``(value, shape_or_dims)`` (dims name ``coords``). Params given as numpy values or
        constants are not differentiated unless ``derivative_subset`` lists them; symbolic
        ones are.
    rhs : callable
        ``rhs(t, y, p) -> dict`` of sympy expressions like `SympyProblem`'s ``rhs_sympy``.
        Module-level functions keep the compiled graph picklable with plain pickle.
    tvals : array or tensor (n_t,)
        Strictly increasing output times, ``tvals[0] >= t0``.
    t0 : float or scalar tensor
    derivatives : {"adjoint", "forward"}
        Gradients by the adjoint method or by forward sensitivities.
    coords : dict, optional
        Dim name -> coordinates, for shapes given by dim names.
    solver_kwargs : dict, optional
        Solver options (rtol, atol, max_steps, solver, linear_solver, ...).
    derivative_subset : list of paths, optional
        The params to differentiate (default: the symbolic ones). dL/d of the others is NaN.
    inputs : dict, optional
        Name -> `sunode_like.Interpolated`, data-driven inputs u(t) as for `SympyProblem`:
        ``rhs(t, y, p, u)`` then reads ``u.name``. Their values are a param (data or a
        random variable of shape (n_knots,)), so gradients wrt them come as for any param.
    doses : sunode_like.Doses, optional
        Boluses and infusions (NONMEM's records; see `Doses`). Their ``time``, ``amount`` and
        ``rate`` may be tensors (``dose_times + lag``, ``F * dose``) with gradients by the
        adjoint, which then needs a Runge-Kutta backward problem: the default
        ``solver_backward="auto"`` is "DIRK" there (stiff-safe; "ERK" is faster on non-stiff
        models), as doses are solved by BDF. A bolus's rate has no derivative (NaN). With
        ``derivatives="forward"`` the doses' inputs have none (use the adjoint). Bad numeric
        doses raise a ValueError; bad symbolic ones make the solve's outputs NaN.
    events : dict, optional
        Name -> `sunode_like.Event`, state-dependent events as for `SympyProblem` (part of
        the problem: the Op has no more inputs). Gradients across them are exact; the adjoint
        needs a Runge-Kutta backward problem, what the default picks (as for doses: CVODES'
        own adjoint cannot restart at an event).

    Returns
    -------
    SolveIvpResult
        ``(y_hat, flat, problem, solver, y0_flat, params_flat)`` (adjoint) or the same and
        ``sens, op`` (forward), as sunode: y_hat["hares"] is a tensor over tvals of shape
        ``(n_t, *shape)``; flat is ``(n_t, n_states)``. ``result.op`` is the Op.
    """
    given = Inputs(y0, params, derivatives, derivative_subset)
    problem = SympyProblem(given.param_spec, given.state_spec, rhs,
                           derivative_params=given.derivative_subset, coords=coords, inputs=inputs,
                           events=events)
    y0_flat = flat_input(problem.states, given.state_leaves, "y0")
    return solve_graph(SolveIvpResult, problem, given, y0_flat, tvals, t0, solver_kwargs, doses)
