"""Errors raised by the solvers."""
import numpy as np


class SolverError(RuntimeError):
    """A SUNDIALS integration failed.

    Attributes
    ----------
    flag : int
        The SUNDIALS return flag (negative).
    flag_name : str
        Its name, e.g. ``"CV_TOO_MUCH_WORK"``.
    t : float
        The time the integrator had reached.
    reason : str
        The last message SUNDIALS reported (may be empty).

    Examples
    --------
    >>> try:                                                   # doctest: +SKIP
    ...     solver.solve(0.0, tvals, y0, y_out)
    ... except SolverError as error:
    ...     print(error.flag_name, error.t)
    CV_TOO_MUCH_WORK 0.52
    """

    def __init__(self, flag, flag_name, t, reason="", problem=None, kernel_failure=""):
        self.flag = flag
        self.flag_name = flag_name
        self.t = t
        self.reason = reason
        self.problem = problem
        self.kernel_failure = kernel_failure
        text = f"SUNDIALS failed with {flag_name} ({flag}) at t = {t:.10g}"
        if problem:
            text += f" in the {problem} problem"
        if reason:
            text += f": {reason}"
        if kernel_failure:
            text += f". {kernel_failure}"
        super().__init__(text)


def describe_kernel_failure(kernel, t, y, values, entries, state_names):
    """Which equations a kernel made non-finite at (t, y), in the user's names.

    ``values`` are the kernel's outputs there and ``entries[k]`` names output k (e.g.
    ``"d hares'/d lynx"``); ``y`` is shown by state name.
    """
    bad = [entries[k] for k in np.flatnonzero(~np.isfinite(values))]
    state = ", ".join(f"{name}={value:.6g}" for name, value in zip(state_names, y))
    if not bad:
        return (f"The {kernel} kernel failed at t = {t:.10g} with state ({state}), but gives "
                f"finite values there when evaluated again.")
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    return (f"The {kernel} kernel gave non-finite values at t = {t:.10g} for {shown}, with "
            f"state ({state}). Check those expressions there (e.g. a 0/0 that is removable "
            f"analytically, or sqrt/log of a negative number).")
