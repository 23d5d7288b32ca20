"""AppTest: the Dataset page's "Task difficulty" panel over the tiny run (grammars, 30 train, 10 test)."""

from engine.data.tasks import build_task
from engine.data.tasks.difficulty import length_stats, task_shortcut
from engine.paths import REPO_ROOT

DATASET = REPO_ROOT / "app_pages" / "dataset.py"


def test_difficulty_panel_shows_the_shortcut_rate_and_lengths(store_env, open_page, tiny_spec):
    at = open_page(DATASET)
    assert any(h.value == "Task difficulty" for h in at.subheader)
    t = tiny_spec["task"]
    task = build_task(t["name"], t["seed"], t["n_train_per_label"], t["n_test_per_label"])  # the run's data
    sc = task_shortcut(task.train, task.test)
    metric = next(m for m in at.metric if m.label == "Lexical shortcut")
    assert metric.value == f"{sc.rate:.2f}"
    sentence = next(m.value for m in at.markdown if "shares the most words" in m.value)
    assert f"{sc.rate:.0%}" in sentence and f"{sc.chance:.0%}" in sentence
    lengths = next(d.value for d in at.dataframe if "median" in d.value.columns)
    assert len(lengths) == 2 * len(task.labels)  # every label in both splits
    want = {s.label: s for s in length_stats([x.response for x in task.train], [x.label for x in task.train])}
    for row in lengths[lengths.split == "train"].itertuples():
        assert (row.n, row.min, row.max) == (want[row.label].n, want[row.label].min, want[row.label].max)
        assert row.median == want[row.label].median
