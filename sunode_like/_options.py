"""Every solver option, declared once: its keyword, default, check and C struct field.

The solvers (`Solver`, `AdjointSolver`, `DAESolver`, `DAEAdjointSolver`), sunode's names
(`_sunode_compat`) and the PyTensor Ops (through `_solver_base.pool_arguments`) take their
keywords, defaults and C structs from `OPTIONS`. An option fills a field of one of three C
structs (``csrc/sl_common.h``): ``options`` (``sl_options``, the forward problem), ``sens``
(``sl_sens_options``) or ``adjoint`` (``sl_adjoint_options``, whose ``backward`` is the
backward problem's ``sl_options``). A solver takes the options of the structs it creates.

Adding an option: one `Option` below (checked in the order listed, so a check may read the
options above it), a field in the C struct, and the C code that reads it.
"""
import inspect
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ._sundials import ffi, lib
from ._validate import boolean, positive_int, real_array, real_scalar

METHODS = {"BDF": lib.SL_BDF, "ADAMS": lib.SL_ADAMS, "ERK": lib.SL_ERK, "DIRK": lib.SL_DIRK,
           "auto": lib.SL_AUTO}
BACKWARD_METHODS = dict(METHODS)
METHOD_NAMES = {code: name for name, code in METHODS.items()}
# The defaults. solver="auto" (csrc/sl_auto.h): ERK within a step budget, else BDF; given
# any option only CVODES has (CVODES_ONLY, sens_mode="staggered", a BDF or ADAMS backward),
# it is BDF. solver_backward="auto": the method
# sl_auto_backward_method picks after the forward method that ran (ERK after ERK, DIRK
# after BDF but for GMRES), or the forward method where checkpoint options ask for CVODES'
# adjoint.
AUTO = "auto"
CVODES_ONLY = ("constraints", "interpolation", "checkpoint_steps")
# ERK and DIRK integrate the backward problem over every recorded forward step, without
# CVODES' checkpoints.
ONE_STEP_METHODS = ("ERK", "DIRK")
# Forward methods on ARKODE (csrc/sl_arkode.h) rather than CVODES: without constraints or
# checkpoints, their adjoint is one of ONE_STEP_METHODS; the explicit one solves no Newton
# systems either.
ARKODE_METHODS = ("ERK", "DIRK")
EXPLICIT_METHODS = ("ERK",)
LINEAR_SOLVERS = {"dense": lib.SL_DENSE, "band": lib.SL_BAND, "sparse": lib.SL_SPARSE,
                  "spgmr": lib.SL_SPGMR}
SENS_MODES = {None: lib.SL_SENS_NONE, "simultaneous": lib.SL_SENS_SIMULTANEOUS,
              "staggered": lib.SL_SENS_STAGGERED}
INTERPOLATIONS = {"hermite": lib.SL_HERMITE, "polynomial": lib.SL_POLYNOMIAL}
# The explicit method's Butcher tables (None: Tsitouras 5(4) on SUNDIALS >= 7.4, else
# Dormand-Prince 5(4)); which ones a build has: available_erk_tables().
ERK_TABLES = {None: lib.SL_ERK_DEFAULT, "dormand_prince": lib.SL_DORMAND_PRINCE,
              "tsitouras": lib.SL_TSITOURAS, "verner6": lib.SL_VERNER6, "verner7": lib.SL_VERNER7,
              "verner8": lib.SL_VERNER8, "verner9": lib.SL_VERNER9}

# CVODES and IDAS allocate the storage of one checkpoint interval up front: checkpoint_steps
# + 1 stored steps of 2 vectors (Hermite) or 1 (polynomial), each n_states doubles plus about
# 640 bytes of N_Vector overhead (measured: 1272 bytes per Hermite step for 2 states).
CHECKPOINT_MEMORY_LIMIT = 2**30
# The highest order the forward method may reach: polynomial interpolation needs that many
# steps per checkpoint interval (CVODES and IDAS read past a shorter interval's storage).
MAX_ORDER = {"BDF": 5, "ADAMS": 12, AUTO: 5}


