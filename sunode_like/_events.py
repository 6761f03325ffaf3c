"""State-dependent events: a root function g(t, y, p) whose zero crossing (in a chosen
direction) resets some states, y+ = h(t, y-, p), located by the integrator's root finding.

The solve stops at each root tau, applies the reset and starts again from (tau, y+), as at a
dose. An output at tau holds y- (the state before the event, as at doses). A root at t0 is
not an event (CVODES and ARKODE deactivate a g that is zero where integration starts until
it leaves zero; this is also how a reset that leaves g at zero is not triggered again at once).
Several events at one root: their resets are applied one after another in declaration order.

Gradients follow from the implicit function theorem (as in AMICI): with
D = dg/dt + dg/dy f(tau, y-) != 0,
    dtau/dtheta = -(dg/dy s- + dg/dtheta) / D,
    s+ = dh/dy s- + dh/dtheta + (dh/dy f- + dh/dt - f+) dtau/dtheta,
for the forward sensitivities s = dy/dtheta, and for the adjoint (lambda = -dL/dy) with
c = dh/dy f- + dh/dt - f+ and M = dh/dy - c dg/dy / D:
    lambda-^T = lambda+^T M,    dL/dp += -lambda+^T (dh/dp - c dg/dp / D).
A root with D = 0 (the trajectory grazes g = 0: |D| <= sqrt(uround) (|dg/dt| +
sum_j |dg/dy_j f_j|), where D has no correct digits) has no derivative: a SolverError
("SL_GRAZING") when sensitivities or gradients are asked for.

Where events accumulate (a bouncing ball coming to rest) the roots fall below the root
finding's resolution and one would be missed: the solve fails instead
("SL_EVENTS_ACCUMULATE"; csrc/sl_events.c, check_crossing and watch_return).

Every forward method finds the roots: CVODES' (BDF, ADAMS) and ARKODE's (ERK, DIRK) root
finding, and so the default solver="auto" (ERK first). CVODES' own adjoint cannot restart
at an event (as at a dose): gradients by the adjoint need solver_backward "ERK" or "DIRK".
"""
from dataclasses import dataclass

import numpy as np
import sympy

from ._layout import entry_names
from ._options import check_one_step_backward
from ._validate import checked_expression

DIRECTIONS = {"rising": 1, "falling": -1, "both": 0}  # CVodeSetRootDirection's codes
DEFAULT_MAX_EVENTS = 1000


class Event:
    """A state-dependent event of a `SympyProblem`.

    Parameters
    ----------
    condition : callable
        ``condition(t, y, p) -> sympy expression``: the event happens where it crosses zero.
    direction : {"both", "rising", "falling"}
        Which crossings count: "rising" from negative to positive, "falling" the other way.
    reset : callable, optional
        ``reset(t, y, p) -> dict`` of the new values of the states it changes (nested like
        ``states``, partial: the others keep their values), from the state just before the
        event; default: none (the event only stops and restarts the integrator).

    Examples
    --------
    >>> bounce = Event(condition=lambda t, y, p: y.height, direction="falling",
    ...                reset=lambda t, y, p: {"velocity": -p.e * y.velocity})
    """

    def __init__(self, condition, direction="both", reset=None):
        if not callable(condition):
            raise TypeError(f"`condition={condition!r}` must be a function (t, y, p) -> sympy expression; "
                            f"got {type(condition).__name__}.")
        if direction not in DIRECTIONS:
            raise ValueError(f"`direction={direction!r}` is not a crossing direction; expected one of "
                             f"{list(DIRECTIONS)}.")
        if reset is not None and not callable(reset):
            raise TypeError(f"`reset={reset!r}` must be a function (t, y, p) -> dict of new state values, "
                            f"or None; got {type(reset).__name__}.")
        self.condition, self.direction, self.reset = condition, direction, reset

    def __repr__(self):
        return f"Event(direction={self.direction!r})"


@dataclass(frozen=True)
class BoundEvent:
    """An event of a problem: its name, direction code (DIRECTIONS), g as a sympy expression
    and h as (flat state index, new value) for each state it changes, by index."""

    name: str
    direction: int
    condition: sympy.Expr
    reset: tuple


