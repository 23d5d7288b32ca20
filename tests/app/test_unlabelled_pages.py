"""AppTest: every page over a run whose data has no labels — no exception, no error, and where a label metric
would be, the words "needs labels", never NaN (or None) standing for a number."""

import re

import pytest

from engine.evaluation.metrics import LABEL_METRICS
from engine.paths import REPO_ROOT
from ui.labels import NEEDS_LABELS
from ui.navigation import PAGES

# how a missing number prints (f"{nan:.2f}", str(None) after a field name); "NaN:" opens an explanation
NAN_WORD = re.compile(r"\bnan\b|\bNaN\b(?!:)|: None\b|\(None\)")


def _texts(at) -> list[str]:
    return [str(e.value) for kind in ("markdown", "caption", "info", "warning", "metric", "subheader")
            for e in getattr(at, kind)]


def _label_cells(at) -> list:
    """Every value in a label-metric column of the page's tables."""
    return [v for df in at.dataframe for c in df.value.columns if c in LABEL_METRICS for v in df.value[c]]


@pytest.mark.parametrize("info", PAGES, ids=lambda p: p.title)
def test_every_page_opens_on_an_unlabelled_run(unlabelled_store_env, open_page, info):
    at = open_page(REPO_ROOT / info.file, run=unlabelled_store_env)
    bad = [t for t in _texts(at) if NAN_WORD.search(t)]
    assert bad == []
    assert all(v == NEEDS_LABELS for v in _label_cells(at)), _label_cells(at)


def test_home_ranks_by_lds_and_says_there_is_no_ground_truth(unlabelled_store_env, open_page):
    at = open_page(REPO_ROOT / "app_pages" / "home.py")
    text = " ".join(_texts(at))
    assert "No ground truth is available" in text and "linear datamodeling score" in text
    assert f"their data has no labels (Acc@1 and Coverage@k {NEEDS_LABELS}): {unlabelled_store_env}" in text
    board = next(d.value for d in at.dataframe if "agreement_spearman" in d.value.columns)
    assert list(board.columns[:3]) == ["method", "agreement_spearman", "agreement_overlap"]
    lds = board.lds.dropna()
    assert len(lds) and lds.is_monotonic_decreasing  # ranked by LDS, the ground truth that needs no labels
    assert board.agreement_overlap.between(0, 1).all()


def test_explore_shows_rankings_without_label_marks(unlabelled_store_env, open_page):
    at = open_page(REPO_ROOT / "app_pages" / "explore.py", methods="gradsim,repsim")
    assert [m.value for m in at.metric][:4] == [NEEDS_LABELS] * 4  # top-1 and coverage of two methods
    ranked = [d.value for d in at.dataframe if "rank" in d.value.columns and "test_id" not in d.value.columns]
    assert len(ranked) == 2  # one per method
    for table in ranked:
        assert "label" not in table.columns and len(table) == 10
    assert not any("✓" in t or "✗" in t for t in _texts(at))
    assert all(o.count(" · ") == 1 for o in at.selectbox(key="test").options)  # "#id · prompt": no label part