@dataclass(frozen=True)
class Follows:
    """The default of an option that follows another one's checked value (``reduce`` of
    it, e.g. np.max of an atol vector). Passing None asks for it too."""

    name: str
    reduce: Callable = None

    def __call__(self, values):
        value = values[self.name]
        return value if self.reduce is None else float(self.reduce(value))


@dataclass(frozen=True)
class Option:
    """One keyword option of the solvers.

    ``check(option, value, checking)`` returns the checked value or raises a ValueError or
    TypeError naming the option; ``checking`` is the `CheckedOptions` being built (its
    ``problem``, ``model`` and the ``values`` checked so far). ``field`` is the C struct
    field ("struct.field", or a tuple of them for a tuple value) that ``to_c(value,
    checking)`` fills; by default choices map through ``codes``, arrays become pointers
    and None becomes NULL. ``kinds``: the problem kinds that accept it (the others use
    the default). ``op_default``: the PyTensor Ops' default, where it differs (a callable
    gets the values checked so far); ``in_ops=False``: the Ops fix the default.
    ``sunode_name``: sunode's keyword for it.
    """

    name: str
    default: object
    check: Callable
    field: object
    codes: dict = None
    to_c: Callable = None
    kinds: tuple = ("ode", "dae")
    op_default: object = None
    in_ops: bool = True
    sunode_name: str = None

    @property
    def struct(self):
        """The C struct the option fills: "options", "sens" or "adjoint"."""
        return (self.field if isinstance(self.field, str) else self.field[0]).split(".")[0]


# -- checks -------------------------------------------------------------------------------------
def tolerance(name, value, size, positive=False):
    """``value`` broadcast to ``size`` entries, checked finite and non-negative (an absolute
    tolerance) or, with ``positive``, in (0, 1) (a relative tolerance: at 1 or more no digit
    of the answer is asked to be right, and CVODES returns whatever it reaches)."""
    try:
        array = np.array(np.broadcast_to(real_array(name, value), (size,)))
    except ValueError:
        raise ValueError(f"`{name}` must be a scalar or have {size} entries; got shape "
                         f"{np.shape(value)}.") from None
    if np.any(~np.isfinite(array) | ((array <= 0) if positive else (array < 0))):
        raise ValueError(f"`{name}` must be finite and {'positive' if positive else 'non-negative'}; "
                         f"got {value!r}.")
    if positive and np.any(array >= 1):
        raise ValueError(f"`{name}={value!r}` must be below 1 (a relative error of 100%); typical "
                         "values are 1e-4 to 1e-10.")
    return array


def _forward_method(option, method, checking):
    """The forward method: "auto" becomes "BDF" where an option only CVODES has is given
    (see AUTO); a DAE's is IDAS' BDF whatever the default."""
    _one_of(option, method, checking)
    if checking.kind != "ode":
        return "BDF"
    given = checking.given_values
    if method == AUTO and (any(name in given for name in CVODES_ONLY)
                           or given.get("sens_mode") == "staggered"
                           or given.get("solver_backward") in ("BDF", "ADAMS")):
        return "BDF"
    return method


def _one_of(option, value, checking):
    if not isinstance(value, (str, type(None))) or value not in option.codes:
        raise ValueError(f"`{option.name}={value!r}` is not supported; expected one of {list(option.codes)}.")
    return value


def _refused_with(methods, check, why):
    """``check`` of a forward problem's option, after a ValueError if it is given with one
    of the forward ``methods`` (``why`` it does not apply there)."""
    def checked(option, value, checking):
        method = checking.values.get("solver")
        if method in methods and option.name in checking.given:
            others = [name for name in METHODS if name not in methods]
            raise ValueError(f"`{option.name}={value!r}` does not apply to solver={method!r}: {why}. "
                             f"Leave {option.name} out, or use solver={' or '.join(map(repr, others))}.")
        return check(option, value, checking)
    return checked


