"""Symbolic derivatives of a model: the sparse Jacobian df/dy and df/dp, and for DAEs
the patterns IDAS needs.

Derivatives are returned as CSC patterns with one sympy expression per stored entry, so
that one compiled kernel per derivative serves the dense, band, sparse and Krylov solvers,
the forward sensitivities (s' = J s + df/dp) and the adjoint (lambda' = -J^T lambda,
q' = lambda^T df/dp). `ode_derivatives` and `dae_derivatives` give everything the code
generator writes for a problem, over plain symbols ``t``, ``y_i``, ``yp_i``, ``p_i``.
"""
from dataclasses import dataclass

import numpy as np
import sympy
from sympy.core.function import ArgumentIndexError

from . import _events


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

    def union(self, other):
        """The union of two patterns of one shape, as a SparseExpr without values, and
        where each entry of self and of other sits in it (two int64 arrays)."""
        entries_self, entries_other = self._entries(), other._entries()
        entries = sorted(set(entries_self) | set(entries_other))
        position = {entry: k for k, entry in enumerate(entries)}
        colptr = np.zeros(self.shape[1] + 1, dtype=np.int64)
        np.add.at(colptr, np.array([c for c, _ in entries], dtype=np.int64) + 1, 1)
        union = SparseExpr(self.shape, np.cumsum(colptr), np.array([r for _, r in entries], dtype=np.int64),
                           [None] * len(entries))
        return union, *(np.array([position[e] for e in mine], dtype=np.int64)
                        for mine in (entries_self, entries_other))

    def _entries(self):
        """(column, row) of each stored entry, in storage order."""
        cols = np.repeat(np.arange(self.shape[1]), np.diff(self.colptr))
        return list(zip(cols.tolist(), self.rows.tolist()))

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


def sparse_jacobian(exprs, symbols, differentiator=None, through=None):
    """d exprs / d symbols as a SparseExpr, differentiating only where a symbol occurs.

    ``through`` maps intermediate symbols v (an input u(t)) to lists of (j, dv/dsymbols[j]):
    the exprs depend on those symbols also through v, and get the chain rule's terms."""
    d = differentiator or Differentiator()
    position = {s: j for j, s in enumerate(symbols)}
    through = through or {}
    entries = {}
    for i, expr in enumerate(exprs):
        for sym in d.symbols(expr):
            terms = [(position[sym], sympy.S.One)] if sym in position else through.get(sym, ())
            derivative = d.diff(expr, sym) if terms else 0
            if derivative == 0:
                continue
            for j, factor in terms:
                entries[j, i] = entries.get((j, i), sympy.S.Zero) + derivative * factor
    keys = sorted(entries)
    colptr = np.zeros(len(symbols) + 1, dtype=np.int64)
    for j, _ in keys:
        colptr[j + 1] += 1
    return SparseExpr(
        shape=(len(exprs), len(symbols)),
        colptr=np.cumsum(colptr),
        rows=np.array([i for _, i in keys], dtype=np.int64),
        values=[entries[key] for key in keys],
    )


def _plain_symbols(prefix, n):
    return [sympy.Symbol(f"{prefix}_{i}", real=True) for i in range(n)]


@dataclass
class InputSymbols:
    """The plain symbols of a problem's inputs (`_interpolation`): ``u[j]`` = u_j(t),
    ``du[j]`` = du_j/dt and ``phi[j][k]`` = phi_jk(t) = du_j/dv_jk, the values v_j being
    params, so that d/dp of a model through u_j is d/du_j * phi_jk (``through``)."""

    u: list
    du: list
    phi: list
    through: dict

    @classmethod
    def of(cls, problem):
        u, du = _plain_symbols("u", len(problem.inputs)), _plain_symbols("du", len(problem.inputs))
        phi = [_plain_symbols(f"phi{j}", bound.spec.n_knots) for j, bound in enumerate(problem.inputs)]
        column = {int(index): c for c, index in enumerate(problem.derivative_indices)}
        through = {u[j]: [(column[bound.offset + k], phi[j][k]) for k in range(bound.spec.n_knots)
                          if bound.offset + k in column] for j, bound in enumerate(problem.inputs)}
        return cls(u, du, phi, through)

    def time_derivative(self, d, expr, t):
        """d expr / dt, through the inputs too."""
        return d.diff(expr, t) + sympy.Add(*(d.diff(expr, u) * du for u, du in zip(self.u, self.du)))


@dataclass
class OdeDerivatives:
    """dy/dt = rhs(t, y, p) over the symbols t, y_i, p_i (and the inputs' u_j); ``jac`` =
    d rhs/dy and ``dfdp`` = d rhs/d(derivative params) (through the inputs too) as
    SparseExpr."""

    t: sympy.Symbol
    y: list
    p: list
    rhs: list
    jac: SparseExpr
    dfdp: SparseExpr
    inputs: InputSymbols
    events: dict


