"""Symbolic derivatives of a model: the sparse Jacobian df/dy and df/dp.

Both are returned as CSC patterns with one sympy expression per stored entry, so that
one compiled kernel per derivative serves the dense, band, sparse and Krylov solvers,
the forward sensitivities (s' = J s + df/dp) and the adjoint (lambda' = -J^T lambda,
q' = lambda^T df/dp).
"""
from dataclasses import dataclass

import numpy as np
import sympy


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


def sparse_jacobian(exprs, symbols):
    """d exprs / d symbols as a SparseExpr, differentiating only where a symbol occurs."""
    position = {s: j for j, s in enumerate(symbols)}
    entries = []
    for i, expr in enumerate(exprs):
        for sym in expr.free_symbols:
            j = position.get(sym)
            if j is None:
                continue
            derivative = sympy.diff(expr, sym)
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
