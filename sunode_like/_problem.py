"""Named, shaped and nested states and parameters, and the sympy model over them.

A *spec* is a dict mapping names to shapes (``()``, ``3``, ``(2, 3)``, or dim names
from ``coords``) or to nested specs. Every leaf is a float64 array; the flat layout
used everywhere (solver buffers, gradients) lists the leaves depth first, in dict
order, each flattened in C order. The matching numpy structured dtype has the same
memory layout, so flat and structured views share memory.
"""
import copy
import hashlib
from dataclasses import dataclass

import numpy as np
import sympy

from ._validate import TO_PIECEWISE, checked_expression, real_array


@dataclass(frozen=True)
class Leaf:
    """One entry of a spec: its path, shape, dim names and slice of the flat vector."""

    path: tuple
    shape: tuple
    dims: tuple
    offset: int

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=int))

    @property
    def name(self):
        return ".".join(self.path)

    @property
    def slice(self):
        return slice(self.offset, self.offset + self.size)


class Layout:
    """The flat layout and structured dtype of a (nested) spec."""

    def __init__(self, spec, coords, what):
        self.what = what
        self.leaves = []
        self.dtype = self._walk(spec, (), coords or {})
        self.size = sum(leaf.size for leaf in self.leaves)
        self.by_path = {leaf.path: leaf for leaf in self.leaves}

    def _walk(self, spec, prefix, coords):
        if not isinstance(spec, dict):
            raise TypeError(f"`{self.what}` must be a dict of name -> shape; got {type(spec).__name__}.")
        fields = []
        for name, entry in spec.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"`{self.what}` names must be identifiers; got {name!r}.")
            path = prefix + (name,)
            if isinstance(entry, dict):
                fields.append((name, self._walk(entry, path, coords)))
                continue
            shape, dims = _parse_shape(entry, coords, f"{self.what}[{'.'.join(path)!r}]")
            offset = sum(leaf.size for leaf in self.leaves)
            self.leaves.append(Leaf(path, shape, dims, offset))
            fields.append((name, np.float64, shape))
        try:
            return np.dtype(fields)
        except ValueError as error:  # numpy limits a dtype to 2**31 bytes
            raise ValueError(f"`{self.what}` is too large for a numpy structured dtype ({error}).") from None

    def renamed(self, what):
        """The same layout, naming values ``what`` in error messages (e.g. "y0")."""
        layout = copy.copy(self)
        layout.what = what
        return layout

    def flatten(self, values, out=None):
        """A flat float64 vector from a nested dict of values (or a flat/structured array)."""
        out = np.empty(self.size) if out is None else out
        if isinstance(values, np.void):  # one record, e.g. as_structured(y_out)[0]
            values = np.asarray(values)
        if isinstance(values, np.ndarray) and values.dtype.names is not None:
            if values.dtype != self.dtype:
                raise ValueError(f"`{self.what}` has dtype {values.dtype}; expected {self.dtype}.")
            if values.size != 1:
                raise ValueError(f"`{self.what}` is a structured array of shape {values.shape}; expected "
                                 "one record (shape ()).")
            out[:] = values.reshape(()).view((np.float64, (self.size,))) if self.size else 0.0
            return out
        if not isinstance(values, dict):
            flat = real_array(self.what, values)
            if flat.shape != (self.size,):
                raise ValueError(
                    f"`{self.what}` has shape {flat.shape}; expected a dict or a flat vector "
                    f"of shape ({self.size},).")
            out[:] = flat
            return out
        self._check_names(values, self._subspec_paths(()), ())
        for leaf in self.leaves:
            value = values
            for key in leaf.path:
                value = value[key]
            value = real_array(f"{self.what}[{leaf.name!r}]", value)
            if value.shape != leaf.shape:
                raise ValueError(
                    f"`{self.what}[{leaf.name!r}]` has shape {value.shape}; expected {leaf.shape}.")
            out[leaf.slice] = value.ravel()
        return out

    def unflatten(self, flat):
        """A nested dict of arrays viewing the flat vector (no copies)."""
        result = {}
        for leaf in self.leaves:
            target = result
            for key in leaf.path[:-1]:
                target = target.setdefault(key, {})
            target[leaf.path[-1]] = flat[..., leaf.slice].reshape(flat.shape[:-1] + leaf.shape)
        return result

    def as_structured(self, flat):
        """View a (..., size) float64 array as a (...) structured array of ``dtype``."""
        flat = np.ascontiguousarray(flat, dtype=np.float64)
        return flat.view(self.dtype).reshape(flat.shape[:-1])

    def _subspec_paths(self, prefix):
        return {leaf.path[len(prefix)] for leaf in self.leaves if leaf.path[:len(prefix)] == prefix}

    def _check_names(self, values, expected, prefix):
        if not isinstance(values, dict):
            raise TypeError(f"`{self.what}[{'.'.join(prefix)!r}]` must be a dict; got {type(values).__name__}.")
        got = set(values)
        where = f"`{self.what}`" if not prefix else f"`{self.what}[{'.'.join(prefix)!r}]`"
        if got - expected:
            raise ValueError(f"{where} has unknown entries {sorted(got - expected)}; expected {sorted(expected)}.")
        if expected - got:
            raise ValueError(f"{where} is missing entries {sorted(expected - got)}.")
        for name in expected:
            path = prefix + (name,)
            if path not in self.by_path:
                self._check_names(values[name], self._subspec_paths(path), path)

    def resolve(self, path):
        """The leaves under a path given as a tuple or a dotted string."""
        if isinstance(path, str):
            path = tuple(path.split("."))
        path = tuple(path)
        leaves = [leaf for leaf in self.leaves if leaf.path[:len(path)] == path]
        if not path or not leaves:
            raise ValueError(f"`{self.what}` has no entry {'.'.join(path)!r}; "
                             f"entries are {[leaf.name for leaf in self.leaves]}.")
        return leaves


