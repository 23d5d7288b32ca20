"""Log-axis ticks: powers of ten over wide ranges, 1-2-5 steps within a decade or two."""

from ui.log_axis import log_ticks


def test_log_ticks_label_every_range_readably():
    one_decade = log_ticks([0.2, 0.5, 3.0])
    assert one_decade["tickvals"] == [0.2, 0.5, 1, 2] and one_decade["ticktext"] == ["0.2", "0.5", "1", "2"]
    wide = log_ticks([1e-5, 3.0])
    assert wide["tickvals"] == [1e-05, 1e-4, 1e-3, 0.01, 0.1, 1] and wide["ticktext"][:2] == ["1e-05", "1e-04"]
    narrow = log_ticks([1.0, 1.3])
    assert len(narrow["tickvals"]) >= 2
    assert log_ticks([0, float("nan")]) == {}


def test_a_log_axis_only_for_data_spanning_half_a_decade():
    from ui.log_axis import worth_log

    assert not worth_log([0.99, 1.0, 1.23])  # the LiSSA step sweep of the SmolLM2 demo: a log axis showed "1" only
    assert worth_log([1e-4, 1.0]) and worth_log([1.0, 3.2])
    assert not worth_log([]) and not worth_log([0.0, -1.0, float("nan")])