def _linear_solver(option, value, checking):
    if _one_of(option, value, checking) == "sparse" and not lib.SL_HAVE_KLU:
        raise ValueError(
            f"`{option.name}='sparse'` needs KLU, which this build of sunode_like lacks (its "
            "SUNDIALS has no KLU, or klu.h was not found when it was built). Use 'dense', "
            "'band' or 'spgmr', or install libsuitesparse-dev and a SUNDIALS with KLU (or set "
            "KLU_INCLUDE_DIR) and rebuild.")
    return value


def _relative_tolerance(option, value, checking):
    return float(tolerance(option.name, value, 1, positive=True)[0])


def _absolute_tolerance(option, value, checking):
    return tolerance(option.name, value, checking.problem.n_states)


def _positive_int(option, value, checking):
    return positive_int(option.name, value)


def _boolean(option, value, checking):
    return boolean(option.name, value)


def _max_step(option, value, checking):
    if value is None:
        return None
    step = real_scalar("max_step", value)
    if not step > 0:
        raise ValueError(f"`max_step={step!r}` must be positive (the largest step size); leave "
                         "it out for no bound.")
    return step


def _tstop(option, value, checking):
    if value is None:
        return None
    tstop = real_scalar("tstop", value)
    if not np.isfinite(tstop):
        raise ValueError(f"`tstop={tstop!r}` must be finite.")
    return tstop


def _bandwidths(option, bandwidths, checking):
    """(upper, lower) for the band solver: at least the Jacobian pattern's (entries outside
    the band have no place in SUNDIALS' band matrix), at most n_states - 1."""
    model = checking.model
    pattern = (int(model.UPPER_BANDWIDTH), int(model.LOWER_BANDWIDTH))
    if bandwidths is None:
        return pattern
    if (not isinstance(bandwidths, (tuple, list, np.ndarray)) or len(bandwidths) != 2
            or not all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in bandwidths)):
        raise TypeError(f"`bandwidths={bandwidths!r}` must be a pair of integers (upper, lower).")
    upper, lower = (int(b) for b in bandwidths)
    largest = checking.problem.n_states - 1
    if not (pattern[0] <= upper <= largest and pattern[1] <= lower <= largest):
        raise ValueError(
            f"`bandwidths={bandwidths!r}` must lie between the Jacobian's own bandwidths {pattern} and "
            f"n_states - 1 = {largest} in each entry. Leave it None to use the Jacobian's.")
    return upper, lower


def _constraints(option, constraints, checking):
    """``constraints`` (a scalar, a flat vector, or a dict shaped like the states) as flat
    float64 codes in SUNDIALS' convention: 0 none, 1 y >= 0, 2 y > 0, -1 y <= 0, -2 y < 0."""
    if constraints is None:
        return None
    states = checking.problem.states
    if np.ndim(constraints) == 0 and not isinstance(constraints, dict):
        constraints = np.full(states.size, float(constraints))
    flat = states.renamed("constraints").flatten(constraints)
    if not np.all(np.isin(flat, (-2.0, -1.0, 0.0, 1.0, 2.0))):
        raise ValueError(f"`constraints` entries must be in {{-2, -1, 0, 1, 2}}; got "
                         f"{sorted(set(flat.tolist()))}.")
    return flat


def available_erk_tables():
    """The names of the ``erk_table`` values this build's SUNDIALS has."""
    return [name for name, code in ERK_TABLES.items() if name and lib.sl_arkode_has_erk_table(code)]