def _parse_shape(entry, coords, where):
    if isinstance(entry, (int, np.integer, str, np.bool_)):
        entry = (entry,)
    if not isinstance(entry, (tuple, list)):
        raise TypeError(f"{where} must be a shape (tuple of ints or dim names); got {entry!r}.")
    shape, dims = [], []
    for axis, size in enumerate(entry):
        if isinstance(size, str):
            if size not in coords:
                raise ValueError(f"{where} uses dim {size!r}, which is not in `coords` ({sorted(coords)}).")
            shape.append(len(coords[size]))
            dims.append(size)
        elif isinstance(size, (int, np.integer)) and not isinstance(size, (bool, np.bool_)) and size >= 0:
            shape.append(int(size))
            dims.append(None)
        else:
            raise ValueError(f"{where} has an invalid size {size!r} on axis {axis}.")
    return tuple(shape), tuple(dims)


def checked_coords(coords):
    """``coords`` as dim name -> 1-d array of coordinate values, or an error naming the dim."""
    if coords is None:
        return {}
    if not isinstance(coords, dict):
        raise TypeError(f"`coords` must be a dict of dim name -> coordinate values; got {type(coords).__name__}.")
    checked = {}
    for dim, values in coords.items():
        values = np.asarray(values)
        if not isinstance(dim, str) or values.ndim != 1:
            raise ValueError(f"`coords[{dim!r}]` must be a 1-d sequence of coordinate values under a str dim "
                             f"name; got {type(dim).__name__} {dim!r} -> shape {values.shape}.")
        checked[dim] = values
    return checked


def call_model(function, what, *args):
    """``function(*args)``, the user's sympy model called ``what`` ("rhs_sympy"), which must
    be callable."""
    if not callable(function):
        raise TypeError(f"`{what}` must be a function returning a dict of sympy expressions; got "
                        f"{type(function).__name__} {function!r}.")
    return function(*args)


class _Namespace:
    """Attribute and item access to the sympy symbols of a nested spec; ``what`` and
    ``path`` (e.g. "states", ("n",)) name it in the error for a missing entry."""

    def __init__(self, entries, what, path):
        self.__dict__.update(entries)
        self.__dict__[_WHERE] = (what, path)

    def __getitem__(self, key):
        if not isinstance(key, str) or key == _WHERE or key not in self.__dict__:
            raise KeyError(self._missing(key))
        return self.__dict__[key]

    def __getattr__(self, name):  # only called for names that are not entries
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(self._missing(name))

    def _missing(self, name):
        what, path = self.__dict__[_WHERE]
        entries = sorted(k for k in self.__dict__ if k != _WHERE)
        return f"`{what}` has no entry {'.'.join(path + (str(name),))!r}; entries here are {entries}."

    def __repr__(self):
        return f"Namespace({', '.join(k for k in self.__dict__ if k != _WHERE)})"


# The key under which a namespace keeps its own name: not an identifier, so no entry's.
_WHERE = "<where>"


def _symbols(layout, prefix):
    """Sympy symbols (real, never positive) for each flat entry, and the nested namespace.

    Raises a ValueError if two entries get the same symbol name (``k[0]`` and ``k_0`` are
    both ``p_k_0``): sympy would treat them as one symbol and the kernels would compute
    with the wrong entry's value.
    """
    flat = []
    tree = {}
    for leaf in layout.leaves:
        name = "_".join((prefix,) + leaf.path)
        if leaf.shape == ():
            syms = np.array(sympy.Symbol(name, real=True), dtype=object)
        else:
            syms = np.empty(leaf.shape, dtype=object)
            for index in np.ndindex(leaf.shape):
                syms[index] = sympy.Symbol(name + "_" + "_".join(map(str, index)), real=True)
        flat.extend(syms.ravel().tolist())
        target = tree
        for key in leaf.path[:-1]:
            target = target.setdefault(key, {})
        target[leaf.path[-1]] = syms[()] if leaf.shape == () else syms
    owners = {}
    for symbol, entry in zip(flat, entry_names(layout)):
        if symbol in owners:
            raise ValueError(
                f"`{layout.what}` entries {owners[symbol]!r} and {entry!r} both become the sympy symbol "
                f"{symbol}, so the model could not tell them apart. Rename one of them.")
        owners[symbol] = entry

    def wrap(node, path):
        return _Namespace({k: wrap(v, path + (k,)) if isinstance(v, dict) else v for k, v in node.items()},
                          layout.what, path)

    return flat, wrap(tree, ())


