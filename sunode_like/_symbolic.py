"""Symbolic derivatives of a model: the sparse Jacobian df/dy and df/dp.

Both are returned as CSC patterns with one sympy expression per stored entry, so that
one compiled kernel per derivative serves the dense, band, sparse and Krylov solvers,
the forward sensitivities (s' = J s + df/dp) and the adjoint (lambda' = -J^T lambda,
q' = lambda^T df/dp).
"""
from dataclasses import dataclass

import numpy as np
import sympy
from sympy.core.function import ArgumentIndexError


@dataclass
class SparseExpr:
    """A matrix in CSC form: column j holds entries colptr[j]:colptr[j+1] at rows[k]."""

    shape: tuple
    colptr: np.ndarray
    rows: np.ndarray
    values: list

    def transpose_pattern(self):
        """(colptr, rows, perm) of the transpose; entry k of it is values[perm[k]]."""
        n_rows, n_cols = self.shape
        cols = np.repeat(np.arange(n_cols), np.diff(self.colptr))
        perm = np.lexsort((cols, self.rows)).astype(np.int64)
        colptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.add.at(colptr, self.rows + 1, 1)
        return np.cumsum(colptr), cols[perm].astype(np.int64), perm

    def bandwidths(self):
        """(upper, lower) bandwidths of the pattern."""
        cols = np.repeat(np.arange(self.shape[1]), np.diff(self.colptr))
        offsets = cols - self.rows
        return (int(max(offsets.max(initial=0), 0)), int(max(-offsets.min(initial=0), 0)))


class Differentiator:
    """Partial derivatives of expressions that share subexpressions, each node's
    derivative computed once.

    Sums, products, powers with constant exponents and functions (through their
    ``fdiff``) are differentiated here, which skips most of the work of ``sympy.diff``
    (the ``Derivative`` machinery, assumption queries on every intermediate); anything
    else (Piecewise, powers with a variable exponent, ...) goes to ``sympy.diff``.
    """

    def __init__(self):
        self._symbols = {}
        self._derivatives = {}

    def symbols(self, expr):
        """The symbols ``expr`` depends on (memoised ``free_symbols``)."""
        found = self._symbols.get(expr)
        if found is None:
            if expr.is_Symbol:
                found = frozenset((expr,))
            elif expr.is_Atom:
                found = frozenset()
            else:
                found = frozenset().union(*(self.symbols(arg) for arg in expr.args))
            self._symbols[expr] = found
        return found

    def diff(self, expr, symbol):
        """d expr / d symbol."""
        if symbol not in self.symbols(expr):
            return sympy.S.Zero
        if expr is symbol:
            return sympy.S.One
        key = (expr, symbol)
        found = self._derivatives.get(key)
        if found is None:
            found = self._derivatives[key] = self._rule(expr, symbol)
        return found

    def _rule(self, expr, symbol):
        args = expr.args
        if expr.is_Add:
            return sympy.Add(*(self.diff(arg, symbol) for arg in args))
        if expr.is_Mul:
            return sympy.Add(*(sympy.Mul(*args[:i], self.diff(arg, symbol), *args[i + 1:])
                               for i, arg in enumerate(args) if symbol in self.symbols(arg)))
        if expr.is_Pow and symbol not in self.symbols(args[1]):
            base, exponent = args
            return exponent * base ** (exponent - 1) * self.diff(base, symbol)
        if isinstance(expr, sympy.Function) and not isinstance(expr, sympy.Piecewise):
            try:
                return sympy.Add(*(expr.fdiff(i + 1) * self.diff(arg, symbol)
                                   for i, arg in enumerate(args) if symbol in self.symbols(arg)))
            except (ArgumentIndexError, NotImplementedError, TypeError):
                pass
        return sympy.diff(expr, symbol)


def sparse_jacobian(exprs, symbols, differentiator=None):
    """d exprs / d symbols as a SparseExpr, differentiating only where a symbol occurs."""
    d = differentiator or Differentiator()
    position = {s: j for j, s in enumerate(symbols)}
    entries = []
    for i, expr in enumerate(exprs):
        for sym in d.symbols(expr):
            j = position.get(sym)
            if j is None:
                continue
            derivative = d.diff(expr, sym)
            if derivative != 0:
                entries.append((j, i, derivative))
    entries.sort(key=lambda e: (e[0], e[1]))
    colptr = np.zeros(len(symbols) + 1, dtype=np.int64)
    for j, _, _ in entries:
        colptr[j + 1] += 1
    return SparseExpr(
        shape=(len(exprs), len(symbols)),
        colptr=np.cumsum(colptr),
        rows=np.array([i for _, i, _ in entries], dtype=np.int64),
        values=[e for _, _, e in entries],
    )
