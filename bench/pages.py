"""Page interaction latency on a store (default: the local store with the SmolLM2 demo run).

    .venv/bin/python -m bench.pages [--store data/influence.duckdb] [--run demo-smollm2-135m] [--n 10]

Each page script is run once with Streamlit's AppTest (start-up and imports excluded), then re-run ``n`` times
with a different test prompt / k in the query string — what Streamlit does on every click. Prints median and
worst seconds per page and, side by side, the store queries a click triggers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from engine.paths import default_store_path

REPO = Path(__file__).resolve().parents[1]
PAGES = ["app.py", "app_pages/explore.py", "app_pages/compare_methods.py", "app_pages/dataset.py"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=str(default_store_path()))
    ap.add_argument("--run", default="demo-smollm2-135m")
    ap.add_argument("--n", type=int, default=10)
    args = ap.parse_args()
    os.environ["INFLUENCE_STORE"] = str(Path(args.store).resolve())

    from streamlit.testing.v1 import AppTest

    import store

    with store.Store(args.store, read_only=True) as s:
        info = store.run_info(s.con, args.run)
        methods, ck = info["methods"], info["checkpoints"][-1]
        n_test, k = info["n_test"], info["k_default"]
        print(f"run {args.run}: {info['n_train']} train x {n_test} test, {len(methods)} methods, "
              f"{info['n_scores']:,} scores")
        queries = {
            "leaderboard": lambda i: store.leaderboard(s.con, run=args.run),
            "leaderboard(k)": lambda i: store.leaderboard(s.con, run=args.run, k=k + 1 + i % 5),
            "top_k": lambda i: store.top_k(s.con, args.run, methods[i % len(methods)], ck, i % n_test, k),
            "score_matrix": lambda i: store.score_matrix(s.con, args.run, methods[i % len(methods)], ck),
            "samples(search)": lambda i: store.samples(s.con, args.run, split="test", search="the"),
            "top1_counts": lambda i: store.top1_counts(s.con, args.run, methods[i % len(methods)], ck),
        }
        print(f"\n{'store query':<22}{'median s':>10}{'worst s':>10}")
        for name, fn in queries.items():
            fn(0)
            ts = []
            for i in range(args.n):
                t = time.perf_counter()
                fn(i)
                ts.append(time.perf_counter() - t)
            print(f"{name:<22}{statistics.median(ts):>10.4f}{max(ts):>10.4f}")

    print(f"\n{'page (script rerun)':<30}{'median s':>10}{'worst s':>10}")
    for page in PAGES:
        if not (REPO / page).is_file():
            continue
        at = AppTest.from_file(str(REPO / page), default_timeout=120)
        at.query_params["run"] = args.run
        at.run()
        if at.exception:
            print(f"{page:<30} exception: {at.exception[0].message}")
            continue
        ts = []
        for i in range(args.n):
            at.query_params["test"] = str(i % n_test)
            at.query_params["k"] = str(k + i % 3)
            t = time.perf_counter()
            at.run()
            ts.append(time.perf_counter() - t)
        print(f"{page:<30}{statistics.median(ts):>10.3f}{max(ts):>10.3f}")


if __name__ == "__main__":
    main()
