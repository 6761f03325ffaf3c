"""Checks of what users pass in: real numeric arrays, and sympy expressions the kernels can run.

Numeric input (params, states, times, tolerances, grads) must be real: numpy would drop an
imaginary part with only a ComplexWarning, and parse a string only to fail with a message
that names no entry. Expressions may use only what the numba printer can print and numba
can compile, *together with every derivative the solvers take* (df/dy, df/dp, d/dt of
dF/dy'), so a model that builds also compiles. ``sympy.nan`` is allowed, to mark where a
model is undefined: a kernel value that is not finite makes the solve fail. ``Heaviside``
and ``sign`` are rewritten as Piecewise expressions, whose derivative is 0 (right everywhere
except on the switching surface, where none exists) instead of sympy's DiracDelta.
"""
import numpy as np
import sympy
from sympy.codegen import cfunctions
from sympy.core.function import AppliedUndef
from sympy.logic import boolalg

# Functions the kernels support; each one's derivatives are again built from these.
ALLOWED_FUNCTIONS = (
    sympy.exp, sympy.log, sympy.sin, sympy.cos, sympy.tan, sympy.cot, sympy.sec, sympy.csc,
    sympy.asin, sympy.acos, sympy.atan, sympy.acot, sympy.atan2, sympy.sinh, sympy.cosh,
    sympy.tanh, sympy.coth, sympy.asinh, sympy.acosh, sympy.atanh, sympy.erf, sympy.erfc,
    sympy.Abs, sympy.Min, sympy.Max, sympy.Heaviside, sympy.sign, cfunctions.expm1,
    cfunctions.log1p, cfunctions.log2, cfunctions.log10, cfunctions.hypot, sympy.Piecewise)
ALLOWED_CONSTANTS = (sympy.pi, sympy.E, sympy.EulerGamma, sympy.GoldenRatio, sympy.Catalan)
# Arithmetic and the parts of Piecewise conditions.
_STRUCTURE = (sympy.Symbol, sympy.Add, sympy.Mul, sympy.Pow, sympy.functions.elementary.piecewise.ExprCondPair,
              sympy.core.relational.Relational, boolalg.And, boolalg.Or, boolalg.Not, boolalg.BooleanTrue,
              boolalg.BooleanFalse)
_INT64_MAX = 2**63 - 1
# Significant digits that print every float64 exactly (sympy prints a Float with the 15 digits
# of its default precision, so 1/3 would compile as 0.333333333333333).
DOUBLE_DIGITS = 17
# Rewritten as Piecewise: the derivatives of Heaviside and sign contain DiracDelta. Those of
# Abs, Min and Max contain sign and Heaviside, so where second derivatives are taken (d/dt
# of dF/dy' for DAEs) they are rewritten too.
TO_PIECEWISE = (sympy.Heaviside, sympy.sign)
TO_PIECEWISE_TWICE_DIFFERENTIABLE = TO_PIECEWISE + (sympy.Abs, sympy.Min, sympy.Max)

ALLOWED_TEXT = (
    "numbers, +, -, *, /, ** (sqrt), "
    + ", ".join(f.__name__ for f in ALLOWED_FUNCTIONS[:-1])
    + ", and Piecewise with an otherwise branch (conditions: <, <=, >, >=, Eq, Ne, &, |, ~)")


# -- numeric input ----------------------------------------------------------------------------
def real_array(name, value):
    """``value`` as a float64 array, or a TypeError naming ``name`` if it is not real numbers
    (complex, str, bool, None, dates, or a masked array with masked entries)."""
    if np.ma.is_masked(value):  # np.asarray would keep the values under the mask
        raise TypeError(f"`{name}` is a masked array with {np.ma.count_masked(value)} masked entries; "
                        "expected numbers only. Fill them (np.ma.filled) or leave them out.")
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"`{name}` must be a real number or a regular array; got {value!r} ({error}).") from None
    if array.dtype.kind in "iuf":
        return array.astype(np.float64, copy=False)
    if array.dtype.kind == "c":
        raise TypeError(f"`{name}` must be real; got the complex value {value!r}. Pass its real part "
                        "(np.real) if the imaginary part is meant to be dropped.")
    if array.dtype.kind == "O" and not any(v is None for v in array.flat):  # None would become NaN
        try:
            return array.astype(np.float64)
        except (TypeError, ValueError):
            pass
    raise TypeError(f"`{name}` must be a real number or array of them; got {type(value).__name__} {value!r}.")


