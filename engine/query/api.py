"""Ask a run a new question from Python, in one call (the CLI's ``query`` command is this too)::

    from engine.query.api import ask
    df = ask("my-run", "Which rule does 'b a b' follow?", generate=True, methods=["datainf", "repsim"], k=5)

A running query server for the runs folder answers when there is one (fast: the run stays loaded); otherwise the
run is loaded in this process, once, and kept for the next call.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from engine.errors import InputError
from engine.paths import default_runs_dir
from engine.query.client import ServerError, find_server, wait_ready
from engine.runfolder.runformat import check_run_name

_LOCAL: dict[str, object] = {}  # run folder -> QuerySession loaded in this process


def answer(run: str, prompt: str, response: str | None = None, *, kind: str = "prompt", generate: bool = False,
           methods: list[str] | None = None, k: int = 10, runs_dir: Path | None = None,
           use_server: bool = True) -> tuple[dict, str]:
    """``(answer dict, where it was computed: "server" or "local")`` (``Answer.to_dict``'s keys)."""
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    check_run_name(run)
    if not (runs_dir / run).is_dir():
        raise InputError(f"no run {run!r} in {runs_dir}")
    server = find_server(runs_dir) if use_server else None
    if server is not None:
        try:
            wait_ready(server, run)
            return server.query(run, prompt, response, kind=kind, generate=generate, methods=methods, k=k), "server"
        except ServerError:
            pass  # it died: answer here instead
    from engine.query.session import QuerySession  # torch: only when no server answers

    key = str((runs_dir / run).resolve())
    if key not in _LOCAL:
        _LOCAL[key] = QuerySession(runs_dir / run)
    session = _LOCAL[key]
    if kind == "candidate":
        a = session.candidate(prompt, response, methods=methods, k=k)
    elif kind == "prompt":
        a = session.ask(prompt, response, generate=generate, methods=methods, k=k)
    else:
        raise InputError(f"query kind must be 'prompt' or 'candidate', got {kind!r}")
    return a.to_dict(), "local"


def answer_rows(a: dict) -> list[dict]:
    """One row per (method, rank): method, rank (1 = best), train_id (prompt) or test_id (candidate), score."""
    key = "train_id" if a["kind"] == "prompt" else "test_id"
    return [{"method": m, "rank": r, key: int(i), "score": float(s)}
            for m, top in a["top"].items() for r, (i, s) in enumerate(top, start=1)]


def ask(run: str, prompt: str, response: str | None = None, *, generate: bool = False, candidate: bool = False,
        methods: list[str] | None = None, k: int = 10, runs_dir: str | Path | None = None) -> pd.DataFrame:
    """The top ``k`` per method for a new prompt (or, with ``candidate``, the test prompts a candidate training
    text would influence most) as a DataFrame: method, rank, train_id (or test_id), score, and that sample's
    prompt, response and label. ``attrs``: response (the model's, with ``generate``), notes, cannot (methods
    that cannot answer, and why), seconds."""
    a, where = answer(run, prompt, response, kind="candidate" if candidate else "prompt", generate=generate,
                      methods=methods, k=k, runs_dir=Path(runs_dir) if runs_dir is not None else None)
    df = pd.DataFrame(answer_rows(a), columns=["method", "rank", "test_id" if candidate else "train_id", "score"])
    folder = (Path(runs_dir) if runs_dir is not None else default_runs_dir()) / run
    samples = pq.read_table(folder / "samples.parquet").to_pandas()
    side = samples[samples["split"] == ("test" if candidate else "train")].set_index("sample_id")
    id_col = df.columns[2]
    for col in ("prompt", "response", "label"):
        df[col] = df[id_col].map(side[col]) if col in side else None
    df.attrs.update({"response": a["response"], "notes": a["notes"], "cannot": a["cannot"],
                     "seconds": a["seconds"], "computed": where})
    return df
