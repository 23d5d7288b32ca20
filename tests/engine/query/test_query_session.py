"""A query session answers new queries with the run's own numbers.

The reference is the run itself: the score files the pipeline wrote when it scored its test prompts (computed in
one batch of test prompts, by the scoring stage). A query whose text is test prompt j must give row j of every
method's stored score matrix; a candidate whose text is training sample i must give column i (the up-weighting
question: the candidate as one more training sample, the training set's statistics unchanged).
"""

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.catalog.methods import cannot_answer
from engine.errors import InputError
from engine.query.session import MAX_TEXT_CHARS, QuerySession
from engine.runfolder.runformat import INDEX_DIR, read_manifest

RTOL = 1e-4  # the issue's bound; the run and the query differ only in batch composition (padding-invariant)


@pytest.fixture(scope="module")
def session(tiny_run):
    return QuerySession(tiny_run)


def _samples(folder, split):
    t = pq.read_table(folder / "samples.parquet").to_pandas()
    return t[t.split == split].sort_values("sample_id").reset_index(drop=True)


def _stored(folder, method, checkpoint):
    files = sorted((folder / "scores").glob(f"{method}-ckpt{checkpoint}*.parquet"))
    assert files, f"no stored scores of {method}"
    df = pq.read_table(files[0]).to_pandas()
    n_test, n_train = df.test_id.max() + 1, df.train_id.max() + 1
    S = np.full((n_test, n_train), np.nan)
    S[df.test_id, df.train_id] = df.score
    return S


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def test_a_test_prompt_asked_again_gets_its_stored_scores_for_every_method(session, tiny_run):
    test = _samples(tiny_run, "test")
    last = read_manifest(tiny_run)["checkpoints"][-1]
    methods = read_manifest(tiny_run)["methods"]
    for j in (0, 5):
        a = session.ask(test.prompt[j], test.response[j], k=4)
        assert set(a.scores) == {m for m in methods if cannot_answer(m) is None}
        assert "random" in a.cannot and "random" not in a.scores
        for m, vec in a.scores.items():
            ref = _stored(tiny_run, m, last)[j]
            # the score files are float32: compare at their precision
            assert _rel(vec, ref) <= RTOL, (m, j, _rel(vec, ref))
            top = [i for i, _ in a.top[m]]
            assert top == list(np.argsort(-vec, kind="stable")[:4])


def test_a_training_sample_as_candidate_gets_its_stored_column(session, tiny_run):
    train = _samples(tiny_run, "train")
    last = read_manifest(tiny_run)["checkpoints"][-1]
    for i in (2, 17):
        a = session.candidate(train.prompt[i], train.response[i], k=3)
        assert "bm25" in a.cannot and "random" in a.cannot
        assert "datainf" in a.scores and "tracin" in a.scores and "gradsim_proj" in a.scores
        for m, vec in a.scores.items():
            ref = _stored(tiny_run, m, last)[:, i]
            assert _rel(vec, ref) <= RTOL, (m, i, _rel(vec, ref))
        assert a.rows()[0].keys() == {"method", "rank", "test_id", "score"}


def test_methods_can_be_picked_and_unknown_ones_are_named(session):
    a = session.ask("a b a", "rule 1", methods=["datainf", "random"], k=2)
    assert set(a.scores) == {"datainf"} and set(a.cannot) == {"random"}
    with pytest.raises(InputError, match="no method.*nosuch"):
        session.ask("a b a", "x", methods=["nosuch"])


@pytest.mark.parametrize("prompt", ["", "   \n\t"])
def test_an_empty_prompt_is_refused(session, prompt):
    with pytest.raises(InputError, match="'prompt' is empty"):
        session.ask(prompt, "x")


def test_bad_k_and_oversized_text_are_refused(session):
    for k in (0, -1, True, "3"):
        with pytest.raises(InputError, match="'k'"):
            session.ask("a b", "x", k=k)
    with pytest.raises(InputError, match="'response' has"):
        session.ask("a b", "x" * (MAX_TEXT_CHARS + 1))


def test_a_prompt_longer_than_max_length_is_cut_with_a_note(session):
    long = " ".join(["a b"] * 200)
    a = session.ask(long, "rule", methods=["gradsim"], k=1)
    assert a.notes and "max_length = 48" in a.notes[0]
    assert np.isfinite(a.scores["gradsim"]).all()


def test_generate_answers_with_the_model_and_scores_that_answer(session):
    a = session.ask("a b a b", generate=True, methods=["gradsim"], k=2)
    assert a.generated and isinstance(a.response, str)
    again = session.ask("a b a b", a.response, methods=["gradsim"], k=2)
    np.testing.assert_allclose(a.scores["gradsim"], again.scores["gradsim"], rtol=1e-6)


def test_a_run_without_index_says_which_command_builds_it(tiny_run, tmp_path):
    folder = tmp_path / tiny_run.name
    shutil.copytree(tiny_run, folder)
    shutil.rmtree(folder / INDEX_DIR)
    with pytest.raises(InputError, match=f"python -m engine index --run {tiny_run.name}"):
        QuerySession(folder)


def test_a_run_whose_adapter_state_is_missing_is_refused(tiny_run, tmp_path):
    folder = tmp_path / tiny_run.name
    shutil.copytree(tiny_run, folder)
    (folder / "checkpoints" / "epoch-2" / "adapter_model.safetensors").unlink()
    with pytest.raises(InputError, match="adapter state of checkpoint 2 is missing"):
        QuerySession(folder)


def test_the_token_view_of_a_drilled_sample_adds_up_to_the_runs_score(session, tiny_run):
    """Asked again as a new prompt, test prompt j's token view of training sample i splits each gradient method's
    score over i's tokens; the shares add up to the run's stored S[j, i] (the score files, not the token code).
    The other direction: a training sample as a candidate, drilled into test prompt j, splits the same S[j, i]
    over the candidate's tokens."""
    test, train = _samples(tiny_run, "test"), _samples(tiny_run, "train")
    last = read_manifest(tiny_run)["checkpoints"][-1]
    j, i = 3, 11
    out = session.tokens("prompt", test.prompt[j], test.response[j], i)
    assert "repsim" in out["skipped"] and "random" in out["skipped"]  # no split / cannot answer a new prompt
    assert {"gradsim", "datainf", "tracin", "ekfac", "gradcos", "gradsim_proj"} <= set(out["shares"])
    assert len(out["pieces"]) == len(out["token_ids"]) == len(out["loss"])
    for m, shares in out["shares"].items():
        assert len(shares) == len(out["pieces"])
        stored = _stored(tiny_run, m, last)[j, i]
        assert abs(sum(shares) - stored) <= 2e-3 * max(abs(stored), 1e-12), (m, sum(shares), stored)
    cand = session.tokens("candidate", train.prompt[i], train.response[i], j, methods=["gradsim", "tracin", "bm25"])
    assert set(cand["shares"]) == {"gradsim", "tracin"} and "bm25" in cand["skipped"]
    assert cand["pieces"] == out["pieces"]  # the same text: training sample i
    for m in ("gradsim", "tracin"):
        stored = _stored(tiny_run, m, last)[j, i]
        assert abs(sum(cand["shares"][m]) - stored) <= 2e-3 * max(abs(stored), 1e-12), m


def test_the_token_view_refuses_an_item_outside_the_run(session):
    with pytest.raises(InputError, match="training sample id in 0..29"):
        session.tokens("prompt", "a b", "rule 1", 30)
    with pytest.raises(InputError, match="test prompt id"):
        session.tokens("candidate", "a b", "rule 1", -1)