def _erk_table(option, table, checking):
    _one_of(option, table, checking)
    method = checking.values["solver"]
    if table is not None and method not in ("ERK", AUTO):
        raise ValueError(f"`erk_table={table!r}` is the table of solver='ERK'; got solver={method!r}. "
                         "Leave erk_table out, or use solver='ERK'.")
    if not lib.sl_arkode_has_erk_table(ERK_TABLES[table]):
        version = f"{lib.SUNDIALS_VERSION_MAJOR}.{lib.SUNDIALS_VERSION_MINOR}.{lib.SUNDIALS_VERSION_PATCH}"
        raise ValueError(f"`erk_table={table!r}` is not in this build's SUNDIALS ({version}); expected one "
                         f"of {available_erk_tables()}. Pick one of those, or rebuild sunode_like against "
                         "SUNDIALS >= 7.4 (which has Tsitouras 5(4) and Verner's 6(5) to 9(8) pairs).")
    return table


def _sens_mode(option, mode, checking):
    _one_of(option, mode, checking)
    if mode == "staggered" and checking.values.get("solver") in ARKODE_METHODS:
        raise ValueError(f"`sens_mode='staggered'` is CVODES' corrector strategy; with "
                         f"solver={checking.values['solver']!r} the sensitivities are integrated "
                         "with the states: use sens_mode='simultaneous'.")
    if mode == "simultaneous" and checking.kind == "ode" and checking.values["constraints"] is not None:
        raise ValueError("`constraints` cannot be kept with sens_mode='simultaneous' (CVODES "
                         "does not support it); use sens_mode='staggered'.")
    if mode is not None and checking.kind == "dae" and checking.values["linear_solver"] == "spgmr":
        # IDAS' sensitivities through unpreconditioned GMRES (ours or IDAS' own J v alike)
        # miss the tolerances by far: Robertson's come out 1e-1 wrong at rtol 1e-6, 2e-3 at
        # 1e-8, while its states stay within them.
        raise ValueError(
            f"`linear_solver='spgmr'` cannot be combined with forward sensitivities of a DAE "
            f"(sens_mode={mode!r}); got 'spgmr', expected 'dense', 'band' or 'sparse'. IDAS' "
            f"unpreconditioned GMRES leaves the sensitivities far outside the tolerances; "
            f"pick one of those linear solvers (see docs/limitations.md).")
    return mode


def _checkpoint_steps(option, value, checking):
    """``checkpoint_steps`` checked against what the interpolation needs and the memory bound."""
    steps = positive_int(option.name, value)
    if checking.values["solver_backward"] in ONE_STEP_METHODS:
        return steps
    interpolation, method = checking.values["interpolation"], checking.values["solver"]
    n_states = checking.problem.n_states
    if interpolation == "polynomial" and steps < MAX_ORDER[method]:
        raise ValueError(
            f"`checkpoint_steps={steps}` is too small for interpolation=\"polynomial\" with "
            f"solver={method!r}; expected at least {MAX_ORDER[method]} (the method's maximum "
            f"order). Use a larger checkpoint_steps or interpolation=\"hermite\".")
    vectors = 2 if interpolation == "hermite" else 1
    bytes_per_step = vectors * 8 * (n_states + 80)
    if (steps + 1) * bytes_per_step > CHECKPOINT_MEMORY_LIMIT:
        largest = CHECKPOINT_MEMORY_LIMIT // bytes_per_step - 1
        raise ValueError(
            f"`checkpoint_steps={steps}` would preallocate about "
            f"{(steps + 1) * bytes_per_step / 2**30:.3g} GiB for one checkpoint interval; "
            f"expected at most {largest} for {n_states} states (1 GiB). Fewer steps between "
            f"checkpoints cost only some recomputation in the backward solve.")
    return steps


def backward_method(forward, values, quad_errcon=None):
    """The backward method solver_backward="auto" means after a forward solve by ``forward``
    ("BDF", "ADAMS", "ERK", "DIRK"), with the checked ``values`` (``quad_errcon`` if they do
    not hold it yet): csrc/sl_auto.h's rule."""
    errcon = values["quad_errcon"] if quad_errcon is None else quad_errcon
    return METHOD_NAMES[lib.sl_auto_backward_method(
        METHODS[forward], LINEAR_SOLVERS[values["linear_solver_backward"]], bool(errcon))]


