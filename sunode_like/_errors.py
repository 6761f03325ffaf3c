"""Errors raised by the solvers."""


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

    def __init__(self, flag, flag_name, t, reason=""):
        self.flag = flag
        self.flag_name = flag_name
        self.t = t
        self.reason = reason
        text = f"SUNDIALS failed with {flag_name} ({flag}) at t = {t:.10g}"
        if reason:
            text += f": {reason}"
        super().__init__(text)