def entry_names(layout):
    """'name' or 'name[i, j]' for each flat entry of a layout."""
    names = []
    for leaf in layout.leaves:
        if leaf.shape == ():
            names.append(leaf.name)
        else:
            names += [f"{leaf.name}[{', '.join(map(str, index))}]" for index in np.ndindex(leaf.shape)]
    return names


def flatten_exprs(result, layout, what, allowed, to_piecewise=TO_PIECEWISE):
    """Flat sympy expressions from the dict ``result`` shaped like ``layout``, each checked
    by `checked_expression` (and rewritten as the kernels need, ``to_piecewise`` as there)
    with only ``allowed`` symbols; ``what`` names the user's function ("rhs_sympy") in errors."""
    if not isinstance(result, dict):
        raise TypeError(f"`{what}` must return a dict like `{layout.what}`; got {type(result).__name__}.")
    try:
        layout._check_names(result, layout._subspec_paths(()), ())
    except (ValueError, TypeError) as error:
        raise type(error)(f"`{what}` must return entries matching `{layout.what}`: {error}") from None
    exprs = []
    names = iter(entry_names(layout))
    for leaf in layout.leaves:
        value = result
        for key in leaf.path:
            value = value[key]
        if isinstance(value, sympy.MatrixBase) and len(leaf.shape) == 1 and 1 in value.shape:
            value = list(value)  # a column or row vector for a 1-d entry
        array = np.asarray(value, dtype=object)
        if array.shape != leaf.shape:
            raise ValueError(f"`{what}` returned shape {array.shape} for {leaf.name!r}; "
                             f"expected {leaf.shape} (the shape of `{layout.what}[{leaf.name!r}]`).")
        for expr in array.ravel():
            where = f"{what}[{next(names)!r}]"
            try:
                expr = sympy.sympify(expr, strict=True)
            except sympy.SympifyError:
                raise TypeError(f"`{where}` must be a sympy expression or a number; got "
                                f"{type(expr).__name__} {expr!r}.") from None
            unknown = expr.free_symbols - allowed
            if unknown:
                raise ValueError(f"`{what}` for {leaf.name!r} uses unknown symbols {sorted(map(str, unknown))}.")
            exprs.append(checked_expression(expr, where, to_piecewise))
    return exprs


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


def used_params(exprs, param_symbols):
    """Whether any of ``exprs`` depends on a param (else solving needs no set_params)."""
    return any(set(param_symbols) & e.free_symbols for e in exprs)


def content_hash(kind, exprs, symbol_lists, layouts, derivative_indices):
    """A hash of everything a problem's kernels depend on. The code generator numbers states
    and params by position, so their names, order, shapes and nesting count, not only the
    expressions' text."""
    parts = [kind, sympy.srepr(exprs), [[str(s) for s in symbols] for symbols in symbol_lists],
             [layout.dtype.descr for layout in layouts], derivative_indices.tolist()]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:24]


class SympyProblem:
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
        self.coords = checked_coords(coords)
        self.params = Layout(params, self.coords, "params")
        self.states = Layout(states, self.coords, "states")
        if self.states.size == 0:
            raise ValueError("`states` must have at least one entry.")
        self.state_dtype = self.states.dtype
        self.params_dtype = self.params.dtype
        self.n_states = self.states.size
        self.n_params = self.params.size
        self.derivative_params, self.derivative_indices = derivative_params_in_order(
            self.params, derivative_params)
        self.n_dparams = len(self.derivative_indices)
        # Every state of an ODE is differential (as DAEProblem names its states).
        self.differential_indices = np.arange(self.n_states, dtype=np.int64)
        self.n_differential = self.n_states

        self.t_symbol = sympy.Symbol("t", real=True)
        self.state_symbols, y = _symbols(self.states, "y")
        self.param_symbols, p = _symbols(self.params, "p")
        allowed = set(self.state_symbols) | set(self.param_symbols) | {self.t_symbol}
        self.rhs_exprs = flatten_exprs(call_model(rhs_sympy, "rhs_sympy", self.t_symbol, y, p), self.states,
                                      "rhs_sympy", allowed)
        self.uses_params = used_params(self.rhs_exprs, self.param_symbols)
        self.content_hash = content_hash(
            "ode", self.rhs_exprs, (self.state_symbols, self.param_symbols, [self.t_symbol]),
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