def check_one_step_backward(values, what, where=None):
    """A ValueError (naming ``where``, if given) unless the adjoint of the checked ``values``,
    if they have one, can restart at ``what`` ("doses", "events"): its backward method (with
    solver="auto", the one after the BDF fallback) must be a one-step one, as CVODES' own
    adjoint cannot restart inside its span."""
    method = values.get("solver_backward")
    if method is None:
        return
    if method == AUTO:
        method = backward_method("BDF", values)
    if method not in ONE_STEP_METHODS:
        raise ValueError(f"{where + ': ' if where else ''}`{what}` need solver_backward='ERK' or "
                         f"'DIRK' (CVODES' adjoint cannot restart at them); got solver_backward="
                         f"{method!r}. Pass solver_kwargs={{'solver_backward': 'DIRK'}} "
                         f"(stiff-safe) or 'ERK'.")


def _solver_backward(option, method, checking):
    _one_of(option, method, checking)
    forward = checking.values["solver"]
    if checking.kind != "ode":
        return "BDF"
    if method == AUTO and forward != AUTO:
        given = checking.given_values
        if forward in ("BDF", "ADAMS") and ("checkpoint_steps" in given or "interpolation" in given):
            return forward
        return backward_method(forward, checking.values, given.get("quad_errcon", True))
    if forward in ARKODE_METHODS and method not in ONE_STEP_METHODS:
        raise ValueError(f"`solver_backward={method!r}` needs CVODES' checkpoints of a BDF or "
                         f"ADAMS forward solve; with solver={forward!r} expected one of "
                         f"{list(ONE_STEP_METHODS)}.")
    return method


def _quad_errcon(option, value, checking):
    errcon = boolean(option.name, value)
    if checking.values["solver_backward"] == "DIRK" and not errcon:
        # Measured: Robertson's dL/dp 16% wrong at rtol=1e-8 (the steps resolve lambda
        # but not the fast part of lambda^T df/dp after each jump).
        raise ValueError(
            "`quad_errcon=False` is not supported with `solver_backward='DIRK'`; got "
            "quad_errcon=False, expected True. Without the quadrature in the error test "
            "the DIRK's steps can skip what dL/dp integrates: keep quad_errcon=True.")
    return errcon


def _atol_quad(option, value, checking):
    atol = float(tolerance(option.name, value, 1)[0])
    if checking.values["quad_errcon"] and atol == 0:
        # The quadrature starts at 0, where a zero atol makes its error weight infinite.
        raise ValueError("`atol_quad` must be positive while `quad_errcon=True` (its default "
                         "is the smallest atol_backward); got 0.")
    return atol


def _sens_doses(option, value, checking):
    count = 0 if value == 0 else positive_int(option.name, value)
    if count and checking.values["sens_mode"] is None:
        raise ValueError(f"`sens_doses={count}` needs forward sensitivities; got sens_mode=None.")
    return count


def _ops_sens_mode(values):
    # CVODES keeps constraints only with staggered sensitivities.
    return "staggered" if values["constraints"] is not None else "simultaneous"


