"""Dosing tables in the NONMEM / Torsten record style -> one dose schedule per subject.

A table has one row per record. Its columns (names case-insensitive, NONMEM's in brackets):

``time`` (TIME)
    When the dose is given.
``amount`` (AMT)
    How much; >= 0.
``compartment`` (CMT)
    Which state receives it: a state name as `sunode_like.Doses` takes it (``"gut"``,
    ``"x[2]"`` for an entry of a shaped state), or NONMEM's number, 1-based in the order of
    ``states`` (a problem's flat state order).
``rate`` (RATE), optional
    0 (default): a bolus, the state jumps by ``amount``. > 0: a zero-order infusion of
    ``rate`` per unit time for ``amount / rate``.
``ii``, ``addl`` (II, ADDL), optional
    ``addl`` more doses like this one, every ``ii`` after it.
``evid`` (EVID), optional
    1: a dose; 0 (an observation) and 2 (other) are not doses. Without the column every
    row is a dose.
``id`` (ID), optional
    The subject.

Doses after a subject's last observation cannot change any output (an output at a dose
time reports the state before the dose), so they are dropped, and counted in
`DoseSchedule.dropped`: repeated doses (``addl``) usually run past the end of a study.
A dose before ``t0`` is an error, as are unsorted times within a subject, NaN, negative
amounts and rates, and unknown compartments: each names its row and column.
"""
from dataclasses import dataclass

import numpy as np

from ._doses import Doses
from ._layout import entry_names

# Our column name -> the names a table may use for it (lower case).
_COLUMNS = {
    "time": ("time",), "amount": ("amount", "amt"), "compartment": ("compartment", "cmt"),
    "rate": ("rate",), "ii": ("ii",), "addl": ("addl",), "evid": ("evid",), "id": ("id",),
    "ss": ("ss",),
}
_REQUIRED = ("time", "amount", "compartment")
_EVID = {0: "observation", 1: "dose", 2: "other"}


@dataclass(frozen=True)
class DoseSchedule:
    """One subject's doses, sorted by time: dose k puts ``amount[k]`` into the state named
    ``state[k]`` at ``time[k]``, as a bolus (``rate[k] == 0``) or an infusion of
    ``rate[k]`` per unit time. ``dropped`` counts doses after the last observation."""

    time: np.ndarray
    amount: np.ndarray
    state: tuple
    rate: np.ndarray
    dropped: int = 0

    def __len__(self):
        return len(self.time)

    def doses(self):
        """These records as `sunode_like.Doses`, for ``solve(..., doses=...)`` and
        ``solve_ivp(..., doses=...)`` (build `Doses` yourself to make times or amounts
        tensors, e.g. ``time + lag``)."""
        return Doses(self.time, self.amount, self.state, self.rate)


def dose_schedule(table, states, *, t0=0.0, last_time=None):
    """The doses of a table of one subject (see `doses_by_subject`)."""
    schedules = doses_by_subject(table, states, t0=t0, last_time=last_time)
    if len(schedules) != 1:
        raise ValueError(f"`table` holds {len(schedules)} subjects ({list(schedules)[:5]}); expected one. "
                         "Use doses_by_subject for several.")
    return next(iter(schedules.values()))


