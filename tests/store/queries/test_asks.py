"""store.queries.asks: the Ask page's saved queries — saved with their rows in one transaction, listed newest first,
read back as the server answered them, kept by a rebuild, concurrent saves from several threads all kept."""

from concurrent.futures import ThreadPoolExecutor

import duckdb
import numpy as np
import pytest

from store import db
from store.db import Store
from store.errors import QueryError, UnknownRunError
from store.queries.asks import (
    UnknownQueryError,
    answer_samples,
    copy_saved_queries,
    save_query,
    saved_queries,
    saved_query,
)

TOP = {"gradsim": [[3, 1.5], [0, 0.25], [7, -2.0]], "repsim": [[7, 0.9], [3, 0.8], [1, float("nan")]]}
HOSTILE = "x'; DROP TABLE asks; -- <script>alert(1)</script> O'Brien"


def _save(con, run="tied", **kw):
    args = {"kind": "prompt", "prompt": "a b a", "response": "rule 1", "generated": False, "k": 3, "top": TOP,
            "seconds": 0.42, "cannot": {"random": "no id"}, "notes": ["cut to 16 tokens"], **kw}
    return save_query(con, run, args.pop("kind"), args.pop("prompt"), args.pop("response"), **args)


def test_a_saved_query_reads_back_as_it_was_answered(loaded_once):
    con, _ = loaded_once
    qid = _save(con, prompt=HOSTILE, response="", generated=True)
    got = saved_query(con, qid)
    assert len(qid) == 12 and int(qid, 16) >= 0
    assert (got["ask_id"], got["run"], got["kind"], got["prompt"], got["response"], got["generated"], got["k"]) == (
        qid, "tied", "prompt", HOSTILE, "", True, 3)
    assert list(got["top"]) == ["gradsim", "repsim"]  # the order asked in, not alphabetical by chance
    assert got["top"]["gradsim"] == TOP["gradsim"]
    assert got["top"]["repsim"][:2] == TOP["repsim"][:2] and got["top"]["repsim"][2][0] == 1
    assert np.isnan(got["top"]["repsim"][2][1])  # a NaN score is kept as NaN
    assert got["cannot"] == {"random": "no id"} and got["notes"] == ["cut to 16 tokens"]
    assert got["seconds"] == {"total_s": 0.42}
    assert con.execute("SELECT count(*) FROM ask_results WHERE ask_id = ?", [qid]).fetchone()[0] == 6
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 2  # the hostile text was only data


def test_a_run_lists_its_own_queries_newest_first(loaded_once):
    con, _ = loaded_once
    first = _save(con, prompt="first")
    other = _save(con, run="plain", prompt="elsewhere", kind="candidate")
    second = _save(con, prompt="second")
    listed = saved_queries(con, "tied")
    assert listed.ask_id.tolist() == [second, first]
    assert listed.prompt.tolist() == ["second", "first"]
    assert listed.methods.iloc[0] == ["gradsim", "repsim"] and listed.k.tolist() == [3, 3]
    assert saved_queries(con, "plain").ask_id.tolist() == [other]
    assert saved_queries(con, "plain").kind.tolist() == ["candidate"]
    assert saved_queries(con, "tied", limit=1).ask_id.tolist() == [second]
    assert saved_queries(con, "no-such-run").empty


def test_bad_saves_are_refused_and_leave_nothing(loaded_once):
    con, _ = loaded_once
    with pytest.raises(UnknownRunError):
        _save(con, run="no-such-run")
    with pytest.raises(QueryError, match="kind"):
        _save(con, kind="sideways")
    with pytest.raises(QueryError, match="prompt"):
        _save(con, prompt="   ")
    with pytest.raises(QueryError, match="k must be a positive integer"):
        _save(con, k=0)
    with pytest.raises(QueryError, match="'gradsim', rank 2"):
        _save(con, top={"gradsim": [[1, 0.5], ["x", "y"]]})
    assert con.execute("SELECT count(*) FROM asks").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM ask_results").fetchone()[0] == 0


def test_a_failed_insert_of_the_rows_rolls_back_the_query(loaded_once):
    con, _ = loaded_once
    with pytest.raises(duckdb.Error):  # an id beyond INTEGER fails inside the transaction, after the first insert
        _save(con, top={"gradsim": [[1, 0.5], [2**40, 0.1]]})
    assert con.execute("SELECT count(*) FROM asks").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM ask_results").fetchone()[0] == 0


def test_an_unknown_id_is_a_not_found_error(loaded_once):
    con, _ = loaded_once
    for qid in ("000000000000", "' OR 1=1 --", None):
        with pytest.raises(UnknownQueryError, match="no saved query"):
            saved_query(con, qid)


def test_a_rebuild_keeps_the_saved_queries(db_path, runs_dir, make_run):
    make_run(runs_dir, "tied", n_train=6, n_test=2, seed=1)
    with Store(db_path) as s:
        s.ingest_all(runs_dir)
        qid = _save(s.cursor())
    assert db.rebuild(db_path, runs_dir) == ["tied"]
    with Store(db_path) as s:
        assert saved_query(s.con, qid)["top"]["gradsim"] == TOP["gradsim"]
        assert saved_queries(s.con, "tied").ask_id.tolist() == [qid]


def test_a_corrupt_old_file_is_rebuilt_without_its_queries(db_path, runs_dir, make_run, caplog):
    make_run(runs_dir, "tied", n_train=6, n_test=2, seed=1)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    db_path.write_bytes(b"not a database" * 100)
    assert db.rebuild(db_path, runs_dir) == ["tied"]
    assert "could not be read" in caplog.text
    with Store(db_path) as s:
        assert saved_queries(s.con, "tied").empty


def test_copying_from_a_file_without_saved_queries_copies_none(tmp_path):
    old = tmp_path / "old.duckdb"
    duckdb.connect(str(old)).close()
    with Store(":memory:") as s:
        assert copy_saved_queries(old, s.con) == 0
        assert copy_saved_queries(tmp_path / "missing.duckdb", s.con) == 0


def test_saves_from_five_threads_at_once_are_all_kept(db_path, runs_dir, make_run):
    make_run(runs_dir, "tied", n_train=6, n_test=2, seed=1)
    with Store(db_path) as s:
        s.ingest_all(runs_dir)
        with ThreadPoolExecutor(5) as pool:  # each thread with its own cursor, as the app's sessions have
            ids = dict(enumerate(pool.map(
                lambda j: _save(s.cursor(), prompt=f"question {j}", top={"gradsim": [[j, float(j)]]}), range(5))))
        for j, qid in ids.items():
            got = saved_query(s.con, qid)
            assert got["prompt"] == f"question {j}" and got["top"] == {"gradsim": [[j, float(j)]]}
        assert len(saved_queries(s.con, "tied")) == 5


def test_the_samples_of_an_answer_are_read_by_id_from_the_right_split(loaded_once):
    con, runs = loaded_once
    train = answer_samples(con, "tied", "prompt", [5, 0, 5, 3])
    assert train.sample_id.tolist() == [0, 3, 5]
    assert train.prompt.tolist() == [runs["tied"].train_prompts[i] for i in (0, 3, 5)]
    every = con.execute("SELECT sample_id, prompt FROM samples WHERE run_id = 'tied' AND split = 'test' "
                        "ORDER BY sample_id").fetchall()
    test = answer_samples(con, "tied", "candidate", [1])
    assert test.sample_id.tolist() == [1] and test.prompt.tolist() == [every[1][1]]
    assert answer_samples(con, "tied", "prompt", []).empty
    with pytest.raises(QueryError, match="kind"):
        answer_samples(con, "tied", "other", [0])
