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