def real_scalar(name, value):
    """``value`` as a Python float, or a TypeError/ValueError naming ``name``."""
    array = real_array(name, value)
    if array.ndim != 0:
        raise ValueError(f"`{name}` must be a scalar; got an array of shape {array.shape}. Pass {name}[0] "
                         "if it holds one time.")
    return float(array)


def positive_int(name, value, largest=_INT64_MAX):
    """``value`` as an int in [1, largest], or a ValueError/TypeError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}={value!r}` must be a positive integer; got {type(value).__name__}.")
    if not (np.isfinite(value) and int(value) == value and 1 <= value <= largest):
        raise ValueError(f"`{name}={value!r}` must be a positive integer no larger than {largest}.")
    return int(value)


def boolean(name, value):
    """``value`` as a bool, or a TypeError naming ``name``: ``bool("False")`` is True, so a
    string or other object would silently switch the option on."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}={value!r}` must be True or False; got {type(value).__name__}.")
    return bool(value)


# -- sympy expressions -------------------------------------------------------------------------
def as_double(value):
    """The float ``value`` as a sympy Float that prints (and so compiles) to the same double."""
    return sympy.Float(value, DOUBLE_DIGITS)


def checked_expression(expr, where, to_piecewise=TO_PIECEWISE):
    """``expr`` in the form the kernels compile, or a ValueError naming ``where`` (e.g.
    "rhs_sympy['x']") and what is wrong.

    The functions in ``to_piecewise`` become Piecewise (Heaviside and sign: derivative 0
    away from the switch, where sympy would give DiracDelta); integers and rationals too
    large for a 64-bit integer literal become floats, and every float gets the precision
    that prints it exactly (the code printer writes a Float's own digits). Rejected: functions
    outside `ALLOWED_FUNCTIONS` (or their derivatives would not compile), non-real or
    non-finite numbers, and a Piecewise that is undefined for some inputs.
    """
    if not isinstance(expr, sympy.Expr):
        raise ValueError(f"`{where}` must be a real-valued expression; got {type(expr).__name__} {expr}.")
    expr = expr.replace(lambda e: isinstance(e, to_piecewise), _as_piecewise)
    expr = expr.xreplace({r: _as_float(r, where) for r in expr.atoms(sympy.Rational)
                          if max(abs(r.p), r.q) > _INT64_MAX})
    expr = expr.xreplace({f: as_double(float(f)) for f in expr.atoms(sympy.Float) if np.isfinite(float(f))})
    for node in sympy.preorder_traversal(expr):
        _check_node(node, where)
    return expr


def _as_piecewise(function):
    """Heaviside, sign, Abs, Min or Max as a Piecewise. sympy's own rewrite leaves sign and Abs
    unchanged when it cannot show their argument real (sign(log(x))), and their derivatives
    would then not compile."""
    if isinstance(function, (sympy.sign, sympy.Abs)):
        u = function.args[0]
        if isinstance(function, sympy.sign):
            return sympy.Piecewise((1, u > 0), (-1, u < 0), (0, True))
        return sympy.Piecewise((u, u >= 0), (-u, True))
    return function.rewrite(sympy.Piecewise)


