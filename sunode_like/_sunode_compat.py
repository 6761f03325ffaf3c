"""sunode's names for solver options, translated to ours, so sunode code runs unchanged.

sunode's ``abstol``/``reltol`` are our ``atol``/``rtol`` (scipy's names), ``checkpoint_n`` is
``checkpoint_steps``, ``adjoint_solver`` is ``solver_backward``, and
``linear_solver_kwargs={"upper_bandwidth": u, "lower_bandwidth": l}`` is ``bandwidths=(u, l)``.
sunode's finite-difference linear solvers become the analytic ones (the Jacobian here is
always symbolic, so the same solution to within the tolerances, with fewer rhs calls).
"""
import functools

from ._options import OPTIONS

_RENAMED = {option.sunode_name: option.name for option in OPTIONS if option.sunode_name}
_LINEAR_SOLVERS = {"dense_finitediff": "dense", "spgmr_finitediff": "spgmr"}
_BANDWIDTHS = ("upper_bandwidth", "lower_bandwidth")


def from_sunode(options):
    """``options`` with sunode's option names and values replaced by ours (a new dict)."""
    options = dict(options)
    for theirs, ours in _RENAMED.items():
        if theirs in options:
            if ours in options:
                raise ValueError(f"`{theirs}` and `{ours}` name the same option (sunode's name "
                                 f"and ours); got both. Pass one.")
            options[ours] = options.pop(theirs)
    for key in ("linear_solver", "linear_solver_backward"):
        if isinstance(options.get(key), str):
            options[key] = _LINEAR_SOLVERS.get(options[key], options[key])
    if "compute_sens" in options:  # sunode's older switch for forward sensitivities
        options["sens_mode"] = (options.get("sens_mode") or "simultaneous") \
            if options.pop("compute_sens") else None
    extra = options.pop("linear_solver_kwargs", None) or {}
    if set(extra) - set(_BANDWIDTHS) or len(extra) == 1:
        raise ValueError(f"`linear_solver_kwargs={extra!r}` is not supported; expected both of "
                         f"{list(_BANDWIDTHS)} (for linear_solver='band') or nothing. Or pass "
                         f"bandwidths=(upper, lower).")
    if extra:
        if "bandwidths" in options:
            raise ValueError("`linear_solver_kwargs` and `bandwidths` both set the bandwidths; "
                             "pass one.")
        options["bandwidths"] = tuple(int(extra[k]) for k in _BANDWIDTHS)
    return options


def accepts_sunode_names(init):
    """Decorate a solver's ``__init__(self, problem, **options)`` to accept sunode's names."""

    @functools.wraps(init)
    def wrapper(self, problem, **options):
        init(self, problem, **from_sunode(options))

    return wrapper