# Why CVODES' options do not apply to the forward methods on ARKODE (see _refused_with).
NO_NEWTON = "an explicit method solves no linear systems"
NO_CONSTRAINTS = "CVODES keeps constraints, ARKODE's one-step methods do not"
NO_CHECKPOINTS = "its adjoint records every forward step instead of checkpoints"
OPTIONS = (
    # -- the forward problem: sl_options ------------------------------------------------------
    Option("solver", AUTO, _forward_method, "options.method", codes=METHODS, kinds=("ode",)),
    Option("linear_solver", "dense", _refused_with(EXPLICIT_METHODS, _linear_solver, NO_NEWTON), "options.linear_solver",
           codes=LINEAR_SOLVERS),
    Option("rtol", 1e-8, _relative_tolerance, "options.rtol", sunode_name="reltol"),
    Option("atol", 1e-8, _absolute_tolerance, "options.atol", sunode_name="abstol"),
    # In a sampler a point that needs more steps is rejected sooner.
    Option("max_steps", 500_000, _positive_int, "options.max_steps", op_default=50_000),
    Option("max_step", None, _max_step, "options.max_step",
           to_c=lambda h, _: 0.0 if h is None else h),
    Option("tstop", None, _tstop, "options.tstop", to_c=lambda t, _: math.nan if t is None else t),
    Option("bandwidths", None, _refused_with(EXPLICIT_METHODS, _bandwidths, NO_NEWTON),
           ("options.upper_bandwidth", "options.lower_bandwidth")),
    Option("constraints", None, _refused_with(ARKODE_METHODS, _constraints, NO_CONSTRAINTS), "options.constraints"),
    Option("erk_table", None, _erk_table, "options.erk_table", codes=ERK_TABLES, kinds=("ode",)),
    # -- forward sensitivities: sl_sens_options -----------------------------------------------
    Option("sens_mode", None, _sens_mode, "sens.mode", codes=SENS_MODES, op_default=_ops_sens_mode),
    # The Ops' sensitivity outputs always include those for y0.
    Option("sens_y0", True, _boolean, "sens.n_sens", to_c=lambda _, checking: checking.n_sens,
           in_ops=False),
    Option("sens_errcon", True, _boolean, "sens.errcon"),
    # The Ops set it from their doses.
    Option("sens_doses", 0, _sens_doses, "sens.n_doses", kinds=("ode",), in_ops=False),
    # -- the adjoint: sl_adjoint_options, its backward problem in adjoint.backward ------------
    Option("interpolation", "hermite", _refused_with(ARKODE_METHODS, _one_of, NO_CHECKPOINTS), "adjoint.interpolation",
           codes=INTERPOLATIONS),
    Option("linear_solver_backward", Follows("linear_solver"), _linear_solver,
           "adjoint.backward.linear_solver", codes=LINEAR_SOLVERS),
    Option("solver_backward", AUTO, _solver_backward, "adjoint.backward.method",
           codes=BACKWARD_METHODS, kinds=("ode",), sunode_name="adjoint_solver"),
    Option("rtol_backward", Follows("rtol"), _relative_tolerance, "adjoint.backward.rtol"),
    # The adjoint's entries do not have the states' units: one value for all of them.
    Option("atol_backward", Follows("atol", np.max), _absolute_tolerance, "adjoint.backward.atol"),
    Option("max_steps_backward", Follows("max_steps"), _positive_int, "adjoint.backward.max_steps"),
    Option("checkpoint_steps", 1000, _refused_with(ARKODE_METHODS, _checkpoint_steps, NO_CHECKPOINTS),
           "adjoint.checkpoint_steps", sunode_name="checkpoint_n"),
    # The quadrature is integrated with the backward problem, so it follows its tolerances.
    Option("rtol_quad", Follows("rtol_backward"), _relative_tolerance, "adjoint.rtol_quad"),
    Option("quad_errcon", True, _quad_errcon, "adjoint.quad_errcon"),
    Option("atol_quad", Follows("atol_backward", np.min), _atol_quad, "adjoint.atol_quad"),
)


def accepted(kind, structs, ops=False):
    """The options a solver of problem ``kind`` ("ode", "dae") creating ``structs`` (a subset
    of "options", "sens", "adjoint") accepts, in declaration order; with ``ops``, those of
    the PyTensor Ops."""
    return [option for option in OPTIONS if option.struct in structs and kind in option.kinds
            and (option.in_ops or not ops)]