def bound_events(events, t, y, p, state_symbols, states, allowed):
    """The `BoundEvent` s of the ``events`` dict of a problem (None: none), calling the
    user's functions with the symbols ``t``, ``y``, ``p``; ``allowed``: the symbols they may
    use. Raises ValueError/TypeError naming the event."""
    if events is None:
        return ()
    if not isinstance(events, dict):
        raise TypeError(f"`events` must be a dict of name -> sl.Event; got {type(events).__name__}.")
    bound = []
    for name, event in events.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"`events` names must be identifiers; got {name!r}.")
        if not isinstance(event, Event):
            raise TypeError(f"`events[{name!r}]` must be an sl.Event; got {type(event).__name__} {event!r}.")
        condition = _expression(event.condition(t, y, p), f"events[{name!r}].condition", allowed)
        reset = ()
        if event.reset is not None:
            reset = _reset_exprs(event.reset(t, y, p), f"events[{name!r}].reset", state_symbols, states, allowed)
        bound.append(BoundEvent(name, DIRECTIONS[event.direction], condition, reset))
    return tuple(bound)


def _expression(value, where, allowed):
    """``value`` as a checked sympy expression over ``allowed`` symbols."""
    try:
        expr = sympy.sympify(value, strict=True)
    except sympy.SympifyError:
        raise TypeError(f"`{where}` must return a sympy expression or a number; got "
                        f"{type(value).__name__} {value!r}.") from None
    if not isinstance(expr, sympy.Expr):
        raise TypeError(f"`{where}` must return one real expression; got {type(expr).__name__} {expr!r}.")
    unknown = expr.free_symbols - allowed
    if unknown:
        raise ValueError(f"`{where}` uses unknown symbols {sorted(map(str, unknown))}; it may use t, "
                         f"the states and the params.")
    return checked_expression(expr, where)


def _reset_exprs(result, where, state_symbols, states, allowed):
    """(flat index, new value) of each state the partial dict ``result`` (over the `Layout`
    states) changes, by index; an entry set to its own symbol is left out."""
    if not isinstance(result, dict):
        raise TypeError(f"`{where}` must return a dict of new state values (nested like `states`, "
                        f"partial); got {type(result).__name__}.")
    new = list(state_symbols)
    names = entry_names(states)
    for path, value in _leaf_items(result, (), where, states):
        leaf = states.by_path[path]
        array = np.asarray(list(value) if isinstance(value, sympy.MatrixBase) else value, dtype=object)
        if array.shape != leaf.shape:
            raise ValueError(f"`{where}` returned shape {array.shape} for {leaf.name!r}; expected "
                             f"{leaf.shape} (the shape of `states[{leaf.name!r}]`).")
        for k, value in enumerate(array.ravel()):
            new[leaf.offset + k] = _expression(value, f"{where}[{names[leaf.offset + k]!r}]", allowed)
    return tuple((i, expr) for i, expr in enumerate(new) if expr != state_symbols[i])


def _leaf_items(result, prefix, where, states):
    """(leaf path, value) for each entry of the nested dict ``result``, which must name
    entries of ``states``."""
    for key, value in result.items():
        path = prefix + (key,)
        if path in states.by_path:
            yield path, value
        elif isinstance(value, dict) and any(leaf.path[:len(path)] == path for leaf in states.leaves):
            yield from _leaf_items(value, path, where, states)
        else:
            raise ValueError(f"`{where}` sets {'.'.join(map(str, path))!r}, which is not an entry of "
                             f"`states`; entries are {[leaf.name for leaf in states.leaves]}.")


def check_solver_options(problem, values, where):
    """A ValueError (naming ``where``) unless the checked solver option ``values`` can solve
    ``problem``'s events: any forward method has root finding; an adjoint must restart at
    them (a Runge-Kutta backward problem, as at doses)."""
    if problem.events:
        check_one_step_backward(values, "events", where)


def event_exprs(events, rename):
    """The stacked expressions the event kernels compute, over the code generator's symbols
    (``rename`` maps the problem's symbols to them): g (n_events), and h, the new values of
    the states the resets change, event by event, with where event i's are (``reset_ptr``
    [i]:[i + 1]) and which states they set (``reset_state``): a reset of a few states of a
    large model compiles only their derivatives."""
    g = [e.condition.xreplace(rename) for e in events]
    h = [expr.xreplace(rename) for e in events for _, expr in e.reset]
    reset_ptr = np.cumsum([0] + [len(e.reset) for e in events]).astype(np.int64)
    reset_state = np.array([i for e in events for i, _ in e.reset], dtype=np.int64)
    return g, h, reset_ptr, reset_state


def event_jacobian(exprs, t, y, dparams, differentiator):
    """Per expression [d/dt, d/dy_0..y_{n-1}, d/d(derivative params)], flattened row-major:
    the dense derivatives the jump conditions use (event functions are few and small)."""
    variables = [t, *y, *dparams]
    return [differentiator.diff(expr, v) for expr in exprs for v in variables]
