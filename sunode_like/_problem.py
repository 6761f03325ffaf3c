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
        return np.dtype(fields)

    def renamed(self, what):
        """The same layout, naming values ``what`` in error messages (e.g. "y0")."""
        layout = copy.copy(self)
        layout.what = what
        return layout

    def flatten(self, values, out=None):
        """A flat float64 vector from a nested dict of values (or a flat/structured array)."""
        out = np.empty(self.size) if out is None else out
        if isinstance(values, np.ndarray) and values.dtype.names is not None:
            if values.dtype != self.dtype:
                raise ValueError(f"`{self.what}` has dtype {values.dtype}; expected {self.dtype}.")
            out[:] = values.reshape(()).view((np.float64, (self.size,))) if self.size else 0.0
            return out
        if not isinstance(values, dict):
            flat = np.asarray(values, dtype=np.float64)
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
            value = np.asarray(value, dtype=np.float64)
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
    if isinstance(entry, (int, np.integer, str)):
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
        elif isinstance(size, (int, np.integer)) and size >= 0:
            shape.append(int(size))
            dims.append(None)
        else:
            raise ValueError(f"{where} has an invalid size {size!r} on axis {axis}.")
    return tuple(shape), tuple(dims)


class _Namespace:
    """Attribute and item access to the sympy symbols of a nested spec."""

    def __init__(self, entries):
        self.__dict__.update(entries)

    def __getitem__(self, key):
        return self.__dict__[key]

    def __repr__(self):
        return f"Namespace({', '.join(self.__dict__)})"


def _symbols(layout, prefix):
    """Sympy symbols (real, never positive) for each flat entry, and the nested namespace."""
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

    def wrap(node):
        return _Namespace({k: wrap(v) if isinstance(v, dict) else v for k, v in node.items()})

    return flat, wrap(tree)


class SympyProblem:
    """An ODE dy/dt = f(t, y, p) written in sympy over named, shaped states and params.

    Parameters
    ----------
    params, states : dict
        Name -> shape (or nested dict). Shapes are tuples of ints or of dim names in ``coords``.
    rhs_sympy : callable
        ``rhs_sympy(t, y, p) -> dict`` with the same structure as ``states``; ``y.hares``,
        ``p.k[0]`` are sympy expressions (symbols are real, not positive).
    derivative_params : list of paths, optional
        The params gradients and sensitivities are taken with respect to, as tuples
        (``("alpha",)``) or dotted strings; default: every param. Their flat layout
        follows this list's order.
    coords : dict, optional
        Dim name -> coordinate values, for named dims and the xarray output.

    Examples
    --------
    >>> problem = SympyProblem(
    ...     params={"a": ()}, states={"x": ()},
    ...     rhs_sympy=lambda t, y, p: {"x": -p.a * y.x})
    >>> problem.n_states, problem.n_params
    (1, 1)
    """

    def __init__(self, params, states, rhs_sympy, derivative_params=None, coords=None):
        self.coords = {k: np.asarray(v) for k, v in (coords or {}).items()}
        self.params = Layout(params, self.coords, "params")
        self.states = Layout(states, self.coords, "states")
        if self.states.size == 0:
            raise ValueError("`states` must have at least one entry.")
        self.state_dtype = self.states.dtype
        self.params_dtype = self.params.dtype
        self.n_states = self.states.size
        self.n_params = self.params.size
        paths = [leaf.path for leaf in self.params.leaves] if derivative_params is None else derivative_params
        self.derivative_params = [tuple(p.split(".")) if isinstance(p, str) else tuple(p) for p in paths]
        leaves = [leaf for path in self.derivative_params for leaf in self.params.resolve(path)]
        self.derivative_indices = np.array(
            [i for leaf in leaves for i in range(leaf.offset, leaf.offset + leaf.size)], dtype=np.int64)
        if len(set(self.derivative_indices.tolist())) != len(self.derivative_indices):
            raise ValueError(f"`derivative_params` lists an entry twice: {self.derivative_params}.")
        self.n_dparams = len(self.derivative_indices)

        self.t_symbol = sympy.Symbol("t", real=True)
        self.state_symbols, y = _symbols(self.states, "y")
        self.param_symbols, p = _symbols(self.params, "p")
        rhs = rhs_sympy(self.t_symbol, y, p)
        self.rhs_exprs = self._flatten_rhs(rhs)
        self.content_hash = hashlib.sha256(
            sympy.srepr(self.rhs_exprs).encode() + self.derivative_indices.tobytes()
            + repr((self.n_states, self.n_params)).encode()).hexdigest()[:24]

    def _flatten_rhs(self, rhs):
        if not isinstance(rhs, dict):
            raise TypeError(f"`rhs_sympy` must return a dict like `states`; got {type(rhs).__name__}.")
        exprs = []
        self.states._check_names(rhs, self.states._subspec_paths(()), ())
        for leaf in self.states.leaves:
            value = rhs
            for key in leaf.path:
                value = value[key]
            if isinstance(value, sympy.MatrixBase) and len(leaf.shape) == 1 and 1 in value.shape:
                value = list(value)  # a column or row vector for a 1-d state
            array = np.asarray(value, dtype=object)
            if array.shape != leaf.shape:
                raise ValueError(f"`rhs_sympy` returned shape {array.shape} for state "
                                 f"{leaf.name!r}; expected {leaf.shape}.")
            for expr in array.ravel():
                expr = sympy.sympify(expr)
                unknown = expr.free_symbols - set(self.state_symbols) - set(self.param_symbols) - {self.t_symbol}
                if unknown:
                    raise ValueError(f"`rhs_sympy` for state {leaf.name!r} uses unknown symbols "
                                     f"{sorted(map(str, unknown))}.")
                exprs.append(expr)
        return exprs

    def solution_to_xarray(self, tvals, y_out):
        """An xarray Dataset with one variable per state, over ``time`` and the state's dims."""
        import xarray as xr

        data_vars, coords = {}, {"time": np.asarray(tvals)}
        for leaf in self.states.leaves:
            dims = ["time"] + [d or f"{leaf.name}_dim_{i}" for i, d in enumerate(leaf.dims)]
            data_vars[leaf.name] = (dims, y_out[:, leaf.slice].reshape((len(tvals),) + leaf.shape))
            coords.update({d: self.coords[d] for d in leaf.dims if d})
        return xr.Dataset(data_vars, coords=coords)