def ode_derivatives(problem):
    """The `OdeDerivatives` of a SympyProblem."""
    t, y, p = sympy.Symbol("t", real=True), _plain_symbols("y", problem.n_states), _plain_symbols("p", problem.n_params)
    inputs = InputSymbols.of(problem)
    rename = dict(zip(problem.state_symbols, y)) | dict(zip(problem.param_symbols, p)) | {problem.t_symbol: t}
    rename |= dict(zip(problem.input_symbols, inputs.u))
    rhs = [expr.xreplace(rename) for expr in problem.rhs_exprs]
    d = Differentiator()
    dparams = [p[i] for i in problem.derivative_indices]
    return OdeDerivatives(t, y, p, rhs, sparse_jacobian(rhs, y, d), sparse_jacobian(rhs, dparams, d, inputs.through),
                          inputs, event_kernels(problem, rename, t, y, dparams, d))


def event_kernels(problem, rename, t, y, dparams, d):
    """The expressions of the event kernels (none without events): ``event_g`` (g_i),
    ``event_h`` (the values the resets set, `_events.event_exprs`), and their dense
    derivatives ``event_g_jac``, ``event_h_jac`` ([d/dt, d/dy, d/d(derivative params)] per
    expression)."""
    if not problem.events:
        return {}
    g, h, _, _ = _events.event_exprs(problem.events, rename)
    return {"event_g": g, "event_g_jac": _events.event_jacobian(g, t, y, dparams, d),
            "event_h": h, "event_h_jac": _events.event_jacobian(h, t, y, dparams, d)}


@dataclass
class DaeDerivatives:
    """0 = res(t, y, y', p) over the symbols t, y_i, yp_i, p_i, and what IDAS needs of it.

    ``jac_y``, ``jac_yp`` (dF/dy, dF/dy'), ``dfdp`` (dF/d(derivative params)): SparseExpr;
    ``jac_yp_dot`` (d/dt dF/dy' = dF/dy'_t + sum_j dF/dy'_{y_j} y'_j, on jac_yp's pattern)
    and ``dfdt`` (dF/dt): lists. ``union`` is the pattern P of dF/dy and dF/dy' together,
    ``jac_y_map`` / ``jac_yp_map`` the position in P of each of their entries.
    ``jac_yp_constant``: dF/dy' depends on the params only; ``jac_yp_identity``: it is the
    identity on the differential equations (``problem.equation_id``);
    ``jac_yp_depends_on_yp``: F is not linear in y'.
    """

    t: sympy.Symbol
    y: list
    yp: list
    p: list
    inputs: InputSymbols
    res: list
    jac_y: SparseExpr
    jac_yp: SparseExpr
    jac_yp_dot: list
    dfdp: SparseExpr
    dfdt: list
    union: SparseExpr
    jac_y_map: np.ndarray
    jac_yp_map: np.ndarray
    jac_yp_constant: bool
    jac_yp_identity: bool
    jac_yp_depends_on_yp: bool


def dae_derivatives(problem):
    """The `DaeDerivatives` of a DAEProblem."""
    n = problem.n_states
    t, y, yp = sympy.Symbol("t", real=True), _plain_symbols("y", n), _plain_symbols("yp", n)
    p = _plain_symbols("p", problem.n_params)
    inputs = InputSymbols.of(problem)
    rename = dict(zip(problem.state_symbols, y)) | dict(zip(problem.yp_symbols, yp))
    rename |= dict(zip(problem.param_symbols, p)) | {problem.t_symbol: t} | dict(zip(problem.input_symbols, inputs.u))
    res = [expr.xreplace(rename) for expr in problem.residual_exprs]
    d = Differentiator()
    jy, jyp = sparse_jacobian(res, y, d), sparse_jacobian(res, yp, d)
    dfdp = sparse_jacobian(res, [p[i] for i in problem.derivative_indices], d, inputs.through)
    dfdt = [inputs.time_derivative(d, expr, t) for expr in res]
    # dF/dy' changes along the solution only through t and y (F linear in y' is checked by
    # the adjoint solver); its time derivative enters the adjoint residual.
    jyp_dot = [inputs.time_derivative(d, v, t)
               + sympy.Add(*(d.diff(v, y[j]) * yp[j] for j in range(n) if y[j] in d.symbols(v)))
               for v in jyp.values]
    jyp_cols = np.repeat(np.arange(n), np.diff(jyp.colptr))
    identity = (len(jyp.values) == int(np.sum(problem.equation_id)) and bool(np.all(jyp_cols == jyp.rows))
                and all(v == 1 for v in jyp.values))
    union, jy_map, jyp_map = jy.union(jyp)
    return DaeDerivatives(
        t, y, yp, p, inputs, res, jy, jyp, jyp_dot, dfdp, dfdt, union, jy_map, jyp_map,
        jac_yp_constant=all(v.free_symbols <= set(p) for v in jyp.values), jac_yp_identity=identity,
        jac_yp_depends_on_yp=any(v.free_symbols & set(yp) for v in jyp.values))
