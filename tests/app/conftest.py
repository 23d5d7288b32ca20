"""Fixtures for the AppTest page tests."""

import shutil

import pytest
import streamlit as st


def _store_env(monkeypatch, tmp_path, run_folder) -> str:
    """A fresh store path whose runs folder holds a copy of ``run_folder`` (the page ingests it on first look)."""
    runs = tmp_path / "runs"
    shutil.copytree(run_folder, runs / run_folder.name)
    monkeypatch.setenv("INFLUENCE_STORE", str(tmp_path / "s.duckdb"))
    monkeypatch.setenv("INFLUENCE_RUNS", str(runs))
    st.cache_resource.clear()
    return run_folder.name


@pytest.fixture
def store_env(monkeypatch, tmp_path, tiny_run):
    """A store whose runs folder holds the tiny run; returns the run name."""
    return _store_env(monkeypatch, tmp_path, tiny_run)


@pytest.fixture
def analysis_store_env(monkeypatch, tmp_path, tiny_analysis_run):
    """Like ``store_env`` with the tiny run that has all three analyses; returns its run name."""
    return _store_env(monkeypatch, tmp_path, tiny_analysis_run)


@pytest.fixture
def unlabelled_store_env(monkeypatch, tmp_path, tiny_unlabelled_run):
    """Like ``store_env`` with the tiny run on an unlabelled dataset (and the three analyses); returns its name."""
    return _store_env(monkeypatch, tmp_path, tiny_unlabelled_run)


@pytest.fixture
def jobs_env(monkeypatch, tmp_path):
    """An empty store in ``tmp_path`` (jobs in ``tmp_path/jobs``), writable; returns ``tmp_path``."""
    monkeypatch.setenv("INFLUENCE_STORE", str(tmp_path / "s.duckdb"))
    monkeypatch.delenv("INFLUENCE_JOBS", raising=False)
    monkeypatch.delenv("INFLUENCE_READ_ONLY", raising=False)
    st.cache_resource.clear()
    return tmp_path


@pytest.fixture
def open_page():
    """``open_page(script, **query_params)``: run a page with AppTest and assert it raised and showed no error."""
    from streamlit.testing.v1 import AppTest

    def run(script, **params):
        at = AppTest.from_file(str(script), default_timeout=60)
        for key, value in params.items():
            at.query_params[key] = value
        at.run()
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
        return at

    return run


def _decoded(value):
    """A plotly JSON value with its typed arrays (``{"dtype", "bdata"}``) decoded to lists."""
    import base64

    import numpy as np

    if isinstance(value, dict) and "bdata" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        if isinstance(shape, str):  # "rows, columns"
            shape = [int(n) for n in shape.split(",")]
        return arr.reshape(shape).tolist() if shape else arr.tolist()
    if isinstance(value, dict):
        return {k: _decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    return value


def chart_figures(at) -> dict:
    """The page's plotly charts by widget key (the element id ends with it): key -> figure dict."""
    import json

    return {c.proto.id.rsplit("-", 1)[-1]: _decoded(json.loads(c.proto.spec)) for c in at.get("plotly_chart")}


@pytest.fixture
def charts():
    """``charts(at)``: the page's plotly figures by widget key (see :func:`chart_figures`)."""
    return chart_figures


class RunData:
    """What a run folder holds, read straight from its files (the truth a page is checked against)."""

    def __init__(self, folder):
        import json

        import pyarrow.parquet as pq

        self.folder = folder
        self.manifest = json.loads((folder / "manifest.json").read_text())
        s = pq.read_table(folder / "samples.parquet").to_pandas()
        self.train = s[s.split == "train"].set_index("sample_id").sort_index()
        self.test = s[s.split == "test"].set_index("sample_id").sort_index()
        self.k = int(self.manifest["k_default"])
        self.last_checkpoint = max(self.manifest["checkpoints"])

    def table(self, name):
        import pyarrow.parquet as pq

        return pq.read_table(self.folder / f"{name}.parquet").to_pandas()


@pytest.fixture
def tiny_data(tiny_run):
    """:class:`RunData` of the tiny run (what ``store_env`` serves)."""
    return RunData(tiny_run)


@pytest.fixture
def analysis_data(tiny_analysis_run):
    """:class:`RunData` of the tiny run with the three analyses (what ``analysis_store_env`` serves)."""
    return RunData(tiny_analysis_run)
