"""The Ask page's side of the query server (:mod:`engine.query.client`): find one, start one when none is alive,
wait while the run loads, ask, and ask again once on a fresh server when the first dies mid-query.

Why a module of its own: the page never imports torch, so every answer comes from a server process; what to do
when there is none or it dies is the same for every question and is tested without the page. ``say(text)`` is
how the caller shows progress (the page: an ``st.status`` label); it gets plain text, never query text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.query.client import Server, ServerError, find_server, start_server, wait_ready


@dataclass(frozen=True)
class Request:
    """One question as the page collected it. kind: "prompt" (a new test prompt: which training samples are
    behind it) or "candidate" (a new training text: which test prompts it would influence)."""

    run: str
    kind: str
    prompt: str
    response: str = ""
    generate: bool = False
    methods: list[str] = field(default_factory=list)
    k: int = 10


def refusal(req: Request) -> str | None:
    """Why ``req`` is refused before any server is asked (a plain sentence), or None when it can be asked."""
    if not req.prompt.strip():
        what = "a prompt" if req.kind == "prompt" else "the candidate's prompt"
        return f"Type {what} first: an empty or blank text cannot be attributed."
    if not req.methods:
        return "Pick at least one method that can answer."
    return None


def server_for(store_path: Path, runs_dir: Path, say) -> Server:
    """The live query server of ``runs_dir``, started (``python -m engine serve-query``) when none answers."""
    server = find_server(runs_dir)
    if server is not None:
        return server
    say("No query server is running: starting one…")
    return start_server(store_path, runs_dir)


def ready_server(run: str, store_path: Path, runs_dir: Path, say) -> Server:
    """The server (started if needed) once it has ``run`` loaded, saying how long the run has been loading."""
    server = server_for(store_path, runs_dir, say)

    def waiting(seconds: float) -> None:
        say(f"Loading run {run} on the query server (model, adapter states, index): {seconds:.0f} s…")

    wait_ready(server, run, on_wait=waiting)
    return server


def ask_once(req: Request, store_path: Path, runs_dir: Path, say) -> dict:
    """Ask ``req`` of the server (started if needed)."""
    server = ready_server(req.run, store_path, runs_dir, say)
    say(f"Run {req.run} is loaded: computing the query's features and scoring…")
    return server.query(req.run, req.prompt, None if req.generate else req.response, kind=req.kind,
                        generate=req.generate, methods=list(req.methods), k=req.k)


def _twice(call, say) -> tuple[dict, str | None]:
    """``call()``'s answer, and when the first server died mid-call and a second one answered, the sentence that
    says so. InputError is raised as it comes; a ServerError only when the second try failed as well."""
    try:
        return call(), None
    except ServerError as first:
        note = f"The query server stopped answering ({first}); the question was asked again on a new server."
        say("The query server stopped answering: asking again on a new one…")
        try:
            return call(), note
        except ServerError as second:
            raise ServerError(f"the query server stopped answering ({first}), and so did the one started to ask "
                              f"again ({second})") from None


def ask(req: Request, store_path: Path, runs_dir: Path, say) -> tuple[dict, str | None]:
    """The server's answer to ``req`` (asked again once on a new server if the first dies mid-query; the second
    value says so). InputError (bad input, a run the server cannot load) is raised as it comes."""
    return _twice(lambda: ask_once(req, store_path, runs_dir, say), say)


def tokens(answer: dict, item: int, store_path: Path, runs_dir: Path, say) -> tuple[dict, str | None]:
    """The token view of ``item`` (a training sample id for a prompt, a test prompt id for a candidate) of a saved
    ``answer`` (``store.saved_query``), for the answer's methods; retried as :func:`ask`."""
    def call() -> dict:
        server = ready_server(answer["run"], store_path, runs_dir, say)
        say("Computing the per-token gradients of the sample…")
        return server.tokens(answer["run"], answer["kind"], answer["prompt"], answer["response"], int(item),
                             methods=list(answer["top"]))

    return _twice(call, say)
