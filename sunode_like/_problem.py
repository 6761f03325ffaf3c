"""Problems: the sympy model over named, shaped states and params. `AbstractProblem` holds
what ODE and DAE problems share; `SympyProblem` is the ODE dy/dt = f(t, y, p).
"""
import hashlib

import numpy as np
import sympy

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


def content_hash(kind, exprs, symbol_lists, layouts, derivative_indices):
    """A hash of everything a problem's kernels depend on. The code generator numbers states
    and params by position, so their names, order, shapes and nesting count, not only the
    expressions' text."""
    parts = [kind, sympy.srepr(exprs), [[str(s) for s in symbols] for symbols in symbol_lists],
             [layout.dtype.descr for layout in layouts], derivative_indices.tolist()]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:24]


class AbstractProblem:
    """What ODE and DAE problems share: the params and states layouts, the derivative params,
    the symbols, the model's content hash and the xarray view of a solution.

    Subclasses call `_init_params`, then `_init_states` (before calling the user's model, so
    that an empty spec is named before the model fails on it), then `_init_model`.
    """

    kind = None

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
        self.uses_params = any(set(self.param_symbols) & e.free_symbols for e in exprs)
        self.content_hash = content_hash(label, exprs, (*symbol_lists, self.param_symbols, [self.t_symbol]),
                                         (self.states, self.params), self.derivative_indices)

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

    Raises
    ------
    ValueError, TypeError
        Naming the entry, for bad specs, an rhs of the wrong shape or with unknown symbols,
        a function or number the kernels cannot compute, a Piecewise without a value for
        some input, or bad ``derivative_params``.

    Examples
    --------
    >>> problem = SympyProblem(
    ...     params={"a": ()}, states={"x": ()},
    ...     rhs_sympy=lambda t, y, p: {"x": -p.a * y.x})
    >>> problem.n_states, problem.n_params
    (1, 1)
    """

    kind = "ode"

    def __init__(self, params, states, rhs_sympy, derivative_params=None, coords=None):
        p = self._init_params(params, derivative_params, coords)
        self._init_states(Layout(states, self.coords, "states"))
        # Every state of an ODE is differential (as DAEProblem names its states).
        self.differential_indices = np.arange(self.n_states, dtype=np.int64)
        self.n_differential = self.n_states
        self.state_symbols, y = symbols(self.states, "y")
        allowed = set(self.state_symbols) | set(self.param_symbols) | {self.t_symbol}
        self.rhs_exprs = flatten_exprs(call_model(rhs_sympy, "rhs_sympy", self.t_symbol, y, p), self.states,
                                      "rhs_sympy", allowed)
        self._init_model("ode", self.rhs_exprs, [self.state_symbols])
