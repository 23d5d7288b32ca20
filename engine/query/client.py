"""Talk to the query server (:mod:`engine.query.server`) without torch: find it, start it, load a run, ask.

The app's Ask page, the CLI's ``query`` command and :func:`engine.query.api.ask` use this. A server is alive when
its ``query-server.json`` (beside the runs folder) names a process that answers ``/health`` for the same runs
folder; a stale file (the process died) counts as no server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from engine.errors import EngineStateError, InputError
from engine.paths import REPO_ROOT, query_server_file
from engine.runfolder.runformat import pid_alive

QUERY_TIMEOUT_S = 600.0  # a first query may wait for its run to load


class ServerError(EngineStateError):
    """The server could not be reached, or died while answering."""


@dataclass(frozen=True)
class Server:
    """A running query server: where it listens and which runs folder it serves."""

    host: str
    port: int
    pid: int
    runs_dir: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _call(self, path: str, body: dict | None = None, timeout: float = 5.0) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error", str(e))
            except ValueError:
                message = str(e)
            if e.code == 400:
                raise InputError(message) from None
            raise ServerError(f"the query server failed: {message}") from None
        except (OSError, ValueError) as e:  # refused, reset, timed out, not JSON
            raise ServerError(f"the query server at {self.url} did not answer: {e}") from None

    def health(self, timeout: float = 2.0) -> dict:
        return self._call("/health", timeout=timeout)

    def load(self, run: str) -> dict:
        """Start loading ``run`` (returns at once); the state is in ``health()["sessions"][run]``."""
        return self._call("/load", {"run": run})

    def query(self, run: str, prompt: str, response: str | None = None, *, kind: str = "prompt",
              generate: bool = False, methods: list[str] | None = None, k: int = 10,
              timeout: float = QUERY_TIMEOUT_S) -> dict:
        """One answer (``engine.query.session.Answer.to_dict``); InputError for bad input, ServerError when the
        server is gone."""
        body = {"run": run, "kind": kind, "prompt": prompt, "response": response, "generate": generate,
                "methods": methods, "k": k}
        return self._call("/query", body, timeout=timeout)

    def tokens(self, run: str, kind: str, prompt: str, response: str | None, item: int, *,
               methods: list[str] | None = None, timeout: float = QUERY_TIMEOUT_S) -> dict:
        """The token view of one drilled item of an answer (``engine.query.session.QuerySession.tokens``)."""
        body = {"run": run, "kind": kind, "prompt": prompt, "response": response, "item": item, "methods": methods}
        return self._call("/tokens", body, timeout=timeout)


def find_server(runs_dir: Path) -> Server | None:
    """The live server for ``runs_dir``, or None."""
    path = query_server_file(runs_dir)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        server = Server(str(info["host"]), int(info["port"]), int(info["pid"]), str(info["runs_dir"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if server.runs_dir != str(Path(runs_dir).resolve()):
        return None
    if server.host in ("127.0.0.1", "localhost") and not pid_alive(server.pid):
        return None  # a stale file of a server that died
    try:
        server.health()
    except (ServerError, InputError):
        return None
    return server


def start_server(store_path: Path, runs_dir: Path, wait_s: float = 60.0) -> Server:
    """Start ``python -m engine serve-query`` in the background (its output appended to ``query-server.log`` beside
    the runs folder) and wait until it answers; ServerError if it does not within ``wait_s``."""
    log_path = query_server_file(runs_dir).with_name("query-server.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "INFLUENCE_RUNS": str(Path(runs_dir).resolve())}
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "engine", "serve-query", "--store", str(store_path)],
                                cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    end = time.time() + wait_s
    while time.time() < end:
        server = find_server(runs_dir)
        if server is not None:
            return server
        if proc.poll() is not None:
            raise ServerError(f"the query server exited at start (status {proc.returncode}); see {log_path}")
        time.sleep(0.2)
    raise ServerError(f"the query server did not answer within {wait_s:.0f} s; see {log_path}")


def wait_ready(server: Server, run: str, timeout: float = QUERY_TIMEOUT_S, on_wait=None) -> None:
    """Load ``run`` on ``server`` and wait until it is ready; ``on_wait(seconds)`` is called while it loads.
    InputError when loading failed (no index, missing adapter state...), ServerError when the server died."""
    server.load(run)
    t0 = time.time()
    while True:
        state = server.health().get("sessions", {}).get(run, {})
        if state.get("state") == "ready":
            return
        if state.get("state") == "failed":
            raise InputError(state.get("error", "loading the run failed"))
        if time.time() - t0 > timeout:
            raise ServerError(f"run {run!r} did not load within {timeout:.0f} s")
        if on_wait is not None:
            on_wait(time.time() - t0)
        time.sleep(0.25)
