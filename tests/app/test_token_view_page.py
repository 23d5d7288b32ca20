"""AppTest: Explore's token view — a stored result is drawn (escaped text, legend, top tokens, the sum check), a
missing one offers the job (which asks for the drilled sample and the shown methods' top samples), read-only
deployments offer none, and methods without a token view say why."""

import os
from pathlib import Path

import numpy as np

from engine.paths import REPO_ROOT
from engine.scoring.token_files import TokenResult, manifest_id, result_path
from ui import token_job

PAGE = str(REPO_ROOT / "app_pages" / "explore.py")
PIECES = ["Determine", " <b>rule</b>", ":", " the", " cat", " [/INST]", " Reverse", "<|endoftext|>"]


def _write_result(run: str, train_id: int, n_test: int = 10) -> Path:
    folder = Path(os.environ["INFLUENCE_RUNS"]) / run
    tokens = Path(os.environ["INFLUENCE_STORE"]).parent / "tokens"
    rng = np.random.default_rng(0)
    shares = {m: rng.normal(size=(n_test, len(PIECES))).tolist() for m in ("datainf", "gradsim")}
    shares["datainf"][3] = [0.5, 3.0, 0.0, -1.0, 0.2, 0.1, 0.1, 0.1]
    r = TokenResult(run=run, manifest=manifest_id(folder), checkpoint=2, train_id=train_id, pieces=PIECES,
                    token_ids=list(range(len(PIECES))), prompt_len=6, loss=[False] * 6 + [True, True], shares=shares,
                    scores={m: np.sum(v, axis=1).tolist() for m, v in shares.items()},
                    stored={m: np.sum(v, axis=1).tolist() for m, v in shares.items()}, seconds=12.0)
    path = result_path(tokens, run, r.manifest, 2, train_id)
    r.write(path)
    return path


def _html(at) -> str:
    return next(m.value for m in at.markdown if "white-space:pre-wrap" in m.value)


def test_a_stored_result_is_drawn_escaped_with_its_top_tokens(store_env, open_page):
    _write_result(store_env, 7)
    at = open_page(PAGE, test=3, train=7, methods="datainf,repsim,gradsim", tokm="datainf")
    assert at.selectbox(key="tokm").value == "datainf" and at.selectbox(key="tokm").options == [
        "datainf", "gradsim"]
    html = _html(at)
    assert "&lt;b&gt;rule&lt;/b&gt;" in html and "<b>rule" not in html  # dataset text stays text
    assert "rgba(33, 102, 172, 0.850)" in html  # the largest share (token 1, positive) in full blue
    assert "rgba(214, 96, 77, 0.283)" in html  # -1.0 of max 3.0, red
    assert "▌response ▸" in html
    assert any("lowers the score" in m.value for m in at.markdown)
    table = next(d.value for d in at.dataframe if "token" in d.value.columns)
    assert table.token.iloc[0] == "␣<b>rule</b>" and table.share.iloc[0] == 3.0
    assert table.share.iloc[-1] == -1.0 and table.part.iloc[0] == "prompt"
    assert any("the shares add up to 3 (the run stored 3)" in c.value for c in at.caption)
    assert any("No token view for repsim" in c.value for c in at.caption)
    at.selectbox(key="tokm").set_value("gradsim").run()
    assert not at.exception and at.query_params["tokm"] == "gradsim"


def test_a_missing_result_offers_the_job(store_env, monkeypatch, open_page):
    launched = []
    monkeypatch.setattr(token_job, "launch", lambda store, tokens, run, ck, ids: launched.append((run, ck, ids)))
    at = open_page(PAGE, test=3, train=5, k=3)
    button = at.button(key="tok_compute")
    assert "Compute token shares" in button.label
    button.click().run()
    assert not at.exception
    (run, ck, ids), = launched
    assert run == store_env and ck == 2 and ids[0] == 5 and len(ids) == len(set(ids)) <= 16
    ranked = [d.value for d in at.dataframe if {"rank", "train_id", "score"} <= set(d.value.columns)]
    assert set(ids[1:]) == {int(i) for t in ranked for i in t.train_id} - {5}


def test_read_only_offers_no_job(store_env, monkeypatch, open_page):
    monkeypatch.setenv("INFLUENCE_READ_ONLY", "1")
    at = open_page(PAGE, test=3, train=5)
    assert not [b for b in at.button if b.key == "tok_compute"]
    assert any("read-only" in c.value for c in at.caption)
