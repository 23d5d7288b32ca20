"""The index of an existing run (``engine index``), the CLI's ``query`` and the one-call Python API."""

import json
import shutil

import numpy as np
import pytest

from engine.cli import main
from engine.errors import InputError
from engine.features.types import TrainData
from engine.query.api import ask
from engine.query.build import build_index
from engine.query.session import QuerySession
from engine.runfolder.runformat import INDEX_DIR, index_info, read_manifest
from engine.scoring.query_index import _key_from, _key_text, restore_stats


@pytest.fixture()
def bare_run(tiny_run, tmp_path):
    """A copy of the tiny run without its index (its feature cache was deleted after the run, as by default)."""
    folder = tmp_path / "runs" / tiny_run.name
    shutil.copytree(tiny_run, folder)
    shutil.rmtree(folder / INDEX_DIR)
    return folder


def test_a_run_with_query_index_on_keeps_one_and_says_its_size(tiny_run):
    info = index_info(tiny_run)
    assert read_manifest(tiny_run)["query_index"] == {k: info[k] for k in ("size_bytes", "checkpoints", "methods")}
    files = sorted(p.relative_to(tiny_run / INDEX_DIR).as_posix() for p in (tiny_run / INDEX_DIR).rglob("*.*"))
    assert files == ["ckpt-1/test-0-10.safetensors", "ckpt-1/train-00000.safetensors",
                     "ckpt-1/train-00001.safetensors", "ckpt-2/test-0-10.safetensors",
                     "ckpt-2/train-00000.safetensors", "ckpt-2/train-00001.safetensors", "index.json",
                     "stats.safetensors"]
    assert info["size_bytes"] == sum(p.stat().st_size for p in (tiny_run / INDEX_DIR).rglob("*.safetensors"))


def test_an_index_built_afterwards_answers_as_the_one_the_run_wrote(tiny_run, bare_run):
    body = build_index(bare_run, progress=False)
    assert body["checkpoints"] == [1, 2] and body["size_bytes"] > 0
    assert index_info(bare_run)["prompt_methods"] == index_info(tiny_run)["prompt_methods"]
    assert read_manifest(bare_run)["query_index"]["size_bytes"] == body["size_bytes"]  # still a complete run
    assert not (bare_run.parent.parent / "features").exists()  # the spec deletes its cache: the index has links
    built, written = QuerySession(bare_run), QuerySession(tiny_run)
    for m in ("datainf", "ekfac", "tracin", "gradsim_proj", "rept", "bm25"):
        a = built.ask("a b a b", "rule 2", methods=[m]).scores[m]
        b = written.ask("a b a b", "rule 2", methods=[m]).scores[m]
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12 * np.abs(b).max())
    with pytest.raises(InputError, match="has a query index already"):
        build_index(bare_run, progress=False)
    assert build_index(bare_run, force=True, progress=False)["checkpoints"] == [1, 2]


def test_the_statistics_kept_with_the_index_are_the_ones_a_query_computes(tiny_run):
    data = TrainData(n=0, bounds=[], loader=None)
    assert restore_stats(tiny_run / INDEX_DIR, data) > 0
    assert {"sq_norm_sum", "ekfac_sums"} <= {k[0] for k in data.memo}
    session = QuerySession(tiny_run)
    session.data[-1].train.memo.clear()  # forget what was restored: the query computes its statistics again
    session.ask("a b a b", "rule 2")
    fresh = session.data[-1].train.memo
    for key, value in data.memo.items():
        assert key in fresh
        assert fresh[key].shape == value.shape and bool((fresh[key] == value).all()), key


def test_memo_keys_survive_their_text_form():
    import torch

    key = ("gram", 3, torch.float64, torch.device("cpu"), 10.0, "x")
    assert _key_from(_key_text(key)) == key


def test_query_json_prints_method_rank_train_id_score(tiny_run, monkeypatch, capsys):
    monkeypatch.setenv("INFLUENCE_RUNS", str(tiny_run.parent))
    assert main(["query", "--run", tiny_run.name, "--prompt", "a b a", "--response", "rule 1", "--methods",
                 "gradsim,random", "--k", "3", "--json", "--no-server"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [sorted(r) for r in rows] == [["method", "rank", "score", "train_id"]] * 3
    assert [r["rank"] for r in rows] == [1, 2, 3] and {r["method"] for r in rows} == {"gradsim"}
    assert main(["query", "--run", tiny_run.name, "--prompt", "a b a", "--response", "rule 1", "--candidate",
                 "--methods", "datainf,bm25", "--k", "2", "--no-server"]) == 0
    out = capsys.readouterr().out
    assert "datainf: best test prompts #" in out and "bm25: cannot answer" in out


def test_query_errors_are_one_line(tiny_run, bare_run, monkeypatch, capsys):
    monkeypatch.setenv("INFLUENCE_RUNS", str(bare_run.parent))
    assert main(["query", "--run", tiny_run.name, "--prompt", "a", "--no-server"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and f"python -m engine index --run {tiny_run.name}" in err
    assert main(["query", "--run", "nosuch", "--prompt", "a"]) == 2
    assert "no run 'nosuch'" in capsys.readouterr().err
    assert main(["query", "--run", tiny_run.name, "--prompt", "a", "--response", "b", "--generate"]) == 2
    assert "not both" in capsys.readouterr().err


def test_ask_returns_a_dataframe_with_the_samples_text(tiny_run):
    df = ask(tiny_run.name, "a b a b", "rule 2", methods=["datainf", "repsim"], k=4, runs_dir=tiny_run.parent)
    assert list(df.columns[:4]) == ["method", "rank", "train_id", "score"] and len(df) == 8
    assert df["prompt"].notna().all() and df["label"].notna().all()
    assert df.attrs["computed"] == "local" and "random" not in df.attrs["cannot"]
    cand = ask(tiny_run.name, "a b a b", "rule 2", candidate=True, methods=["gradsim"], k=2,
               runs_dir=tiny_run.parent)
    assert list(cand.columns[:3]) == ["method", "rank", "test_id"] and len(cand) == 2