def doses_by_subject(table, states, *, t0=0.0, last_time=None):
    """Each subject's `DoseSchedule` from a dosing table.

    Parameters
    ----------
    table : pandas.DataFrame or dict of column name -> 1-d sequence
        The records, columns as in this module's description. Rows of one subject are in
        time order (NONMEM's rule).
    states : sequence of str, or a problem
        The state names a compartment may name (a problem's flat entries, in its order).
    t0 : float
        The start of the solves: a dose before it is an error.
    last_time : float or dict of subject -> float, optional
        Doses after it are dropped. Default: each subject's last observation (``evid`` 0),
        or no limit without observations.

    Returns
    -------
    dict
        Subject id -> `DoseSchedule`, in the order subjects first appear (key ``None``
        without an ``id`` column).

    Raises
    ------
    ValueError, TypeError
        Naming the row and column: a missing column, NaN, a negative amount or rate, an
        ``addl`` without ``ii``, an unknown compartment or ``evid``, unsorted times within a
        subject, a dose before ``t0``.
    """
    columns, labels = _columns(table)
    names = _state_names(states)
    n_rows = len(labels)
    evid = _numbers(columns, "evid", labels, default=1.0)
    for i in np.flatnonzero(~np.isin(evid, list(_EVID))):
        raise ValueError(f"{_row(labels, i)}: `evid` is {evid[i]:g}; expected one of "
                         f"{', '.join(f'{k} ({v})' for k, v in _EVID.items())}. Resets (3, 4) are not supported.")
    ids = columns.get("id", np.full(n_rows, None, dtype=object))
    subjects = {}
    for i in range(n_rows):
        if ids[i] is not None and ids[i] != ids[i]:  # NaN
            raise ValueError(f"{_row(labels, i)}: `id` is NaN; expected a subject id.")
        subjects.setdefault(_plain(ids[i]), []).append(i)
    is_dose = evid == 1
    time = _numbers(columns, "time", labels, rows=np.ones(n_rows, bool))
    doses = {name: _numbers(columns, name, labels, rows=is_dose, default=default)
             for name, default in (("amount", None), ("rate", 0.0), ("ii", 0.0), ("addl", 0.0), ("ss", 0.0))}
    for i in np.flatnonzero(is_dose):
        _check_dose_row(labels, i, time[i], t0, {k: v[i] for k, v in doses.items()})
    states_of = {i: _state_name(columns["compartment"][i], names, labels, i) for i in np.flatnonzero(is_dose)}

    result = {}
    for subject, rows in subjects.items():
        rows = np.array(rows)
        for previous, i in zip(rows[:-1], rows[1:]):
            if time[i] < time[previous]:
                raise ValueError(f"{_row(labels, i)}: `time` {time[i]} is before the previous record's "
                                 f"{time[previous]} ({_row(labels, previous)}); expected the rows of each "
                                 "subject in time order. Sort the table by id and time.")
        observed = rows[evid[rows] == 0]
        limit = _last_time(last_time, subject, time[observed] if len(observed) else None)
        result[subject] = _expand(rows[is_dose[rows]], time, doses, states_of, limit)
    return result


def _expand(rows, time, doses, states_of, limit):
    """The records' doses and their ``addl`` repetitions, sorted by time (stably, so doses at
    one time keep the table's order), those after ``limit`` dropped."""
    repeats = [1 + int(doses["addl"][i]) for i in rows]
    record = np.repeat(rows, repeats)
    times = np.concatenate([time[i] + doses["ii"][i] * np.arange(n) for i, n in zip(rows, repeats)]) \
        if len(rows) else np.empty(0)
    keep = times <= limit
    order = np.argsort(times[keep], kind="stable")
    record, times = record[keep][order], times[keep][order]
    return DoseSchedule(time=times, amount=doses["amount"][record], rate=doses["rate"][record],
                        state=tuple(states_of[i] for i in record), dropped=int(np.count_nonzero(~keep)))


def _check_dose_row(labels, i, time, t0, values):
    where = _row(labels, i)
    if time < t0:
        raise ValueError(f"{where}: `time` {time} is before t0 = {t0}; expected doses at or after "
                         "the start of the solve. Pass an earlier `t0`.")
    for name in ("amount", "rate", "ii", "addl"):
        if values[name] < 0:
            hint = (" NONMEM's -1 and -2 (a modelled rate or duration) are not supported: give the rate."
                    if name == "rate" else "")
            raise ValueError(f"{where}: `{name}` is {values[name]}; expected >= 0.{hint}")
    if values["addl"] != int(values["addl"]):
        raise ValueError(f"{where}: `addl` is {values['addl']}; expected a whole number of additional doses.")
    if values["addl"] > 0 and values["ii"] == 0:
        raise ValueError(f"{where}: `addl` is {values['addl']:g} but `ii` is 0; expected the interval "
                         "between the additional doses in `ii`.")
    if values["ss"] != 0:
        raise ValueError(f"{where}: `ss` is {values['ss']}; steady-state doses are not supported. "
                         "Give the doses that lead to steady state (with `addl` and `ii`).")


