"""Problems: the sympy model over named, shaped states and params. `AbstractProblem` holds
what ODE and DAE problems share; `SympyProblem` is the ODE dy/dt = f(t, y, p).
"""
import hashlib
from dataclasses import dataclass

import numpy as np
import sympy

from . import _interpolation
from ._interpolation import Interpolated
from ._events import DEFAULT_MAX_EVENTS, bound_events
from ._layout import Layout, checked_coords, flatten_exprs, symbols
from ._validate import real_array


def call_model(function, what, *args):
    """``function(*args)``, the user's sympy model called ``what`` ("rhs_sympy"), which must
    be callable."""
    if not callable(function):
        raise TypeError(f"`{what}` must be a function returning a dict of sympy expressions; got "
                        f"{type(function).__name__} {function!r}.")
    return function(*args)


def derivative_params_in_order(params, derivative_params):
    """(paths, flat indices) of the derivative params, both in the order ``params`` declares
    them (as sunode orders them), whatever order ``derivative_params`` lists them in."""
    if derivative_params is None:
        return [leaf.path for leaf in params.leaves], np.arange(params.size, dtype=np.int64)
    if isinstance(derivative_params, (str, bytes)) or not isinstance(derivative_params, (list, tuple)):
        raise TypeError(f"`derivative_params={derivative_params!r}` must be a list of param paths "
                        f"(tuples like ('alpha',) or dotted strings like 'k.rate'); got "
                        f"{type(derivative_params).__name__}. Write [{derivative_params!r}] for one param.")
    groups = []
    for path in derivative_params:
        if not (isinstance(path, str) or (isinstance(path, (tuple, list)) and all(isinstance(k, str) for k in path))):
            raise TypeError(f"`derivative_params` entry {path!r} must be a dotted string or a tuple of "
                            f"names; got {type(path).__name__}.")
        path = tuple(path.split(".")) if isinstance(path, str) else tuple(path)
        leaves = params.resolve(path)
        groups.append((leaves[0].offset, path, [i for leaf in leaves for i in range(leaf.offset, leaf.offset + leaf.size)]))
    indices = [i for _, _, group in groups for i in group]
    if len(set(indices)) != len(indices):
        raise ValueError(f"`derivative_params` lists an entry twice: {[path for _, path, _ in groups]}.")
    groups.sort(key=lambda group: group[0])  # a path's leaves are contiguous (depth-first layout)
    return [path for _, path, _ in groups], np.array([i for _, _, group in groups for i in group], dtype=np.int64)


def content_hash(kind, exprs, symbol_lists, layouts, derivative_indices, inputs=(), events=()):
    """A hash of everything a problem's kernels depend on. The code generator numbers states
    and params by position, so their names, order, shapes and nesting count, not only the
    expressions' text; the inputs' knots and kinds are compiled into the kernels."""
    parts = [kind, sympy.srepr(exprs), [[str(s) for s in symbols] for symbols in symbol_lists],
             [layout.dtype.descr for layout in layouts], derivative_indices.tolist()]
    if inputs:  # (problems without inputs keep the hashes, and caches, they had)
        parts.append([_interpolation.SOURCE_HASH] + [(i.name, i.spec.kind, i.spec.times.tolist(), i.offset)
                                                     for i in inputs])
    if events:  # (likewise for problems without events)
        parts.append([(e.name, e.direction, sympy.srepr(e.condition), sympy.srepr(e.reset)) for e in events])
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class BoundInput:
    """An input of a problem: its name, its `Interpolated` spec and the flat index of its
    first value in the params."""

    name: str
    spec: Interpolated
    offset: int


def bound_inputs(inputs, params, states):
    """The `BoundInput` s of the ``inputs`` dict of a problem, checked against its
    ``params`` and ``states`` layouts."""
    bound = []
    for name, spec in inputs.items():
        if not isinstance(spec, Interpolated):
            raise TypeError(f"`inputs[{name!r}]` must be an sl.Interpolated; got {type(spec).__name__} {spec!r}.")
        for layout in (states, params):
            if name in layout.names_under():
                raise ValueError(f"`inputs[{name!r}]` has the name of an entry of `{layout.what}`; "
                                 "rename the input (e.g. to the measured quantity).")
        try:
            leaves = params.resolve(spec.values)
        except ValueError as error:
            raise ValueError(f"`inputs[{name!r}]` takes its values from a param that does not exist: {error}") from None
        if len(leaves) != 1 or leaves[0].shape != (spec.n_knots,):
            shapes = [leaf.shape for leaf in leaves]
            raise ValueError(f"`inputs[{name!r}]` takes its values from the param {'.'.join(spec.values)!r}, "
                             f"which has shape {shapes[0] if len(shapes) == 1 else shapes}; expected "
                             f"({spec.n_knots},), one value per knot. Declare it as "
                             f"params={{{spec.values[-1]!r}: ({spec.n_knots},), ...}}.")
        bound.append(BoundInput(name, spec, leaves[0].offset))
    return bound


