"""The pure parts of the token view and of the group chooser: escaping and shading, top tokens, id lists."""

import numpy as np

from ui.behaviour import parse_ids
from ui.token_view import POSITIVE, legend_html, shaded_html, top_tokens, visible


def test_shading_escapes_text_and_scales_by_the_largest_share():
    html = shaded_html(["<script>alert(1)</script>", " a&b", "\n", " end"], [2.0, -1.0, 0.0, 0.5], prompt_len=2)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "a&amp;b" in html
    assert "rgba(33, 102, 172, 0.850)" in html  # the largest |share| in full colour
    assert "rgba(214, 96, 77, 0.425)" in html  # -1 of 2: half, red
    assert "rgba(33, 102, 172, 0.000)" in html  # a zero share: no colour
    assert html.index("▌response ▸") < html.index(" end") and html.index("▌response ▸") > html.index("a&amp;b")
    assert 'title="token 0: +2 (+133.3% of the score)"' in html
    assert shaded_html(["x"], [0.0], 1).count("rgba(") == 1  # all-zero shares: no division by zero


def test_top_tokens_and_visible_whitespace():
    df = top_tokens([" a", "b\n", "c", "\t"], [0.1, 3.0, -2.0, -0.5], prompt_len=2, n=2)
    assert df.token.tolist() == ["b⏎", "␣a", "c", "⇥"] and df.part.tolist() == ["prompt", "prompt", "response",
                                                                                "response"]
    np.testing.assert_allclose(df["of score"], np.array([3.0, 0.1, -2.0, -0.5]) / 0.6)
    assert visible("") == "∅" and "±" in legend_html(1.5) and str(POSITIVE[0]) in legend_html(1.0)


def test_parse_ids():
    assert parse_ids("3, 5, 7-9") == ([3, 5, 7, 8, 9], None)
    assert parse_ids("3 5;7 - 9 5") == ([3, 5, 7, 8, 9], None)
    assert parse_ids("") == ([], None)
    assert parse_ids("4, x") == ([], "'x' is not an id or a range like 7-9")
    assert parse_ids("9-7") == ([], "range '9-7' runs backwards")
    assert parse_ids("1, 40-41", {0, 1, 2}) == ([], "no test sample 40, 41")
    assert parse_ids("0-999999999")[1] == "more than 100000 ids"
