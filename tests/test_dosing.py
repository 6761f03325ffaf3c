"""Dosing tables -> per-subject dose schedules (sunode_like.dosing)."""
import numpy as np
import pytest

from sunode_like import dosing
from sunode_like.examples import pk

STATES = ["gut", "central"]


def nonmem_table():
    """Two subjects in NONMEM's layout: subject 1 takes 100 every 12 h (addl 3) orally and
    an infusion; subject 2 two boluses; observations (evid 0) in between."""
    pd = pytest.importorskip("pandas")
    return pd.DataFrame({
        "ID":   [1, 1, 1, 1, 1, 2, 2, 2, 2],
        "TIME": [0.0, 1.0, 20.0, 30.0, 40.0, 0.0, 2.0, 6.0, 8.0],
        "AMT":  [100.0, np.nan, 50.0, np.nan, np.nan, 80.0, np.nan, 80.0, np.nan],
        "CMT":  [1, 2, "central", 2, 2, "gut", 2, 1, 2],
        "RATE": [0.0, np.nan, 25.0, np.nan, np.nan, 0.0, np.nan, 0.0, np.nan],
        "II":   [12.0, np.nan, 0.0, np.nan, np.nan, 0.0, np.nan, 0.0, np.nan],
        "ADDL": [3, np.nan, 0, np.nan, np.nan, 0, np.nan, 0, np.nan],
        "EVID": [1, 0, 1, 0, 0, 1, 0, 1, 0],
    }, index=np.arange(10, 19))


def test_nonmem_table_expands_sorts_and_splits_subjects():
    schedules = dosing.doses_by_subject(nonmem_table(), STATES)
    assert list(schedules) == [1, 2]
    one = schedules[1]
    # 100 at 0, 12, 24, 36 (all before the last observation, at 40), the infusion at 20
    # sorted between them.
    np.testing.assert_array_equal(one.time, [0.0, 12.0, 20.0, 24.0, 36.0])
    np.testing.assert_array_equal(one.amount, [100.0, 100.0, 50.0, 100.0, 100.0])
    np.testing.assert_array_equal(one.rate, [0.0, 0.0, 25.0, 0.0, 0.0])
    assert one.state == ("gut", "gut", "central", "gut", "gut")
    assert one.dropped == 0
    two = schedules[2]
    np.testing.assert_array_equal(two.time, [0.0, 6.0])
    assert two.state == ("gut", "gut") and two.dropped == 0


def test_doses_after_the_last_observation_are_dropped():
    table = nonmem_table()
    table.loc[10, "ADDL"] = 9
    one = dosing.doses_by_subject(table, STATES)[1]
    # 100 every 12 h from 0 for 10 doses: those at 48 ... 108 come after the last observation (40)
    np.testing.assert_array_equal(one.time, [0.0, 12.0, 20.0, 24.0, 36.0])
    assert one.dropped == 6
    assert len(dosing.doses_by_subject(table, STATES, last_time=200.0)[1]) == 11
    assert len(dosing.doses_by_subject(table, STATES, last_time={1: 12.0, 2: 6.0})[1]) == 2


def test_dict_table_without_evid_or_id_is_one_subject():
    table = {"time": [0.0, 24.0], "amount": [100.0, 100.0], "compartment": ["central", "central"],
             "rate": [50.0, 0.0]}
    schedule = dosing.dose_schedule(table, pk.iv_problem())
    np.testing.assert_array_equal(schedule.time, [0.0, 24.0])
    np.testing.assert_array_equal(schedule.rate, [50.0, 0.0])
    assert schedule.state == ("central", "central")
    assert list(dosing.doses_by_subject(table, ["central"])) == [None]


def test_doses_at_one_time_keep_the_table_order():
    table = {"time": [0.0, 0.0, 0.0], "amount": [1.0, 2.0, 3.0], "cmt": ["central", "gut", "central"]}
    schedule = dosing.dose_schedule(table, STATES)
    np.testing.assert_array_equal(schedule.amount, [1.0, 2.0, 3.0])
    assert schedule.state == ("central", "gut", "central")


def test_schedule_gives_the_references_numbers():
    """A table's schedule, fed to the closed form, is the superposition of its doses; as
    Doses, the solver's solve matches it."""
    import sunode_like as sl

    table = {"time": [0.0], "amount": [100.0], "cmt": [1], "ii": [12.0], "addl": [5]}
    schedule = dosing.dose_schedule(table, STATES)
    t = np.array([30.0, 70.0])
    by_table = pk.oral_reference(t, schedule.time, schedule.amount, 1.0, 5.0, 30.0).y
    by_hand = sum(pk.oral_reference(t, [12.0 * k], [100.0], 1.0, 5.0, 30.0).y for k in range(6))
    np.testing.assert_allclose(by_table, by_hand, rtol=1e-14)
    assert by_table[1, 1] > 10.0
    solver = sl.Solver(pk.oral_problem(), rtol=1e-10, atol=1e-10)
    solver.set_params_dict({"ka": 1.0, "CL": 5.0, "V": 30.0})
    y = solver.make_output_buffers(t)
    solver.solve(0.0, t, np.zeros(2), y, doses=schedule.doses())
    np.testing.assert_allclose(y, by_table, rtol=1e-8, atol=1e-8)  # atol: the gut is nearly empty at 70 h


