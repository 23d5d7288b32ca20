"""The query server: one long-lived process per runs folder that keeps runs loaded and answers queries over HTTP.

    python -m engine serve-query [--store FILE] [--host 127.0.0.1] [--port 0] [--advertise HOST]

Why a process of its own: the app never imports torch, and loading a model and an index takes seconds that a
query should not pay again. ``make run`` and compose start it beside the worker; the Ask page starts one when
none answers (:func:`engine.query.client.start_server`).

Found through ``query-server.json`` beside the runs folder (:func:`engine.paths.query_server_file`): pid, host,
port, runs folder; written once the socket listens, removed on a clean exit. Endpoints (JSON in, JSON out)::

    GET  /health   {"pid", "runs_dir", "sessions": {run: {"state": loading|ready|failed, "error", "load_s"}}}
    POST /load     {"run"}                 start loading a run in the background; answers at once with /health
    POST /query    {"run", "kind": prompt|candidate, "prompt", "response", "generate", "methods", "k"}
                   -> 200 the answer (engine.query.session.Answer.to_dict) | 400 {"error"} bad input | 500
    POST /tokens   {"run", "kind", "prompt", "response", "item", "methods"}
                   -> 200 the token view of one drilled item (engine.query.session.QuerySession.tokens)

Queries are answered one at a time (one model, one lock): concurrent requests wait their turn, none is lost.
Runs are kept loaded up to ``max_sessions`` (least recently used out). Request bodies are bounded.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from engine.errors import EngineStateError, InputError
from engine.paths import query_server_file
from engine.query.session import QuerySession
from engine.runfolder.runformat import check_run_name

log = logging.getLogger(__name__)
MAX_BODY = 256 << 10  # bytes of a request body: two texts of MAX_TEXT_CHARS and the options fit


class Sessions:
    """Loaded runs (``QuerySession``), each loaded once even when asked for by several requests at the same time."""

    def __init__(self, runs_dir: Path, max_sessions: int = 2, memory_mb: int | None = None):
        self.runs_dir = Path(runs_dir)
        self.max_sessions = max_sessions
        self.memory_mb = memory_mb
        self.lock = threading.Lock()  # guards the tables below
        self.compute = threading.Lock()  # one query (or load) uses the CPU/GPU at a time
        self.sessions: OrderedDict[str, QuerySession] = OrderedDict()
        self.states: dict[str, dict] = {}
        self.loading: dict[str, threading.Event] = {}

    def health(self) -> dict:
        with self.lock:
            return {"pid": os.getpid(), "runs_dir": str(self.runs_dir), "sessions": json.loads(json.dumps(self.states))}

    def start_loading(self, run: str) -> None:
        """Load ``run`` in a background thread unless it is loaded or loading."""
        if not isinstance(run, str):
            raise InputError("query field 'run' must be the name of a run")
        run = check_run_name(run)
        with self.lock:
            if run in self.sessions or run in self.loading:
                return
            self.loading[run] = threading.Event()
            self.states[run] = {"state": "loading", "since": time.time()}
        threading.Thread(target=self._load, args=(run,), daemon=True, name=f"load-{run}").start()

    def _load(self, run: str) -> None:
        t = time.perf_counter()
        try:
            with self.compute:
                session = QuerySession(self.runs_dir / run, memory_mb=self.memory_mb)
        except Exception as e:  # noqa: BLE001 - any failure is reported to whoever asks for this run
            with self.lock:
                self.states[run] = {"state": "failed", "error": str(e) if isinstance(e, (InputError, EngineStateError))
                                    else f"{type(e).__name__}: {e}"}
                self.loading.pop(run).set()
            log.warning("loading %s failed: %s", run, e)
            return
        with self.lock:
            self.sessions[run] = session
            while len(self.sessions) > self.max_sessions:
                old, _ = self.sessions.popitem(last=False)
                self.states.pop(old, None)
            self.states[run] = {"state": "ready", "load_s": round(time.perf_counter() - t, 3)}
            self.loading.pop(run).set()

    def get(self, run: str) -> QuerySession:
        """The loaded session of ``run``, loading it first (and waiting) if needed; InputError if it failed."""
        self.start_loading(run)
        with self.lock:
            event = self.loading.get(run)
        if event is not None:
            event.wait()
        with self.lock:
            if run in self.sessions:
                self.sessions.move_to_end(run)
                return self.sessions[run]
            error = self.states.get(run, {}).get("error", "it is not loaded")
            self.states.pop(run, None)  # the next request tries again (e.g. after `engine index`)
        raise InputError(error)

    def answer(self, body: dict) -> dict:
        """Answer one query request (see the module docstring)."""
        if not isinstance(body, dict):
            raise InputError("the request must be a JSON object")
        session = self.get(body.get("run"))
        kind = body.get("kind", "prompt")
        methods = body.get("methods")
        if methods is not None and (not isinstance(methods, list) or not all(isinstance(m, str) for m in methods)):
            raise InputError("query field 'methods' must be a list of method names")
        with self.compute:
            if kind == "candidate":
                a = session.candidate(body.get("prompt"), body.get("response"), methods=methods, k=body.get("k", 10))
            elif kind == "prompt":
                a = session.ask(body.get("prompt"), body.get("response"), generate=bool(body.get("generate")),
                                methods=methods, k=body.get("k", 10))
            else:
                raise InputError(f"query field 'kind' must be 'prompt' or 'candidate', got {kind!r}")
        return a.to_dict()

    def tokens(self, body: dict) -> dict:
        """The token view of one drilled item of an answer (``QuerySession.tokens``)."""
        if not isinstance(body, dict):
            raise InputError("the request must be a JSON object")
        session = self.get(body.get("run"))
        methods = body.get("methods")
        if methods is not None and (not isinstance(methods, list) or not all(isinstance(m, str) for m in methods)):
            raise InputError("token field 'methods' must be a list of method names")
        with self.compute:
            return session.tokens(body.get("kind", "prompt"), body.get("prompt"), body.get("response"),
                                  body.get("item"), methods=methods)


def _handler(sessions: Sessions):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # the default writes every request to stderr
            log.debug(fmt, *args)

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 - the http.server name
            if self.path == "/health":
                return self._send(200, sessions.health())
            self._send(404, {"error": f"no such endpoint {self.path!r}"})

        def do_POST(self):  # noqa: N802
            try:
                size = int(self.headers.get("Content-Length") or 0)
                if size > MAX_BODY:
                    raise InputError(f"the request has {size:,} bytes; at most {MAX_BODY:,}")
                body = json.loads(self.rfile.read(size) or b"{}")
                if self.path == "/load":
                    sessions.start_loading(body.get("run") if isinstance(body, dict) else None)
                    return self._send(200, sessions.health())
                if self.path == "/query":
                    return self._send(200, sessions.answer(body))
                if self.path == "/tokens":
                    return self._send(200, sessions.tokens(body))
                self._send(404, {"error": f"no such endpoint {self.path!r}"})
            except (InputError, EngineStateError, ValueError) as e:
                self._send(400, {"error": str(e)})
            except Exception as e:  # noqa: BLE001 - the client shows it; the server keeps serving
                log.exception("query failed")
                self._send(500, {"error": f"{type(e).__name__}: {e}"})

    return Handler


def serve(runs_dir: Path, host: str = "127.0.0.1", port: int = 0, advertise: str | None = None,
          max_sessions: int = 2, memory_mb: int | None = None, preload: list[str] | None = None,
          ready=None) -> None:
    """Serve until interrupted. ``port`` 0 picks a free one; ``advertise``: the host name clients should use (in
    compose, the service's name); ``preload``: runs to start loading at once; ``ready(server)``: called once
    listening (tests)."""
    sessions = Sessions(runs_dir, max_sessions, memory_mb)
    httpd = ThreadingHTTPServer((host, port), _handler(sessions))
    httpd.daemon_threads = True
    state = query_server_file(runs_dir)
    info = {"pid": os.getpid(), "host": advertise or ("127.0.0.1" if host in ("", "0.0.0.0") else host),
            "port": httpd.server_address[1], "runs_dir": str(Path(runs_dir).resolve()), "started": time.time()}
    state.parent.mkdir(parents=True, exist_ok=True)
    tmp = state.with_name(f".{state.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(info), encoding="utf-8")
    os.replace(tmp, state)
    for run in preload or []:
        sessions.start_loading(run)
    if ready is not None:
        ready(httpd)
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
        try:
            if json.loads(state.read_text(encoding="utf-8")).get("pid") == os.getpid():
                state.unlink()
        except (OSError, ValueError):
            pass
