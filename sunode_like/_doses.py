"""Scheduled doses: boluses and zero-order infusions at given times (NONMEM's dose records).

Dose k has a time tau_k, an amount a_k, a state c_k and a rate r_k:

- r_k == 0, a bolus: y[c_k] jumps by +a_k at tau_k;
- r_k > 0, a zero-order infusion: r_k is added to dy[c_k]/dt on [tau_k, tau_k + a_k / r_k).

The integrator stops at every dose time and infusion end and starts again there, so it never
steps across a discontinuity. An output at a dose time is the state just *before* the dose
(a pre-dose sample, as in NONMEM and Torsten); with a dose at t0, y(t0) = y0 is pre-dose too.
"""
import numpy as np

from ._layout import entry_names
from ._sundials import ffi
from ._validate import real_array


class Doses:
    """Dose records of one solve.

    Parameters
    ----------
    time, amount : scalar or (n,) array
        Dose times (non-decreasing, within [t0, tvals[-1]]) and amounts (>= 0).
    state : str or (n,) sequence of str
        The state each dose goes into, named as ``entry_names`` names the flat entries:
        ``"gut"`` for a scalar state, ``"x[2]"`` (``"x[1, 2]"``) for an entry of a shaped
        one, ``"a.b"`` for a nested one.
    rate : scalar or (n,) array, default 0
        0 for a bolus; > 0 for an infusion of ``amount`` at this rate (it may end after
        tvals[-1]).

    Scalars broadcast to the length of the others (a tensor's static length counts; give
    ``state`` as a list to fix the length otherwise). In `solve_ivp`, ``time``, ``amount``
    and ``rate`` may be PyTensor variables (e.g. ``dose_times + lag``, ``F * dose``), whose
    gradients the Op computes; ``state`` is static.
    """

    def __init__(self, time, amount, state, rate=0.0):
        states = [state] if isinstance(state, str) else list(state)
        for k, name in enumerate(states):
            if not isinstance(name, str):
                raise TypeError(f"`doses.state[{k}]` must be a state name (str); got "
                                f"{type(name).__name__} {name!r}.")
        self.time, self.amount, self.rate = time, amount, rate
        lengths = {len(states)} if not isinstance(state, str) else set()
        for name, value in (("time", time), ("amount", amount), ("rate", rate)):
            ndim = getattr(value, "ndim", np.ndim(value))
            if ndim > 1:
                raise ValueError(f"`doses.{name}` must be a scalar or 1-d; got {ndim} dimensions.")
            length = value.type.shape[0] if hasattr(value, "type") and ndim == 1 else (
                len(value) if ndim == 1 else None)  # a tensor's static length, if known
            if length is not None:
                lengths.add(length)
        if len(lengths) > 1:
            raise ValueError(f"`doses` entries must have equal lengths (or be scalars); got "
                             f"lengths {sorted(lengths)}.")
        self.n = lengths.pop() if lengths else None
        self.state_names = states

    def state_indices(self, problem):
        """The flat state index of each dose's state (int64, length n): a ValueError names an
        unknown state and lists the valid names."""
        names = entry_names(problem.states)
        index = {name: i for i, name in enumerate(names)}
        unknown = [name for name in self.state_names if name not in index]
        if unknown:
            raise ValueError(f"`doses.state` names unknown states {unknown}; expected names of "
                             f"{names}.")
        indices = np.array([index[name] for name in self.state_names], dtype=np.int64)
        return np.broadcast_to(indices, (self._length(len(indices)),)).copy()

    def _length(self, n_states_given):
        return self.n if self.n is not None else n_states_given

    def values(self, problem, t0, tvals, time=None, amount=None, rate=None):
        """Checked float64 arrays ``(time, amount, rate, state)`` of equal length for a solve
        over [t0, tvals[-1]] (``time``, ``amount``, ``rate`` override the stored ones, e.g.
        with numbers for symbolic ones).

        Raises
        ------
        ValueError
            Naming the first entry that is not finite, unsorted, outside [t0, tvals[-1]],
            a negative amount or rate, or a state that does not exist.
        """
        state = self.state_indices(problem)
        given = {"time": self.time if time is None else time,
                 "amount": self.amount if amount is None else amount,
                 "rate": self.rate if rate is None else rate}
        arrays = {}
        for name, value in given.items():
            array = real_array(f"doses.{name}", value)
            if array.ndim > 1:
                raise ValueError(f"`doses.{name}` must be a scalar or 1-d; got shape {array.shape}.")
            if array.ndim == 1 and len(array) != len(state):
                raise ValueError(f"`doses.{name}` has {len(array)} entries; expected {len(state)}.")
            arrays[name] = np.ascontiguousarray(np.broadcast_to(array, state.shape), dtype=np.float64)
            bad = np.flatnonzero(~np.isfinite(arrays[name]))
            if len(bad):
                raise ValueError(f"`doses.{name}[{bad[0]}]={arrays[name][bad[0]]}` must be finite.")
        time, amount, rate = arrays["time"], arrays["amount"], arrays["rate"]
        t_last = float(tvals[-1])
        for k in range(len(state)):
            if not t0 <= time[k] <= t_last:
                raise ValueError(f"`doses.time[{k}]={time[k]}` is outside the solve; expected "
                                 f"t0={t0} <= time <= tvals[-1]={t_last}. Leave out doses after "
                                 f"the last output time.")
            if k and time[k] < time[k - 1]:
                raise ValueError(f"`doses.time` must be sorted (non-decreasing); got time[{k - 1}]="
                                 f"{time[k - 1]} > time[{k}]={time[k]}. Sort the records by time.")
            for name, values in (("amount", amount), ("rate", rate)):
                if values[k] < 0:
                    raise ValueError(f"`doses.{name}[{k}]={values[k]}` is negative; expected >= 0.")
        return time, amount, rate, state


def c_doses(values):
    """An ``sl_doses *`` over the arrays ``(time, amount, rate, state)`` of `Doses.values`
    (keep ``values`` alive with it)."""
    time, amount, rate, state = values
    doses = ffi.new("sl_doses *")
    doses.n = len(state)
    doses.time = ffi.from_buffer("double[]", time)
    doses.amount = ffi.from_buffer("double[]", amount)
    doses.rate = ffi.from_buffer("double[]", rate)
    doses.state = ffi.from_buffer("int64_t[]", state)
    return doses


def infusion_rates(values, t, after, n_states):
    """The sum of the rates of the infusions into each state (n_states,) that are on just
    after t (``after``: time <= t < end) or just before it (time < t <= end), for doses'
    ``values`` ``(time, amount, rate, state)``."""
    time, amount, rate, state = values
    infusing = rate > 0
    end = time + np.divide(amount, rate, out=np.zeros_like(amount), where=infusing)
    on = (time <= t) & (t < end) if after else (time < t) & (t <= end)
    return np.bincount(state, weights=np.where(infusing & on, rate, 0.0), minlength=n_states)