@pytest.mark.parametrize("change, match", [
    ({"AMT": (10, -5.0)}, r"row 10: `amount` is -5.0; expected >= 0"),
    ({"RATE": (10, -1.0)}, r"row 10: `rate` is -1.0; expected >= 0\. NONMEM's -1 and -2"),
    ({"AMT": (15, np.nan)}, r"row 15: `amount` is nan; expected a finite number"),
    ({"TIME": (11, np.nan)}, r"row 11: `time` is nan"),
    ({"CMT": (12, "peripheral")}, r"row 12: `compartment` is 'peripheral', which is no state; .*1 = 'gut'"),
    ({"CMT": (12, 3)}, r"row 12: `compartment` is 3, which is no state"),
    ({"TIME": (13, 10.0)}, r"row 13: `time` 10.0 is before the previous record's 20.0 \(row 12\)"),
    ({"EVID": (11, 4)}, r"row 11: `evid` is 4; expected one of 0 \(observation\)"),
    ({"II": (10, 0.0)}, r"row 10: `addl` is 3 but `ii` is 0"),
    ({"ADDL": (10, 1.5)}, r"row 10: `addl` is 1.5; expected a whole number"),
    ({"ID": (14, np.nan)}, r"row 14: `id` is NaN"),
])
def test_bad_records_name_row_and_column(change, match):
    table = nonmem_table()
    (column, (row, value)), = change.items()
    if isinstance(value, str) or column == "CMT":
        table[column] = table[column].astype(object)
    table.loc[row, column] = value
    with pytest.raises(ValueError, match=match):
        dosing.doses_by_subject(table, STATES)


def test_bad_tables():
    with pytest.raises(ValueError, match=r"no column 'compartment' or 'cmt'"):
        dosing.doses_by_subject({"time": [0.0], "amount": [1.0]}, STATES)
    with pytest.raises(ValueError, match=r"which all mean `amount`"):
        dosing.doses_by_subject({"time": [0.0], "amount": [1.0], "AMT": [1.0], "cmt": [1]}, STATES)
    with pytest.raises(ValueError, match=r"before t0 = 1.0"):
        dosing.doses_by_subject({"time": [0.0], "amount": [1.0], "cmt": [1]}, STATES, t0=1.0)
    with pytest.raises(TypeError, match=r"row 0: `amount` is '1'; expected a number"):
        dosing.doses_by_subject({"time": [0.0], "amount": np.array(["1"], dtype=object), "cmt": [1]}, STATES)
    with pytest.raises(ValueError, match=r"`ss` is 1.0; steady-state doses are not supported"):
        dosing.doses_by_subject({"time": [0.0], "amount": [1.0], "cmt": [1], "ss": [1]}, STATES)
    with pytest.raises(ValueError, match=r"holds 2 subjects"):
        dosing.dose_schedule(nonmem_table(), STATES)
    with pytest.raises(ValueError, match=r"`last_time` has no entry for subject 2"):
        dosing.doses_by_subject(nonmem_table(), STATES, last_time={1: 5.0})
    with pytest.raises(TypeError, match=r"`table` must be a pandas DataFrame"):
        dosing.doses_by_subject([[0.0, 1.0, 1]], STATES)


def test_compartments_of_a_shaped_state_are_its_entries():
    """A problem's states name their flat entries as Doses does: "x[1]" for entry 1 of x;
    NONMEM's numbers count those entries."""
    import sunode_like as sl

    problem = sl.SympyProblem(params={"k": ()}, states={"x": (2,), "z": ()},
                              rhs_sympy=lambda t, y, p: {"x": [-p.k * y.x[0], -y.x[1]], "z": -y.z})
    table = {"time": [0.0, 1.0, 2.0], "amount": [1.0, 2.0, 3.0], "cmt": [2, "x[0]", 3]}
    assert dosing.dose_schedule(table, problem).state == ("x[1]", "x[0]", "z")
    with pytest.raises(ValueError, match=r"`compartment` is 'x', which is no state; .*1 = 'x\[0\]'"):
        dosing.dose_schedule({"time": [0.0], "amount": [1.0], "cmt": ["x"]}, problem)