class AbstractProblem:
    """What ODE and DAE problems share: the params and states layouts, the derivative params,
    the symbols, the model's content hash and the xarray view of a solution.

    Subclasses call `_init_params`, then `_init_states` (before calling the user's model, so
    that an empty spec is named before the model fails on it), then `_init_model`.
    """

    kind = None
    inputs = ()  # `BoundInput` s, set by `_init_inputs`
    input_symbols = ()
    events = ()  # `BoundEvent` s (SympyProblem's events)
    max_events = DEFAULT_MAX_EVENTS

    def _init_params(self, params, derivative_params, coords):
        """The params' layout, the derivative params and the symbols of t and the params;
        returns the params' namespace of symbols for the user's model."""
        self.coords = checked_coords(coords)
        self.params = Layout(params, self.coords, "params")
        self.params_dtype = self.params.dtype
        self.n_params = self.params.size
        self.derivative_params, self.derivative_indices = derivative_params_in_order(
            self.params, derivative_params)
        self.n_dparams = len(self.derivative_indices)
        self.t_symbol = sympy.Symbol("t", real=True)
        self.param_symbols, p = symbols(self.params, "p")
        return p

    def _init_inputs(self, inputs):
        """The inputs (after the params and states, whose names they must not take) and
        their symbols; returns their namespace for the user's model, or None without
        inputs (the model then takes no ``u`` argument)."""
        if inputs is not None and not isinstance(inputs, dict):
            raise TypeError(f"`inputs` must be a dict of name -> Interpolated; got {type(inputs).__name__}.")
        layout = Layout(dict.fromkeys(inputs or {}, ()), {}, "inputs")  # checks the names
        self.inputs = bound_inputs(inputs or {}, self.params, self.states)
        self.input_symbols, u = symbols(layout, "u")
        return u if self.inputs else None

    def _init_states(self, states):
        """``states`` (a `Layout`) as the flat state vector y."""
        if states.size == 0:
            raise ValueError("`states` must have at least one entry.")
        self.states = states
        self.state_dtype = states.dtype
        self.n_states = states.size

    def _init_model(self, label, exprs, symbol_lists):
        """Whether the model ``exprs`` uses the params (else solving needs no set_params), and
        its content hash (``label``: the kind of model; ``symbol_lists``: its symbols before
        the params')."""
        event_exprs = [expr for e in self.events for expr in (e.condition, *(h for _, h in e.reset))]
        self.uses_params = any((set(self.param_symbols) | set(self.input_symbols)) & e.free_symbols
                               for e in [*exprs, *event_exprs])
        self.content_hash = content_hash(
            label, exprs, (*symbol_lists, self.param_symbols, [self.t_symbol]),
            (self.states, self.params), self.derivative_indices, self.inputs, self.events)

    def solution_to_xarray(self, tvals, y_out):
        """An xarray Dataset with one variable per state, over ``time`` and the state's dims.

        ``tvals`` is (n_t,) and ``y_out`` (n_t, n_states), as a solve wrote them.
        """
        import xarray as xr

        tvals, y_out = real_array("tvals", tvals), real_array("y_out", y_out)
        if tvals.ndim != 1 or y_out.shape != (len(tvals), self.n_states):
            raise ValueError(f"`y_out` has shape {y_out.shape} for `tvals` of shape {tvals.shape}; expected "
                             f"(len(tvals), n_states) = ({len(np.atleast_1d(tvals))}, {self.n_states}).")
        data_vars, coords = {}, {"time": tvals}
        for leaf in self.states.leaves:
            dims = ["time"] + [d or f"{leaf.name}_dim_{i}" for i, d in enumerate(leaf.dims)]
            data_vars[leaf.name] = (dims, y_out[:, leaf.slice].reshape((len(tvals),) + leaf.shape))
            coords.update({d: self.coords[d] for d in leaf.dims if d})
        return xr.Dataset(data_vars, coords=coords)


