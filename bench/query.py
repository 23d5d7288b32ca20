"""How fast a run answers a new prompt: cold start, warm latency (p50 / p95) and where the time goes.

    .venv/bin/python -m bench.query --run RUN_FOLDER [--queries 20] [--methods a,b] [--build]

The run needs a query index (``--build`` makes one first with ``engine index``). The queries are new prompts:
the run's task generator drawn again with another seed (so neither training nor test samples), each with its
reference response, answered one after the other in one process (what the query server does per request).

Printed: the cold start (model + adapter states + index opened: ``QuerySession``) and the first query (reads the
index from disk and computes the training-side statistics not kept in the index); then, over ``--queries`` warm
queries, latency p50 / p95 from request to top k, and the median per stage: the query's features (one forward and
backward pass per index checkpoint), per method the preconditioning (the ``queries`` phase: statistics passes
over the training shards) and the dot products with every training shard, and the time spent reading index
tensors (from memory once they are cached: ``--memory-mb`` bounds that). The per-stage split re-runs the scoring
phases by hand and checks that it gives the session's own top k.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np

from engine.data.tasks import build_task
from engine.features.stage import method_features
from engine.query.build import build_index
from engine.query.session import QuerySession
from engine.runfolder.runformat import index_info
from engine.scoring.methods import get_method
from engine.scoring.methods._common import dot_queries


def new_prompts(session: QuerySession, n: int) -> list[tuple[str, str]]:
    """``n`` prompts of the run's task that the run has not seen (the generator with another seed)."""
    spec = session.spec.task
    if spec.name == "file":
        return [(s.prompt + " (again)", s.response) for s in (session.task.test * n)[:n]]
    per = -(-n // max(1, len(set(s.label for s in session.task.test))))
    task = build_task(spec.name, seed=spec.seed + 1000, n_train_per_label=1, n_test_per_label=per)
    return [(s.prompt, s.response) for s in task.test[:n]]


class _TimedReads:
    """Wraps every TrainData loader of a session to add up the seconds spent reading index tensors."""

    def __init__(self, session: QuerySession):
        self.seconds = 0.0
        for d in session.data:
            d.train.loader = self._wrap(d.train.loader)

    def _wrap(self, loader):
        def timed(*args, **kw):
            t = time.perf_counter()
            try:
                return loader(*args, **kw)
            finally:
                self.seconds += time.perf_counter() - t

        return timed


def staged(session: QuerySession, prompt: str, response: str, methods: list[str], reads: _TimedReads) -> dict:
    """One query with its stages timed: features, then per method preconditioning and dot products."""
    out = {}
    t = time.perf_counter()
    enc, _ = session.encode(prompt, response)
    sides = session._features(enc, train=False)
    out["features"] = time.perf_counter() - t
    history = [dataclasses.replace(d, test=s) for d, s in zip(session.data, sides)]
    now = dataclasses.replace(history[-1], texts=(session.train_texts, (f"{prompt}\n{response}",)))
    out["top"] = {}
    for name in methods:
        m, method = session.methods[name], get_method(name)
        train_x, test_x = method_features(m.proj_key, now, history if session.plan.history else [])
        read0 = reads.seconds
        t = time.perf_counter()
        if method.queries is None:  # the baselines: their own blocks
            S = np.concatenate([b for _, _, b in method.blocks(train_x, test_x, m.params)], axis=1)
            out[f"{name} precondition"], out[f"{name} dot"] = 0.0, time.perf_counter() - t
        else:
            Q = method.queries(train_x, test_x, m.params)
            t1 = time.perf_counter()
            S = np.concatenate([dot_queries(Q, method.train_side(shard, m.params)) for _, _, shard in train_x.shards()],
                               axis=1)
            out[f"{name} precondition"], out[f"{name} dot"] = t1 - t, time.perf_counter() - t1
        out[f"{name} read"] = reads.seconds - read0
        out["top"][name] = list(np.argsort(-S[0], kind="stable")[:10])
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a run folder")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--methods", help="comma-separated (default: every method that answers a new prompt)")
    ap.add_argument("--memory-mb", type=int, help="index tensors kept in memory (default: all)")
    ap.add_argument("--build", action="store_true", help="build the index first when the run has none")
    args = ap.parse_args(argv)
    folder = Path(args.run)
    if args.build and index_info(folder) is None:
        t = time.perf_counter()
        build_index(folder, progress=False)
        print(f"index built in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    session = QuerySession(folder, memory_mb=args.memory_mb)
    cold = time.perf_counter() - t
    info = session.info
    methods = args.methods.split(",") if args.methods else info["prompt_methods"]
    prompts = new_prompts(session, args.queries + 1)
    reads = _TimedReads(session)
    t = time.perf_counter()
    session.ask(*prompts[0], methods=methods, k=10)
    first = time.perf_counter() - t
    latencies, stages = [], []
    for prompt, response in prompts[1:]:
        t = time.perf_counter()
        a = session.ask(prompt, response, methods=methods, k=10)
        latencies.append(time.perf_counter() - t)
        s = staged(session, prompt, response, methods, reads)
        for name in methods:  # the split re-does the session's work: same ranking
            assert s["top"][name] == [i for i, _ in a.top[name]], name
        stages.append(s)
    _report(folder, session, info, methods, cold, first, latencies, stages)


def _report(folder, session, info, methods, cold, first, latencies, stages) -> None:
    lat = sorted(latencies)
    p95 = lat[min(len(lat) - 1, int(np.ceil(0.95 * len(lat))) - 1)]
    print(f"run {folder.name}: model {session.spec.model.name}, {info['n_train']:,} training samples, "
          f"methods {', '.join(methods)}; index {info['size_bytes'] / 1e6:.1f} MB "
          f"({info['size_bytes'] / 1e6 / info['n_train'] * 1000:.2f} MB per 1k training samples)")
    print(f"cold start (model, adapter states, index opened): {cold:.2f} s; first query: {first:.2f} s")
    print(f"warm latency over {len(lat)} queries: p50 {statistics.median(lat):.3f} s, p95 {p95:.3f} s")
    print("| stage | median s |")
    print("|---|---|")
    for key in [k for k in stages[0] if k != "top"]:
        print(f"| {key} | {statistics.median(s[key] for s in stages):.4f} |")


if __name__ == "__main__":
    main()
