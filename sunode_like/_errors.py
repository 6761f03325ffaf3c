"""Errors raised by the solvers."""
import math
import numpy as np


def time_text(t):
    """t to 10 significant digits, and to 6 decimals where that is more (a failure at
    1e12 + 3 is not 'at t = 1e+12')."""
    t = float(t)
    magnitude = int(math.log10(abs(t))) if math.isfinite(t) and t != 0 else 0
    return f"{t:.{min(17, max(10, magnitude + 7))}g}"


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
        text = f"SUNDIALS failed with {flag_name} ({flag}) at t = {time_text(t)}"
        if problem:
            text += f" in the {problem} problem"
        if reason:
            text += f": {reason.rstrip('. ') if kernel_failure else reason}"
        if kernel_failure:
            text += f". {kernel_failure}"
        super().__init__(text)


def describe_kernel_failure(kernel, t, y, evaluate, entries, state_names):
    """Which outputs of a kernel are non-finite or numerically unstable at (t, y), in the
    user's names ("" if none).

    ``evaluate(state)`` gives the kernel's outputs, ``entries[k]`` names output k (e.g.
    ``"d hares'/d lynx"``). Unstable: for some state moved by 1e-6 relative, the value at y
    is more than 1000 times as far from the mean of the two values nearby (moved either
    way) as that mean is from 0 (a removable 0/0 evaluated near its point does this).
    """
    if not np.all(np.isfinite(y)):
        # No state the integrator reached (e.g. it failed before its first step): a kernel
        # evaluated at NaN says nothing about the model.
        return ""
    state = ", ".join(f"{name}={float(value)!r}" for name, value in zip(state_names, y))
    try:
        values = evaluate(y)
    except Exception as error:  # e.g. a Piecewise evaluated where no branch covers
        return (f"The {kernel} kernel raised {type(error).__name__}({error}) at t = {time_text(t)} "
                f"with state ({state}).")
    bad = list(np.flatnonzero(~np.isfinite(values)))
    what = "non-finite values"
    if not bad:
        nearby = np.zeros_like(values)
        for j in range(len(y)):
            step = np.zeros_like(y)
            step[j] = 1e-6 * max(abs(y[j]), 1e-8)
            try:
                mean = (evaluate(y - step) + evaluate(y + step)) / 2
            except Exception:  # raises nearby, not at y: no instability to report
                continue
            floor = 1e-8 * np.abs(mean).max(initial=0.0) + 1e-300
            unstable = np.abs(values - mean) > 1e3 * (np.abs(mean) + floor)
            nearby[unstable] = mean[unstable]
            bad += [k for k in np.flatnonzero(unstable) if k not in bad]
        what = "numerically unstable values (" + ", ".join(
            f"{values[k]:.3g} there, {nearby[k]:.3g} nearby" for k in bad[:3]) + ")"
    if not bad:
        return ""
    names = ", ".join(entries[k] for k in bad[:5])
    if len(bad) > 5:
        names += f" and {len(bad) - 5} more"
    return (f"The {kernel} kernel gave {what} at t = {time_text(t)} for {names}, with state ({state}). "
            f"Check those expressions there: e.g. a 0/0 that is removable analytically (rewrite "
            f"it, e.g. with a series near the point), or sqrt/log of a negative number.")


def pattern_entries(colptr, rows, row_names, column_names, template="d {row}/d {column}"):
    """Names of the entries of a CSC pattern, in its value order."""
    return [template.format(row=row_names[rows[k]], column=column_names[j])
            for j in range(len(colptr) - 1) for k in range(colptr[j], colptr[j + 1])]


def kernel_evaluator(kernel, t, params, size):
    """``state -> kernel(t, state, params)`` (``size`` outputs), for describe_kernel_failure."""
    def evaluate(state):
        out = np.zeros(max(size, 1))
        kernel(float(t), state, params, out)
        return out[:size]
    return evaluate
