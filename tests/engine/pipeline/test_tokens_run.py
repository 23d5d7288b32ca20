"""Token attribution from a run folder (what ``python -m engine tokens`` does): the shares of every splitting
method sum to the scores the run stored, methods without a token view are listed with the reason, bad requests
name what is wrong and write nothing."""

import numpy as np
import pytest

from engine.cli import main
from engine.errors import InputError
from engine.pipeline.tokens import attribute_tokens
from engine.scoring.token_files import TokenResult, manifest_id, result_path


def test_shares_sum_to_the_stored_scores(tiny_run, tmp_path):
    paths = attribute_tokens(tiny_run, 2, [4], tmp_path, methods=["datainf", "tracin", "gradcos", "repsim"])
    assert paths == [result_path(tmp_path, tiny_run.name, manifest_id(tiny_run), 2, 4)]
    r = TokenResult.read(paths[0])
    assert set(r.shares) == {"datainf", "tracin", "gradcos"} and "hidden state" in r.skipped["repsim"]
    n_test = len(r.stored["datainf"])
    for m, rows in r.shares.items():
        rows = np.asarray(rows)
        assert rows.shape == (n_test, len(r.pieces))
        stored = np.asarray(r.stored[m])
        # the run stored float32 scores of batched gradients; the shares are float64 sums of per-token rows
        np.testing.assert_allclose(rows.sum(1), stored, rtol=1e-4, atol=1e-5 * np.abs(stored).max(), err_msg=m)
    assert 0 < r.prompt_len < len(r.pieces) and any(r.loss) and r.seconds > 0


def test_bad_requests_name_the_problem(tiny_run, tmp_path):
    with pytest.raises(InputError, match="no scores at checkpoint 7"):
        attribute_tokens(tiny_run, 7, [0], tmp_path)
    with pytest.raises(InputError, match=r"training sample id\(s\) \[999\]"):
        attribute_tokens(tiny_run, 2, [999], tmp_path)
    with pytest.raises(InputError, match="has no scores of \\['nope'\\]"):
        attribute_tokens(tiny_run, 2, [0], tmp_path, methods=["nope"])
    with pytest.raises(InputError, match="none of \\['repsim', 'bm25'\\] splits"):
        attribute_tokens(tiny_run, 2, [0], tmp_path, methods=["repsim", "bm25"])
    with pytest.raises(InputError, match="not a complete run folder"):
        attribute_tokens(tmp_path, 2, [0], tmp_path)
    assert not list(tmp_path.rglob("*.json"))


def test_cli_reports_errors_without_a_traceback(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("INFLUENCE_RUNS", str(tiny_run.parent))
    rc = main(["tokens", "--run", tiny_run.name, "--checkpoint", "2", "--train", "x", "--store",
               str(tmp_path / "s.duckdb")])
    assert rc == 2 and "error: --train must be comma-separated integers" in capsys.readouterr().err
