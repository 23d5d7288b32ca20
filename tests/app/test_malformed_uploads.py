"""AppTest: the generated malformed inputs (tests/malformed_inputs.py) through the Jobs page's upload form.
Each is refused with a shown error naming the uploaded file and its line and field, no traceback, and nothing
is kept: no dataset folder, and no temporary copy left behind."""

import pytest
import streamlit as st
from malformed_inputs import DATASET_CASES, N_TEST, N_TRAIN, UTF8_BOM
from streamlit.testing.v1 import AppTest

from engine.paths import REPO_ROOT

JOBS = REPO_ROOT / "app_pages" / "jobs.py"


@pytest.fixture
def jobs_page(monkeypatch, tmp_path):
    """The Jobs page on an empty data folder, with the system temp folder moved where the test can see it."""
    import tempfile

    monkeypatch.setenv("INFLUENCE_STORE", str(tmp_path / "data" / "s.duckdb"))
    monkeypatch.delenv("INFLUENCE_JOBS", raising=False)
    monkeypatch.delenv("INFLUENCE_READ_ONLY", raising=False)
    temp = tmp_path / "system-temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    st.cache_resource.clear()
    at = AppTest.from_file(str(JOBS), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at, tmp_path / "data", temp


def _upload(at, filename, data, name="kept"):
    at.file_uploader(key="upload_file").upload(filename, data).run()
    at.text_input(key="upload_name").input(name)
    at.button(key="upload_keep").click().run()
    assert not at.exception, (filename, at.exception)
    return at


def test_every_malformed_upload_is_refused_with_its_file_line_and_field(jobs_page):
    at, data, temp = jobs_page
    wrong = []
    for case in DATASET_CASES:
        _upload(at, case.filename, case.data)
        errors = [e.value for e in at.error]
        shown = [e for e in errors if e.startswith("Not kept: ") and case.pattern(case.filename).search(e)]
        if len(errors) != 1 or not shown or "Traceback" in errors[0] or len(errors[0]) > 3000:
            wrong.append((case.name, [e[:300] for e in errors]))
        if (data / "datasets").exists() and any((data / "datasets").iterdir()):
            wrong.append((case.name, "a dataset folder was kept"))
        if any(temp.iterdir()):
            wrong.append((case.name, f"left {sorted(p.name for p in temp.iterdir())} in the temp folder"))
    assert wrong == []
    assert not at.success


def test_the_valid_upload_of_the_set_with_a_byte_order_mark_is_kept(jobs_page):
    import pyarrow.parquet as pq

    at, data, temp = jobs_page
    _upload(at, *UTF8_BOM, name="bom")
    assert not at.error, [e.value for e in at.error]
    assert any("Kept dataset bom" in s.value for s in at.success)
    kept = pq.read_table(data / "datasets" / "bom" / "train.parquet")
    assert kept.num_rows == N_TRAIN and pq.read_table(data / "datasets" / "bom" / "test.parquet").num_rows == N_TEST
    assert kept.column_names == ["prompt", "response", "label"] and list(temp.iterdir()) == []
