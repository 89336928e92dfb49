"""Time windows (N in -> 2N-1 out, most central window, mirrored ends) and time parsing."""
from datetime import datetime, timedelta, timezone

import pytest

from mstt_stvsr.core.errors import InputError
from mstt_stvsr.core.geo.times import output_sources, output_times, parse_time, parse_times_arg, tiff_datetime
from mstt_stvsr.core.run.windows import mirror_index, plan_windows


def test_mirror_index_reflects_without_repeating_the_end():
    assert [mirror_index(i, 4) for i in range(-3, 8)] == [3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]
    assert [mirror_index(i, 2) for i in range(-2, 4)] == [0, 1, 0, 1, 0, 1]
    assert mirror_index(5, 1) == 0


@pytest.mark.parametrize("n", [2, 3, 4, 5, 9, 16])
def test_every_output_made_once_from_its_most_central_window(n):
    plan = plan_windows(n)
    made = sorted(p for w in plan for p, _ in w.outputs)
    assert made == list(range(2 * n - 1))
    for w in plan:
        assert len(w.frames) == 4 and all(0 <= f < n for f in w.frames)
        # consecutive frames of a window are neighbours in time (mirroring keeps motion continuous)
        assert all(abs(a - b) == 1 for a, b in w.pairs)
        for p, pos in w.outputs:
            assert pos == p - 2 * w.start and 0 <= pos <= 6
            if pos % 2 == 0:  # an input position shows that input frame
                assert w.frames[pos // 2] == p // 2
            else:  # a middle position lies between the two frames it interpolates
                assert {w.frames[pos // 2], w.frames[pos // 2 + 1]} == {p // 2, p // 2 + 1}
            # no other window has this output closer to its centre (position 3)
            best = min(abs(p - (2 * j + 3)) for j in range(-3, n + 1))
            assert abs(pos - 3) == best


def test_window_count_and_no_mirroring_inside_long_stacks():
    plan = plan_windows(9)
    assert len(plan) == 8  # N-1 network calls per tile
    inner = [w for w in plan if 0 <= w.start <= 9 - 4]
    assert all(len(set(w.frames)) == 4 for w in inner)
    assert plan_windows(2)[0].frames == (1, 0, 1, 0) and len(plan_windows(2)) == 1
    assert len(plan_windows(3)) == 2


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 9, 10, 16])
def test_fast_plan_makes_every_output_once_with_a_third_of_the_windows(n):
    plan = plan_windows(n, "fast")
    made = sorted(p for w in plan for p, _ in w.outputs)
    assert made == list(range(2 * n - 1))  # every output exactly once
    assert len(plan) == (1 if n <= 4 else -(-(n - 1) // 3))
    for w in plan:
        assert all(abs(a - b) == 1 for a, b in w.pairs)
        for p, pos in w.outputs:
            assert pos == p - 2 * w.start and 0 <= pos <= 6
            if pos % 2 == 0:
                assert w.frames[pos // 2] == p // 2
            else:
                assert {w.frames[pos // 2], w.frames[pos // 2 + 1]} == {p // 2, p // 2 + 1}
    mirrored = [w for w in plan if len(set(w.frames)) < 4]
    # mirrored frames only where the stack is too short for one window; otherwise the last
    # window is shifted back to end at the last frame
    assert (len(mirrored) == 1 and n < 4) or not mirrored
    assert plan[-1].frames[-1] == n - 1 or n < 4
    starts = [w.start for w in plan]
    assert starts == sorted(starts) and all(b - a <= 3 for a, b in zip(starts, starts[1:]))


def test_unknown_window_plan_is_refused():
    with pytest.raises(InputError, match="unknown window plan 'slow'"):
        plan_windows(5, "slow")


def test_fewer_than_two_frames_is_an_input_error():
    with pytest.raises(InputError, match="at least 2 frames"):
        plan_windows(1)


def test_output_sources():
    assert output_sources(3) == [(0,), (0, 1), (1,), (1, 2), (2,)]


@pytest.mark.parametrize("text,expected", [
    ("2021:05:03 10:15:30", datetime(2021, 5, 3, 10, 15, 30)),
    ("2021-05-03T10:15:30", datetime(2021, 5, 3, 10, 15, 30)),
    ("2021-05-03 10:15:30.25", datetime(2021, 5, 3, 10, 15, 30, 250000)),
    ("2021-05-03T10:15:30Z", datetime(2021, 5, 3, 10, 15, 30, tzinfo=timezone.utc)),
    ("2021-05-03T12:15:30+02:00", datetime(2021, 5, 3, 10, 15, 30, tzinfo=timezone.utc)),
    ("2021-05-03", datetime(2021, 5, 3)),
])
def test_parse_time_forms(text, expected):
    assert parse_time(text) == expected


def test_parse_time_rejects_garbage():
    with pytest.raises(ValueError, match="'yesterday'"):
        parse_time("yesterday")


def test_times_argument_count_order_and_format():
    ts = parse_times_arg("2021-05-03T10:00:00Z, 2021-05-03T10:00:01Z", 2)
    assert ts[1] - ts[0] == timedelta(seconds=1)
    with pytest.raises(InputError, match="gives 3 times for 2 input frames"):
        parse_times_arg("2021-05-03,2021-05-04,2021-05-05", 2)
    with pytest.raises(InputError, match="item 2"):
        parse_times_arg("2021-05-03,soon", 2)
    with pytest.raises(InputError, match="not after"):
        parse_times_arg(["2021-05-04", "2021-05-03"], 2)


def test_output_times_are_inputs_and_midpoints():
    t = [datetime(2021, 5, 3, 10, 0, 0), datetime(2021, 5, 3, 10, 0, 1), datetime(2021, 5, 3, 10, 0, 4)]
    out = output_times(t)
    assert out[0::2] == t
    assert out[1] == datetime(2021, 5, 3, 10, 0, 0, 500000)
    assert out[3] == datetime(2021, 5, 3, 10, 0, 2, 500000)
    assert output_times([t[0], None]) == [None] * 3


def test_tiff_datetime_is_utc_whole_seconds():
    t = datetime(2021, 5, 3, 12, 0, 0, 700000, tzinfo=timezone(timedelta(hours=2)))
    assert tiff_datetime(t) == "2021:05:03 10:00:00"
