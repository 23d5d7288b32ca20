"""``make run``: the app, one worker and the query server, started together and stopped together (as compose does).

    .venv/bin/python scripts/run_app.py [--port 8501] [--address ADDR]

- Refuses to start when the port is taken, and says by what: an Influence Explorer (Streamlit) already
  answering there, or another program.
- Starts ``python -m engine worker`` (its output appended to ``<store dir>/worker.log``, i.e. ``data/worker.log``
  by default), ``python -m engine serve-query`` (the query server of the Ask page, on localhost; its output in
  ``query-server.log`` beside the runs folder) and ``streamlit run app.py`` on the same store
  (``$INFLUENCE_STORE`` or ``data/influence.duckdb``). A query server that exits is started again by the Ask page
  when it needs one.
- Ctrl-C or SIGTERM stops both (the worker ends a running job's run and puts the job back in the queue); if the
  app exits, the worker is stopped too; if the worker exits on its own, the app keeps running (the Jobs page
  then says that no worker is running) and the launcher says so here.
- Both children get SIGTERM if this launcher is killed outright (Linux parent-death signal).
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.jobs.workers import die_with_parent  # noqa: E402  (after the path set-up above)
from engine.paths import default_runs_dir, default_store_path, query_server_file, worker_log_path  # noqa: E402

STOP_GRACE_S = 20.0


def port_status(port: int, address: str = "") -> str | None:
    """None when ``port`` is free to listen on; otherwise a sentence saying what holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed app's TIME_WAIT does not count
        try:
            s.bind((address or "0.0.0.0", port))
            return None
        except OSError as e:
            if e.errno not in (errno.EADDRINUSE, errno.EACCES):
                return f"port {port} cannot be used: {e.strerror}"
    try:
        answer = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=3).read()
    except OSError:
        answer = b""
    if answer.strip() == b"ok":
        return (f"an app is already running on port {port} (Streamlit answers at http://localhost:{port}). "
                f"Open it there, stop it first, or start another one on a free port: make run PORT={port + 1}")
    return f"port {port} is in use by another program; start on a free port: make run PORT={port + 1}"


def stop(procs: list[subprocess.Popen], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every child still running, wait up to ``grace_s`` in all, then SIGKILL what is left."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    end = time.time() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, end - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8501")))
    ap.add_argument("--address", default="", help="interface to listen on (default: all)")
    args = ap.parse_args(argv)
    problem = port_status(args.port, args.address)
    if problem:
        print(f"make run: {problem}", file=sys.stderr)
        return 1
    store_path = default_store_path()
    store_path.parent.mkdir(parents=True, exist_ok=True)
    log_path = worker_log_path(store_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stopping = {"signal": None}

    def on_signal(signum, _frame):
        stopping["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    procs: list[subprocess.Popen] = []
    try:
        with open(log_path, "ab") as log:
            worker = subprocess.Popen([sys.executable, "-m", "engine", "worker", "--store", str(store_path)],
                                      cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, preexec_fn=die_with_parent(new_session=False))
        procs.append(worker)
        query_log = query_server_file(default_runs_dir(store_path)).with_name("query-server.log")
        with open(query_log, "ab") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "engine", "serve-query", "--store", str(store_path)], cwd=REPO, env=env,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent(new_session=False)))
        cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.port", str(args.port), "--browser.gatherUsageStats", "false"]
        if args.address:
            cmd += ["--server.address", args.address]
        app = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                               preexec_fn=die_with_parent(new_session=False))
        procs.append(app)
        print(f"make run: app on http://localhost:{args.port} (pid {app.pid}, store {store_path}); worker pid "
              f"{worker.pid}, log {log_path}; query server pid {procs[1].pid}, log {query_log}. Ctrl-C stops "
              "them all.", flush=True)
        while stopping["signal"] is None:
            if app.poll() is not None:
                print(f"make run: the app exited (status {app.returncode}); stopping the worker", file=sys.stderr)
                return app.returncode or 1
            if worker.poll() is not None and worker in procs:
                print(f"make run: the worker exited (status {worker.returncode}; see {log_path}); the app keeps "
                      "running, queued jobs wait for a worker", file=sys.stderr)
                procs.remove(worker)
            time.sleep(0.5)
        print("make run: stopping the app, the worker and the query server", file=sys.stderr)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave children behind
        stop(procs)


if __name__ == "__main__":
    sys.exit(main())