def _as_float(rational, where):
    value = float(rational) if abs(rational) < 2 ** 1024 else np.inf  # float() raises on huge ints
    if not np.isfinite(value):
        raise ValueError(f"`{where}` uses the number {_short(rational)}, which overflows float64 "
                         "(largest ~1.8e308). Rescale the model.")
    return as_double(value)



def _short(value):
    """``value`` as text, long numbers cut to their first digits."""
    text = str(value)
    return text if len(text) < 40 else f"{text[:12]}... ({len(text)} characters)"


def _check_node(node, where):
    if isinstance(node, (sympy.Pow, sympy.Function)) and node.is_extended_real is False:
        # e.g. (-2)**(1/3), asin(2), sqrt(-x**2 - 1): complex for every real input.
        raise ValueError(f"`{where}` uses {_short(node)}, which is not real; models must be real.")
    if isinstance(node, sympy.Pow) and node.base.is_extended_negative and node.base.is_number \
            and not node.exp.is_number:
        # Real only at integer exponents, and its derivative has the complex log of the base.
        raise ValueError(f"`{where}` uses {_short(node)}, a negative number to a variable power, which is "
                         f"not real for non-integer exponents (and its derivative needs log({node.base}), "
                         f"which is complex). Write it as (-1)**n * {-node.base}**x with integer n, or as "
                         f"cos(pi*x) * {-node.base}**x for the real part.")
    if isinstance(node, _STRUCTURE):
        return
    if isinstance(node, sympy.Piecewise):
        _check_piecewise(node, where)
        return
    if isinstance(node, sympy.Number):
        if isinstance(node, sympy.Float) and not np.isfinite(float(node)):
            raise ValueError(f"`{where}` uses the number {_short(node)}, which overflows float64 "
                             "(largest ~1.8e308). Rescale the model.")
        if not isinstance(node, (sympy.Rational, sympy.Float, sympy.core.numbers.NaN)):
            raise ValueError(f"`{where}` uses {node}, which is not a finite real number; use sympy.nan "
                             "to mark where the model is undefined.")
        return
    if node in ALLOWED_CONSTANTS:
        return
    if isinstance(node, sympy.NumberSymbol):
        raise ValueError(f"`{where}` uses the constant {node}, which the kernels cannot print; use its "
                         f"value, sympy.Float({node}.evalf(17)). Allowed constants: {ALLOWED_CONSTANTS}.")
    if node == sympy.I or isinstance(node, sympy.core.numbers.ComplexInfinity):
        raise ValueError(f"`{where}` uses {node}, which is not a finite real number; models must be real "
                         "(sympy.I often comes from sqrt or log of a negative number).")
    if node.func in ALLOWED_FUNCTIONS:
        return
    if isinstance(node, AppliedUndef):
        raise ValueError(f"`{where}` uses the undefined function {node}; the kernels can only compute "
                         f"explicit expressions. Write it out with {ALLOWED_TEXT}.")
    raise ValueError(f"`{where}` uses {node.func.__name__} (in {_short(node)}), which the kernels cannot "
                     f"compute or differentiate. Allowed: {ALLOWED_TEXT}.")


def _check_piecewise(piecewise, where):
    """A Piecewise must give a value for every input: a True (otherwise) branch, or conditions
    sympy can show to cover every real value of their one variable."""
    conditions = sympy.Or(*(pair.cond for pair in piecewise.args))
    if conditions == sympy.true:
        return
    try:
        covered = conditions.as_set()
        if sympy.S.Reals.is_subset(covered):
            return
        covered = f"only {covered}"
    except (NotImplementedError, TypeError, ValueError):  # conditions over several variables
        covered = f"only where {conditions}"
    raise ValueError(
        f"`{where}` has a Piecewise with no value where none of its conditions holds (they cover {covered}), "
        "so the solver would get no number there. Add an otherwise branch: "
        "sympy.Piecewise(*pw.args, (value, True)), or (sympy.nan, True) to make a solve that gets "
        "there fail. sympy.interpolating_spline is undefined outside its knots in the same way.")
