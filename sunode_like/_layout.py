"""Named, shaped and nested values: the flat layout of states and params, and their symbols.

A *spec* is a dict mapping names to shapes (``()``, ``3``, ``(2, 3)``, or dim names
from ``coords``) or to nested specs. Every leaf is a float64 array; the flat layout
used everywhere (solver buffers, gradients) lists the leaves depth first, in dict
order, each flattened in C order. The matching numpy structured dtype has the same
memory layout, so flat and structured views share memory.
"""
import copy
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
        self.check_names(values)
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

    def names_under(self, prefix=()):
        """The names of the entries directly under the path ``prefix`` (a tuple)."""
        return {leaf.path[len(prefix)] for leaf in self.leaves if leaf.path[:len(prefix)] == prefix}

    def check_names(self, values, prefix=()):
        """A ValueError/TypeError unless the nested dict ``values`` has exactly the entries
        of the spec under ``prefix``."""
        expected = self.names_under(prefix)
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
                self.check_names(values[name], path)

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


def symbols(layout, prefix):
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
        layout.check_names(result)
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