def _last_time(last_time, subject, observation_times):
    if isinstance(last_time, dict):
        if subject not in last_time:
            raise ValueError(f"`last_time` has no entry for subject {subject!r}; expected one per subject "
                             f"(it has {list(last_time)[:5]}).")
        return float(last_time[subject])
    if last_time is not None:
        return float(last_time)
    return np.inf if observation_times is None else float(np.max(observation_times))


def _columns(table):
    """Our column name -> array, and the row labels (a DataFrame's index, else positions)."""
    if hasattr(table, "columns") and hasattr(table, "index"):  # a pandas DataFrame
        raw = {str(name): table[name].to_numpy() for name in table.columns}
        labels = list(table.index)
    elif isinstance(table, dict):
        # Lists stay as given (object arrays): np.asarray would turn [2, "x[0]"] into strings.
        raw = {str(name): np.asarray(values) if hasattr(values, "__array__") else np.array(list(values), dtype=object)
               for name, values in table.items()}
        lengths = {name: values.shape for name, values in raw.items()}
        if any(len(shape) != 1 for shape in lengths.values()) or len({s[0] for s in lengths.values()}) > 1:
            raise ValueError(f"`table` columns must be 1-d and of one length; got shapes {lengths}.")
        labels = list(range(len(next(iter(raw.values()))))) if raw else []
    else:
        raise TypeError(f"`table` must be a pandas DataFrame or a dict of columns; got {type(table).__name__}.")
    columns = {}
    for ours, aliases in _COLUMNS.items():
        found = [name for name in raw if name.lower() in aliases]
        if len(found) > 1:
            raise ValueError(f"`table` has columns {found}, which all mean `{ours}`; expected one of them.")
        if found:
            columns[ours] = raw[found[0]]
    missing = [name for name in _REQUIRED if name not in columns]
    if missing:
        raise ValueError(f"`table` has no column {' or '.join(repr(a) for a in _COLUMNS[missing[0]])}; "
                         f"got columns {list(raw)}. Expected {', '.join(_REQUIRED)} (and optionally rate, "
                         "ii, addl, evid, id).")
    return columns, labels


def _numbers(columns, name, labels, rows=None, default=None):
    """Column ``name`` as float64 (``default`` where it is absent), with an error naming the
    first of ``rows`` that is not a finite number."""
    n_rows = len(labels)
    if name not in columns:
        return np.full(n_rows, default, dtype=float)
    values = columns[name]
    checked = np.ones(n_rows, bool) if rows is None else rows
    out = np.full(n_rows, np.nan)
    for i in np.flatnonzero(checked):
        value = values[i]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{_row(labels, i)}: `{name}` is {value!r}; expected a number.")
        if not np.isfinite(value):
            raise ValueError(f"{_row(labels, i)}: `{name}` is {value}; expected a finite number"
                             + (f" (0 for none)." if default is not None else "."))
        out[i] = value
    return out


def _state_names(states):
    layout = getattr(states, "states", None)  # a problem
    names = entry_names(layout) if layout is not None else list(states)
    if not names or not all(isinstance(name, str) for name in names):
        raise TypeError(f"`states` must be a problem or a sequence of state names; got {states!r}.")
    return names


def _state_name(value, names, labels, i):
    """A compartment as a state name: a name, or a 1-based number into ``names``."""
    if isinstance(value, str):
        if value in names:
            return value
    elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)) \
            and value == int(value) and 1 <= value <= len(names):
        return names[int(value) - 1]
    numbered = ", ".join(f"{k + 1} = {name!r}" for k, name in enumerate(names))
    raise ValueError(f"{_row(labels, i)}: `compartment` is {value!r}, which is no state; expected a "
                     f"state name or number ({numbered}).")


def _row(labels, i):
    return f"row {labels[i]!r}"


def _plain(value):
    """A numpy scalar as the Python value (subject ids as dict keys)."""
    return value.item() if isinstance(value, np.generic) else value
