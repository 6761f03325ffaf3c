"""DAEs written in sympy over named, shaped states and params: semi-explicit or implicit.

Both forms become one residual F(t, y, y', p) = 0 over the flat state vector y:
- semi-explicit index 1: differential states x with x' = f(t, x, z, p) and algebraic
  states z with 0 = g(t, x, z, p); y = [x, z] and F = [x' - f, g];
- fully implicit: F(t, y, y', p) given directly (covers mass-matrix systems M y' = f).
A state is *differential* if some y'_j occurs in F, otherwise *algebraic*; an equation is
differential if it contains some y', otherwise algebraic. The solvers need index 1: the
algebraic equations determine the algebraic states (dF_alg/dz nonsingular) and the
differential equations determine y' of the differential states (dF_diff/dx' nonsingular).
Both are checked structurally here, before any code is generated.
"""
import numpy as np
import sympy

from ._layout import Layout, entry_names, flatten_exprs, symbols
from ._problem import AbstractProblem, call_model
from ._validate import TO_PIECEWISE_TWICE_DIFFERENTIABLE as TO_PIECEWISE


def _unmatched(dependencies):
    """Rows (lists of column indices) left unmatched by a maximum bipartite matching
    (Kuhn's augmenting paths): empty iff the pattern is structurally nonsingular."""
    owner = {}

    def augment(row, seen):
        for col in dependencies[row]:
            if col not in seen:
                seen.add(col)
                if col not in owner or augment(owner[col], seen):
                    owner[col] = row
                    return True
        return False

    return [row for row in range(len(dependencies)) if not augment(row, set())]