class SympyProblem(AbstractProblem):
    """An ODE dy/dt = f(t, y, p) written in sympy over named, shaped states and params.

    Parameters
    ----------
    params, states : dict
        Name -> shape (or nested dict). Shapes are tuples of ints or of dim names in ``coords``.
    rhs_sympy : callable
        ``rhs_sympy(t, y, p) -> dict`` with the same structure as ``states``; ``y.hares``,
        ``p.k[0]`` are sympy expressions (symbols are real, not positive). Allowed are
        arithmetic, elementary functions, erf, Abs, Min, Max and Piecewise with an otherwise
        branch (the full list is in the guide's "Errors and what is rejected"); Heaviside and
        sign are rewritten as Piecewise, with derivative 0.
    derivative_params : list of paths, optional
        The params gradients and sensitivities are taken with respect to, as tuples
        (``("alpha",)``) or dotted strings; default: every param. Gradients and
        sensitivities list them in the order ``params`` declares them (as sunode does),
        whatever order this list names them in.
    coords : dict, optional
        Dim name -> coordinate values, for named dims and the xarray output.
    inputs : dict, optional
        Name -> `Interpolated`: data-driven inputs u(t), interpolating a param through
        static knots (``Interpolated(times, values="temp_values", kind="linear")``, the param
        ``temp_values`` of shape (n_knots,)). With inputs, the model is called
        ``rhs_sympy(t, y, p, u)`` and ``u.temp`` is u(t), used like a state; gradients and
        sensitivities wrt the values are exact (u is linear in them).
    events : dict, optional
        Name -> `Event`: state-dependent events, a root function g(t, y, p) crossing zero
        (in a direction) and a reset of some states y+ = h(t, y-, p). Solves stop at each
        root, apply the reset and restart (any forward method; the adjoint needs
        solver_backward "ERK" or "DIRK"); an output at an event time holds the state before
        it. Sensitivities and gradients include the exact jumps of a root whose time
        depends on the params and y0 (see `sunode_like._events`). Events see t, y and p (not
        the inputs).
    max_events : int
        The most events one solve may have (default 1000): past it the solve fails with a
        SolverError (a reset that chatters, or an accumulation of events as for a bouncing
        ball with e < 1).

    Raises
    ------
    ValueError, TypeError
        Naming the entry, for bad specs, an rhs of the wrong shape or with unknown symbols,
        a function or number the kernels cannot compute, a Piecewise without a value for
        some input, bad ``derivative_params``, or an input whose name is a state's or a
        param's or whose values param does not have one value per knot.

    Examples
    --------
    >>> problem = SympyProblem(
    ...     params={"a": ()}, states={"x": ()},
    ...     rhs_sympy=lambda t, y, p: {"x": -p.a * y.x})
    >>> problem.n_states, problem.n_params
    (1, 1)
    """

    kind = "ode"

    def __init__(self, params, states, rhs_sympy, derivative_params=None, coords=None, inputs=None,
                 events=None, max_events=DEFAULT_MAX_EVENTS):
        p = self._init_params(params, derivative_params, coords)
        self._init_states(Layout(states, self.coords, "states"))
        u = self._init_inputs(inputs)
        # Every state of an ODE is differential (as DAEProblem names its states).
        self.differential_indices = np.arange(self.n_states, dtype=np.int64)
        self.n_differential = self.n_states
        self.state_symbols, y = symbols(self.states, "y")
        allowed = set(self.state_symbols) | set(self.param_symbols) | set(self.input_symbols) | {self.t_symbol}
        arguments = (self.t_symbol, y, p) if u is None else (self.t_symbol, y, p, u)
        self.rhs_exprs = flatten_exprs(call_model(rhs_sympy, "rhs_sympy", *arguments), self.states,
                                      "rhs_sympy", allowed)
        self.events = bound_events(events, self.t_symbol, y, p, self.state_symbols, self.states,
                                   set(self.state_symbols) | set(self.param_symbols) | {self.t_symbol})
        if isinstance(max_events, bool) or not isinstance(max_events, (int, np.integer)) or max_events < 1:
            raise ValueError(f"`max_events={max_events!r}` must be a positive int (the most events one "
                             f"solve may have before a SolverError).")
        self.max_events = int(max_events)
        self._init_model("ode", self.rhs_exprs, [self.state_symbols])