def signature(kind, structs):
    """The solver's call signature ``(problem, *, option=default, ...)``, for help() and
    inspect (defaults that follow another option show as None)."""
    parameters = [inspect.Parameter("problem", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY,
                                     default=None if isinstance(option.default, Follows) else option.default)
                   for option in accepted(kind, structs)]
    return inspect.Signature(parameters)


class CheckedOptions:
    """Checked options of a solver of ``problem`` (compiled as ``model``) and their C structs.

    Attributes
    ----------
    values : dict
        Every option of the structs by name, checked (defaults filled in; options a kind
        does not accept hold their default, e.g. solver="BDF" for DAEs).
    options, sens, adjoint : cffi pointers
        ``sl_options *``, ``sl_sens_options *`` (NULL without sensitivities) and
        ``sl_adjoint_options *`` (NULL unless asked for). They point into arrays this
        object holds: keep it alive as long as C uses them.
    n_sens : int
        Sensitivities: n_dparams + (n_differential if sens_y0) + 3 sens_doses, 0 without.
    """

    def __init__(self, problem, model, structs, given, *, ops=False, unknown_error=TypeError,
                 where="the solver", fixed=None):
        self.problem, self.model, self.kind = problem, model, problem.kind
        options = accepted(self.kind, structs, ops)
        unknown = set(given) - {option.name for option in options}
        if unknown:
            raise unknown_error(f"{where} got unknown options {sorted(unknown)}; expected some of "
                                f"{[option.name for option in options]}.")
        given = {**given, **(fixed or {})}  # the values the caller sets itself (ops: sens_doses)
        self.given_values = {name: value for name, value in given.items() if value is not None}
        self.given = set(self.given_values)
        self.values = {}
        for option in OPTIONS:
            if option.struct in structs:
                self.values[option.name] = option.check(option, self._given(option, given, ops), self)
        self._keep = []  # the structs and the arrays they point into
        self.options = self._filled("sl_options *", "options")
        self.sens = self.adjoint = ffi.NULL
        if "sens" in structs and self.values["sens_mode"] is not None:
            self.sens = self._filled("sl_sens_options *", "sens")
        if "adjoint" in structs:
            # The backward problem's sl_options start as the forward ones (bandwidths),
            # without tstop and constraints.
            self.adjoint = self._filled("sl_adjoint_options *", "adjoint", backward=self.options[0])
            self.adjoint.backward.tstop = math.nan
            self.adjoint.backward.constraints = ffi.NULL

    def _given(self, option, given, ops):
        value = given.get(option.name)
        # None asks for a default that follows another option or is chosen ("auto"), as
        # solver_backward=None did when it followed solver.
        if option.name in given and not (value is None and (isinstance(option.default, Follows)
                                                            or option.default == AUTO)):
            return value
        default = option.op_default if ops and option.op_default is not None else option.default
        return default(self.values) if callable(default) else default

    @property
    def n_sens(self):
        if not self.values.get("sens_mode"):
            return 0
        return (self.problem.n_dparams + (self.problem.n_differential if self.values["sens_y0"] else 0)
                + 3 * self.values["sens_doses"])

    def _filled(self, ctype, name, **initial):
        """A new C struct ``ctype`` holding the options of struct ``name``."""
        struct = ffi.new(ctype, initial)
        self._keep.append(struct)
        for option in OPTIONS:
            if option.struct == name:
                self._fill(struct, option)
        return struct

    def _fill(self, struct, option):
        value = self.values[option.name]
        if option.to_c is not None:
            value = option.to_c(value, self)
        elif option.codes is not None:
            value = option.codes[value]
        elif isinstance(value, np.ndarray):
            self._keep.append(value)
            value = ffi.from_buffer("double[]", value)
        elif value is None:
            value = ffi.NULL
        fields = (option.field,) if isinstance(option.field, str) else option.field
        values = (value,) if isinstance(option.field, str) else value
        for field, value in zip(fields, values):
            _, *path, last = field.split(".")
            target = struct
            for name in path:
                target = getattr(target, name)
            setattr(target, last, value)