class DAEProblem(AbstractProblem):
    """A DAE F(t, y, y', p) = 0 written in sympy, in semi-explicit or implicit form.

    Semi-explicit index-1 form (give ``differential_states``, ``algebraic_states``,
    ``rhs_sympy``, ``algebraic_sympy``)::

        x' = f(t, x, z, p)      rhs_sympy(t, x, z, p) -> {differential state: f}
        0  = g(t, x, z, p)      algebraic_sympy(t, x, z, p) -> {algebraic state: g}

    The flat state vector is y = [x, z] (differential states first) and F = [x' - f, g].
    ``algebraic_sympy`` returns one equation per algebraic state, keyed and shaped like
    ``algebraic_states``; the keys only fix the count and shapes (which equation "belongs"
    to which state does not matter), but dg/dz must be nonsingular (index 1). (The name
    avoids "constraints", which the solvers use for IDAS' sign constraints.)

    Implicit form (give ``states`` and ``residual_sympy``)::

        0 = F(t, y, y', p)      residual_sympy(t, y, yp, p) -> {state: F}

    one equation per state entry, keyed like ``states`` (again only for shapes). States
    whose y' occurs nowhere are algebraic. For adjoints F must be linear in y'.

    Parameters
    ----------
    params : dict
        Name -> shape (or nested dict), as for `SympyProblem`.
    differential_states, algebraic_states : dict
        Specs of x and z (semi-explicit form); names must differ.
    rhs_sympy, algebraic_sympy : callable
        f and g as above (semi-explicit form).
    states : dict
        Spec of y (implicit form).
    residual_sympy : callable
        F as above (implicit form); ``yp`` has the structure of ``states``.
    derivative_params : list of paths, optional
        Params gradients are taken for (default: all), as for `SympyProblem`.
    coords : dict, optional
        Dim name -> coordinate values.
    inputs : dict, optional
        Name -> `Interpolated`, as for `SympyProblem`; the models then take ``u`` as their
        last argument (``rhs_sympy(t, x, z, p, u)``, ``residual_sympy(t, y, yp, p, u)``).

    Attributes
    ----------
    states : Layout
        The flat layout of y (semi-explicit: x then z).
    is_differential : (n_states,) bool array
        Which states are differential; ``differential_indices``, ``algebraic_indices``
        are their flat indices, ``n_differential``, ``n_algebraic`` their counts.
    equation_id : (n_states,) float array
        1.0 for differential equations, 0.0 for algebraic ones.
    equation_names : list of str
        Each equation as error messages name it, e.g. ``"algebraic_sympy['y3']"``.

    Raises
    ------
    ValueError
        If shapes or names do not match, an algebraic equation depends on no algebraic
        state, or the system is structurally not index 1 (e.g. index 2); or, naming the
        equation, if it uses a function or number the kernels cannot compute (as for
        `SympyProblem`; here Abs, Min and Max also become Piecewise, since d/dt dF/dy' is a
        second derivative).

    Examples
    --------
    >>> problem = DAEProblem(                                   # doctest: +SKIP
    ...     params={"k1": (), "k2": (), "k3": ()},
    ...     differential_states={"y1": (), "y2": ()}, algebraic_states={"y3": ()},
    ...     rhs_sympy=lambda t, x, z, p: {
    ...         "y1": -p.k1 * x.y1 + p.k3 * x.y2 * z.y3,
    ...         "y2": p.k1 * x.y1 - p.k3 * x.y2 * z.y3 - p.k2 * x.y2**2},
    ...     algebraic_sympy=lambda t, x, z, p: {"y3": x.y1 + x.y2 + z.y3 - 1})
    """

    kind = "dae"

    def __init__(self, params, differential_states=None, algebraic_states=None, rhs_sympy=None,
                 algebraic_sympy=None, *, states=None, residual_sympy=None, derivative_params=None,
                 coords=None, inputs=None):
        semi = (differential_states, algebraic_states, rhs_sympy, algebraic_sympy)
        if residual_sympy is not None or states is not None:
            if any(arg is not None for arg in semi):
                raise ValueError("Give either `states` and `residual_sympy` (implicit form) or "
                                 "`differential_states`, `algebraic_states`, `rhs_sympy` and "
                                 "`algebraic_sympy` (semi-explicit form), not both.")
            if residual_sympy is None or states is None:
                raise ValueError("The implicit form needs both `states` and `residual_sympy`.")
            self.form = "implicit"
        else:
            missing = [name for name, arg in zip(("differential_states", "algebraic_states", "rhs_sympy",
                                                  "algebraic_sympy"), semi) if arg is None]
            if missing:
                raise ValueError(f"The semi-explicit form is missing {missing} (or give `states` and "
                                 "`residual_sympy` for the implicit form).")
            self.form = "semi-explicit"
        p = self._init_params(params, derivative_params, coords)
        if self.form == "semi-explicit":
            self._init_semi_explicit(differential_states, algebraic_states, rhs_sympy, algebraic_sympy, p, inputs)
        else:
            self._init_implicit(states, residual_sympy, p, inputs)
        self._check_index_one()
        self._init_model("dae " + self.form, self.residual_exprs, [self.state_symbols, self.yp_symbols])

    # -- construction ---------------------------------------------------------------------
    def _init_semi_explicit(self, differential_states, algebraic_states, rhs_sympy, algebraic_sympy, p, inputs):
        self.differential = Layout(differential_states, self.coords, "differential_states")
        self.algebraic = Layout(algebraic_states, self.coords, "algebraic_states")
        both = set(differential_states) & set(algebraic_states)
        if both:
            raise ValueError(f"`differential_states` and `algebraic_states` share the names {sorted(both)}.")
        self._init_states(Layout({**differential_states, **algebraic_states}, self.coords, "states"))
        u = self._init_inputs(inputs)
        x_flat, x = symbols(self.differential, "y")
        z_flat, z = symbols(self.algebraic, "z")
        self.state_symbols = x_flat + z_flat
        self.yp_symbols = [sympy.Symbol(f"yp_{i}", real=True) for i in range(len(self.state_symbols))]
        allowed = set(self.state_symbols) | set(self.param_symbols) | set(self.input_symbols) | {self.t_symbol}
        arguments = (self.t_symbol, x, z, p) + ((u,) if u is not None else ())
        f = flatten_exprs(call_model(rhs_sympy, "rhs_sympy", *arguments), self.differential,
                          "rhs_sympy", allowed, TO_PIECEWISE)
        g = flatten_exprs(call_model(algebraic_sympy, "algebraic_sympy", *arguments),
                          self.algebraic, "algebraic_sympy", allowed, TO_PIECEWISE)
        self.residual_exprs = [yp - fi for yp, fi in zip(self.yp_symbols, f)] + g
        n_d = self.differential.size
        self.is_differential = np.arange(self.states.size) < n_d
        self.equation_id = self.is_differential.astype(np.float64)
        self.equation_names = [f"rhs_sympy[{name!r}]" for name in entry_names(self.differential)]
        self.equation_names += [f"algebraic_sympy[{name!r}]" for name in entry_names(self.algebraic)]

    def _init_implicit(self, states, residual_sympy, p, inputs):
        self._init_states(Layout(states, self.coords, "states"))
        u = self._init_inputs(inputs)
        self.state_symbols, y = symbols(self.states, "y")
        yp_flat, yp = symbols(self.states, "yp")
        self.yp_symbols = yp_flat
        allowed = set(self.state_symbols) | set(yp_flat) | set(self.param_symbols) | set(self.input_symbols)
        allowed.add(self.t_symbol)
        arguments = (self.t_symbol, y, yp, p) + ((u,) if u is not None else ())
        residual = call_model(residual_sympy, "residual_sympy", *arguments)
        self.residual_exprs = flatten_exprs(residual, self.states, "residual_sympy", allowed, TO_PIECEWISE)
        yp_set = set(yp_flat)
        used = set().union(*(e.free_symbols for e in self.residual_exprs)) if self.residual_exprs else set()
        self.is_differential = np.array([s in used for s in yp_flat], dtype=bool)
        self.equation_id = np.array([bool(e.free_symbols & yp_set) for e in self.residual_exprs], dtype=np.float64)
        self.equation_names = [f"residual_sympy[{name!r}]" for name in entry_names(self.states)]
        n_eq, n_diff = int(self.equation_id.sum()), int(self.is_differential.sum())
        if n_eq != n_diff:
            raise ValueError(
                f"`residual_sympy` has {n_eq} equations containing derivatives yp but {n_diff} states "
                f"whose derivative occurs; they must match for an index-1 DAE. Equations without yp: "
                f"{[m for m, d in zip(self.equation_names, self.equation_id) if not d]}; states without "
                f"yp: {[m for m, d in zip(entry_names(self.states), self.is_differential) if not d]}.")

    def _check_index_one(self):
        """Structural index-1 checks on which symbols occur where (no differentiation)."""
        names = entry_names(self.states)
        self.differential_indices = np.flatnonzero(self.is_differential).astype(np.int64)
        self.algebraic_indices = np.flatnonzero(~self.is_differential).astype(np.int64)
        self.n_differential = len(self.differential_indices)
        self.n_algebraic = len(self.algebraic_indices)
        alg_eqs = np.flatnonzero(self.equation_id == 0.0)
        alg_col = {self.state_symbols[j]: k for k, j in enumerate(self.algebraic_indices)}
        deps = [sorted({alg_col[s] for s in self.residual_exprs[i].free_symbols if s in alg_col}) for i in alg_eqs]
        lonely = [self.equation_names[i] for i, d in zip(alg_eqs, deps) if not d]
        if lonely:
            raise ValueError(
                f"The algebraic equations {lonely} do not depend on any algebraic state: they constrain "
                "differential states only, which makes the DAE index 2 or higher. Differentiate the "
                "constraint in time, or make one of the states it involves algebraic.")
        unmatched = _unmatched(deps)
        if unmatched:
            unused = [names[j] for k, j in enumerate(self.algebraic_indices) if not any(k in d for d in deps)]
            raise ValueError(
                "d(algebraic equations)/d(algebraic states) is structurally singular, so the algebraic "
                "states cannot be solved for (the DAE has index 2 or higher). Equations left without an "
                f"algebraic state of their own: {[self.equation_names[alg_eqs[i]] for i in unmatched]}"
                + (f"; algebraic states in no algebraic equation: {unused}" if unused else "") + ".")
        diff_eqs = np.flatnonzero(self.equation_id != 0.0)
        yp_col = {self.yp_symbols[j]: k for k, j in enumerate(self.differential_indices)}
        deps = [sorted({yp_col[s] for s in self.residual_exprs[i].free_symbols if s in yp_col}) for i in diff_eqs]
        unmatched = _unmatched(deps)
        if unmatched:
            raise ValueError(
                "dF/dy' of the differential equations is structurally singular: the equations "
                f"{[self.equation_names[diff_eqs[i]] for i in unmatched]} do not determine a derivative "
                "of their own, so y' is not determined (the DAE is not index 1).")
