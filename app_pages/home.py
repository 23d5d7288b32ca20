"""The home page: what the store holds, every run and its leaderboard with a computed reading, the demos.

Served at ``/`` by the entry point ``app.py`` (``st.navigation``). No torch and no SQL here: the page talks
to ``store`` only; a demo is queued as an ordinary job (``ui.demo_job``). Heavy modules are imported at the top,
before any ``st.*`` call, so an early click cannot interrupt a lazy import.
"""

from __future__ import annotations

import html
import urllib.parse

import pandas as pd  # noqa: F401  (imported first on purpose: see module docstring)
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import store
from engine.catalog.analyses import ANALYSES, ANALYSIS_CATALOG
from engine.jobs import queue as jobs
from engine.jobs import workers
from engine.paths import default_jobs_dir, default_store_path, read_only
from engine.spec.presets import DEMO_TASKS
from ui import demo_job, run_checks
from ui.auth import current_user, require_login
from ui.common import esc, get_store
from ui.labels import NEEDS_LABELS, method_board, without_label_metrics
from ui.readings import decomposition_sentences, difference_reading, leaderboard_reading, unlabelled_reading
from ui.stability import stability_column, stability_warnings

st.set_page_config(page_title="Influence Explorer", layout="wide")
require_login()

# demo task (engine.spec.presets.DEMO_TASKS) -> what it shows, with the SmolLM2 demo's time on 2 CPU cores without the
# retraining analysis
DEMO_LABELS = {
    "grammars": "grammars: which of 10 grammar rules a test answer follows (class attribution; ~3 min)",
    "harmful_s": "harmful_s: find the 20 harmful rows among 40 training rows (the paper's mix S; minutes)",
}
# --analyses value -> label (README, "Quick start": the retraining analysis is most of the time)
DEMO_ANALYSES = {
    "ihvp,convergence": "iHVP error + convergence",
    "none": "none (fastest)",
    "all": "all three (+ retraining: ~7 min more)",
}
MAX_READINGS = 6  # runs whose reading is spelled out under the heatmaps (newest first)


def jobs_dir():
    return default_jobs_dir(default_store_path())


def show_empty() -> None:
    st.info(
        "The store is empty. Influence Explorer fine-tunes a language model with LoRA, scores every training "
        "sample for every test sample with several attribution methods (GradSim, DataInf, LiSSA, exact iHVP, "
        "RepSim), and shows which methods find the training samples that share the test sample's class."
    )
    st.markdown("Fill it with a demo run (SmolLM2-135M on a small task, a few minutes on a CPU), from here or "
                "from a shell:")
    st.code("python -m engine demo --model smollm2-135m                   # grammars\n"
            "python -m engine demo --model smollm2-135m --task harmful_s  # harmful-data identification",
            language="bash")
    demo_launcher()


# ---------------------------------------------------------------------------------------------- demo launcher


def demo_launcher() -> None:
    """The demo form, or the progress of the demo job that is queued or running."""
    if read_only():
        st.caption("This deployment is read-only: ask whoever runs it to add runs.")
        return
    last = demo_job.latest(jobs_dir())
    if last and last.get("status") in ("queued", "running"):
        demo_progress(last["id"])
        return
    if last and last.get("status") in ("failed", "cancelled"):
        st.caption(f"The last demo job ({esc(last.get('run', ''))}) {esc(last['status'])}: "
                   f"{esc(last.get('message', ''))} — its log is on the [Jobs](Jobs) page.")
    task = st.radio("Demo", list(DEMO_TASKS), key="demo_task", format_func=lambda t: DEMO_LABELS.get(t, t),
                    help="grammars: the demo whose result differs from the paper (influence functions do well "
                         "on a small model); harmful_s: the paper's harmful-data identification.")
    c1, c2 = st.columns(2)
    model = c1.radio("Model", ["smollm2-135m", "tiny"], horizontal=True, key="demo_model",
                     help="tiny: a random 0.1M-parameter Llama, seconds; smollm2-135m: a real model, minutes")
    analyses = c2.radio(
        "Analyses", list(DEMO_ANALYSES), horizontal=True, key="demo_analyses", format_func=DEMO_ANALYSES.get,
        help="The retraining analysis re-fine-tunes the model 8 times (once per removed group of training "
             "samples): on 2 CPU cores that is most of a demo's time.")
    if st.button("Run the demo", type="primary", key="run_demo"):
        stages = ANALYSES if analyses == "all" else tuple(a for a in analyses.split(",") if a != "none")
        demo_job.launch(jobs_dir(), default_store_path(), model, task, stages, current_user())
        st.rerun()
    st.caption("The demo runs as a job: it is listed on the [Jobs](Jobs) page with its log and a cancel button. "
               "If no worker is running, the app starts one for it (it stops with the app).")


@st.fragment(run_every=2)
def demo_progress(job_id: str) -> None:
    """Follows the demo job; when it ends, reruns the page so that the new run is ingested and shown."""
    jd = jobs_dir()
    j = jobs.state(jd, job_id)
    if j.get("status") not in ("queued", "running"):
        if j.get("status") == "done":
            st.toast(f"Demo {j.get('run')} finished")
        st.rerun()
    live = workers.alive(jd)
    c1, c2 = st.columns([5, 1])
    if j["status"] == "queued" and not live and not demo_job.own_worker_running():
        c1.warning(f"Demo {esc(j.get('run', ''))} is queued, but no worker is running.")
        c2.button("Start a worker", key="demo_start_worker", on_click=demo_job.ensure_worker,
                  args=(jd, default_store_path()))
    else:
        if j["status"] == "running":
            what = f"running: {esc(j.get('message') or 'starting…')}"
        elif live:
            what = (f"queued; {len(live)} worker{'s' if len(live) > 1 else ''} alive, it starts when one is free")
        else:
            what = "queued; a worker is starting"
        c1.info(f"Demo **{esc(j.get('run', ''))}** {what}  \nLog and details on the [Jobs](Jobs) page.")
        c2.button("Cancel", key="demo_cancel", on_click=jobs.cancel, args=(jd, job_id))


# ---------------------------------------------------------------------------------------------- leaderboards


def _wrap(name: str, width: int = 20) -> str:
    """A run name broken at ``-`` / ``_`` into lines of about ``width`` characters (horizontal tick labels)."""
    lines, line = [], ""
    for part in str(name).replace("_", "_\x00").replace("-", "-\x00").split("\x00"):
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = ""
        line += part
    return "<br>".join(html.escape(p) for p in [*lines, line] if p)


def explore_url(run: str, method: str, checkpoint: int) -> str:
    return "Explore?" + urllib.parse.urlencode({"run": run, "ckpt": int(checkpoint), "methods": method})


def heatmap(grid: pd.DataFrame, checkpoints: dict, title: str) -> go.Figure:
    """Methods × runs with the value in each cell; a method's cells link to Explore for that method and run
    (the reference rows "(chance)" / "(best possible)" do not)."""
    runs = list(grid.columns)
    fig = go.Figure(go.Heatmap(
        z=grid.to_numpy(), x=list(range(len(runs))), y=list(grid.index), zmin=0, zmax=1, colorscale="Blues",
        customdata=[[html.escape(r) for r in runs]] * len(grid), colorbar=dict(thickness=12),
        hovertemplate="%{y} on %{customdata}: %{z:.2f}<extra>click the number to open it in Explore</extra>"))
    for y, row in grid.iterrows():
        for x, run in enumerate(runs):
            v = row[run]
            if pd.isna(v):
                continue
            text, colour = f"{v:.2f}", "white" if v > 0.6 else "#1f2d3d"
            if not str(y).startswith("("):  # plotly's own link colour would vanish on the dark cells
                text = (f'<a href="{html.escape(explore_url(run, y, checkpoints[run]))}" target="_self" '
                        f'style="color:{colour}">{text}</a>')
            fig.add_annotation(x=x, y=y, text=text, showarrow=False, font=dict(color=colour, size=13),
                               captureevents=True)  # clicks reach the link instead of the zoom layer
    fig.update_xaxes(tickmode="array", tickvals=list(range(len(runs))), ticktext=[_wrap(r) for r in runs],
                     tickangle=0, side="top")
    fig.update_yaxes(autorange="reversed", title=None)
    n_lines = max(_wrap(r).count("<br>") + 1 for r in runs)
    fig.update_layout(title=dict(text=title, x=0, y=0.995, yanchor="top"), height=70 + 16 * n_lines + 28 * len(grid),
                      margin=dict(l=10, r=10, t=50 + 16 * n_lines, b=10))
    return fig


def show_heatmaps(board: pd.DataFrame) -> None:
    """Methods × runs heatmaps of Acc@1 and Coverage@k at each run's last checkpoint, with chance and best (runs
    without labels are left out, and named)."""
    unlabelled = sorted(set(board.run_id[board.acc.isna()]) - set(board.run_id[board.acc.notna()]))
    if unlabelled:
        st.caption(f"Not in the heatmaps, their data has no labels (Acc@1 and Coverage@k {NEEDS_LABELS}): "
                   + ", ".join(esc(r) for r in unlabelled))
    board = board[~board.run_id.isin(unlabelled)]
    if board.empty:
        return
    last = board[board.checkpoint == board.groupby("run_id").checkpoint.transform("max")]
    checkpoints = last.groupby("run_id").checkpoint.first().to_dict()
    cols = st.columns(2)
    for col, metric, title in [(cols[0], "acc", "Acc@1"), (cols[1], "coverage", "Coverage@k")]:
        grid = last.pivot_table(index="method", columns="run_id", values=metric)
        grid = grid.loc[grid.mean(axis=1).sort_values(ascending=False).index]  # best methods on top
        ref = last.groupby("run_id")[["chance_acc" if metric == "acc" else "chance_coverage"]].first().T
        ref.index = ["(chance)"]
        extra = [ref]
        if metric == "coverage":
            best = last.groupby("run_id")[["best_coverage"]].first().T
            best.index = ["(best possible)"]
            extra.append(best)
        grid = pd.concat([grid, *extra])
        col.plotly_chart(heatmap(grid, checkpoints, f"{title} at each run's last checkpoint"), width="stretch",
                         key=f"heat_{metric}")
    st.caption("Click a number to open that method's rankings for that run in Explore.")


def run_reading(con, run: str, board: pd.DataFrame) -> list[str]:
    """The computed sentences on one run's leaderboard at its last checkpoint."""
    info = store.run_info(con, run)
    if not store.run_labelled(con, run):
        return unlabelled_reading(unlabelled_board(con, run, board)) + decomposition(con, run)
    spec = info.get("spec") or {}
    epochs = (spec.get("train") or {}).get("epochs") if info.get("kind", "pipeline") != "imported" else None
    last = board[board.checkpoint == board.checkpoint.max()]
    out = leaderboard_reading(last, int(info.get("n_test") or 0), model=str(info.get("model") or ""),
                              n_labels=len(info.get("labels") or []) or None, epochs=epochs)
    return out + noise_readings(con, run, last) + decomposition(con, run)


def decomposition(con, run: str) -> list[str]:
    """The LDS decomposition against metagrad, where the retraining analysis computed it (else nothing)."""
    if "retrain" not in store.analyses(con, run):
        return []
    return decomposition_sentences(store.analysis_table(con, run, "retrain_decomposition"))


def noise_readings(con, run: str, last: pd.DataFrame) -> list[str]:
    """Whether the best method's Acc@1 lead over the runner-up, and over RepSim, is more than the noise of the
    test set (paired bootstrap over the same test prompts, ``ui.readings.difference_reading``)."""
    rows = last.dropna(subset=["acc"]).sort_values(["acc", "method"], ascending=[False, True])
    if len(rows) < 2:
        return []
    best, ck, k = rows.method.iloc[0], int(rows.checkpoint.iloc[0]), int(rows.k.iloc[0])
    others = [rows.method.iloc[1]] + (["repsim"] if "repsim" in set(rows.method.iloc[2:]) else [])
    try:
        top1 = {m: store.per_test_hits(con, run, m, ck, k).top1_same.to_numpy() for m in [best, *others]}
    except store.StoreError:  # metrics without score files (nothing to resample)
        return []
    return [difference_reading(best, m, top1[best], top1[m]) for m in others]


def show_readings(con, runs: pd.DataFrame, board: pd.DataFrame) -> None:
    st.subheader("What the runs say")
    for run in runs.run_id.head(MAX_READINGS):
        sentences = run_reading(con, run, board[board.run_id == run])
        if sentences:
            st.markdown(f"**[{esc(run)}](Explore?run={urllib.parse.quote(run)})** — " + " ".join(sentences))
    if len(runs) > MAX_READINGS:
        st.caption(f"The {MAX_READINGS} newest runs; pick another one below for its leaderboard.")


def leaderboard_chart(last: pd.DataFrame, chance: float) -> go.Figure:
    """Horizontal bars of Acc@1 and Coverage@k per method, best Acc@1 on top, with the chance level."""
    order = last.sort_values(["acc", "coverage"], ascending=False).method.tolist()
    long = last.melt(id_vars=["method"], value_vars=["acc", "coverage"], var_name="metric", value_name="value")
    long["metric"] = long.metric.map({"acc": "Acc@1", "coverage": "Coverage@k"})
    # the second trace of a horizontal group is drawn on top: Coverage first, so that Acc@1 is the upper bar
    fig = px.bar(long, y="method", x="value", color="metric", barmode="group", orientation="h", range_x=[0, 1.08],
                 category_orders={"method": order, "metric": ["Coverage@k", "Acc@1"]}, text_auto=".2f",
                 color_discrete_map={"Acc@1": "#0068c9", "Coverage@k": "#83c9ff"})
    fig.update_traces(textposition="outside", textfont_size=11, cliponaxis=False)
    fig.add_vline(x=chance, line_dash="dot", annotation_text=f"chance {chance:.2f}", annotation_position="top")
    fig.update_layout(height=100 + 40 * len(order), margin=dict(l=10, r=10, t=60, b=10), yaxis_title=None,
                      xaxis_title=None, legend=dict(orientation="h", yanchor="bottom", y=1.04, x=0, title=None,
                                                    traceorder="reversed"), bargap=0.25)
    return fig


def stability_tables(con, run: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run's ``stability`` and ``stability_methods`` rows (empty frames when the check did not run)."""
    if "stability" not in store.analyses(con, run):
        return pd.DataFrame(), pd.DataFrame()
    return store.analysis_table(con, run, "stability"), store.analysis_table(con, run, "stability_methods")


def show_stability(con, run: str, board: pd.DataFrame) -> pd.DataFrame:
    """``board`` with each method's stability (the check's figure at the run's last checkpoint) as a column, and a
    warning per method whose ranking moves when a setting that should not matter changes."""
    rows, summary = stability_tables(con, run)
    if summary.empty:
        st.caption(f"Stability: this run lacks {ANALYSIS_CATALOG['stability'].how_to}.")
        return board
    for sentence in stability_warnings(rows):
        st.warning(sentence + " See the stability panel on the [Compare methods](Compare_methods) page.")
    return board.assign(stability=board.method.map(stability_column(summary)))


def unlabelled_board(con, run: str, board: pd.DataFrame) -> pd.DataFrame:
    """``ui.labels.method_board`` of a run without labels at its last checkpoint: LDS where the retraining
    analysis ran, the methods' agreement with each other, their stability where the check ran."""
    last = int(board.checkpoint.max())
    lds = store.analysis_table(con, run, "retrain_lds") if "retrain" in store.analyses(con, run) else None
    return method_board(sorted(board.method.unique()), store.agreement(con, run, last), lds,
                        stability_tables(con, run)[1])


def show_unlabelled_leaderboard(con, run: str, board: pd.DataFrame) -> None:
    """The leaderboard of a run without labels: no Acc@1 chart; the methods by LDS (where the retraining
    analysis ran) or by agreement, and the stored rows with "needs labels" in the label columns."""
    last = board[board.checkpoint == board.checkpoint.max()]
    st.markdown(f"**Leaderboard** for `{html.escape(run)}` at checkpoint {int(last.checkpoint.iloc[0])}, "
                f"k = {int(last.k.iloc[0])}: " + " ".join(unlabelled_reading(unlabelled_board(con, run, board))))
    st.dataframe(unlabelled_board(con, run, board), hide_index=True, width="stretch", key="unlabelled_board",
                 column_config={"agreement_spearman": st.column_config.NumberColumn(
                     "agreement (Spearman)", help="mean Spearman with every other method's scores", format="%.3f"),
                     "agreement_overlap": st.column_config.NumberColumn(
                         "agreement (top-k overlap)", help="mean top-k overlap with every other method",
                         format="%.3f")})
    show_stability(con, run, board)
    st.dataframe(without_label_metrics(board), hide_index=True, width="stretch")


def fingerprint_rows(fp: dict) -> pd.DataFrame:
    """The settings fingerprint (``store.run_fingerprint``) as (setting, value) rows of plain text."""
    precision = fp.get("precision") or {}
    scoring = sorted(set((precision.get("scoring_dtype") or {}).values()))
    rows = [("loss positions", f"{fp.get('loss_positions')} (prompt {'masked' if fp.get('prompt_masked') else 'in the loss'}"
                               f", preprocessing {fp.get('preprocessing')})"),
            ("precision", f"model {precision.get('model')}, gradients {precision.get('gradients')}, scoring "
                          f"{', '.join(scoring) or '-'}"),
            ("attention kernel", str(fp.get("attention"))),
            ("damping (lambda_c)", ", ".join(f"{m} {v:g}" for m, v in (fp.get("damping") or {}).items()) or "-"),
            ("projection (dim, seed)", ", ".join(f"{m} {p['dim']}, {p['seed']}"
                                                 for m, p in (fp.get("projection") or {}).items()) or "-"),
            ("query aggregation", str(fp.get("query")))]
    return pd.DataFrame(rows, columns=["setting", "value"])


def show_fingerprint(con, run: str) -> None:
    """The run's settings fingerprint: what must match before two attribution results can be compared."""
    fp = store.run_fingerprint(con, run)
    with st.expander(f"Settings fingerprint of {run}", expanded=False):
        if fp is None:
            st.caption("Not recorded: the run was imported or written before fingerprints.")
            return
        st.caption("The settings that decide whether two attribution results are comparable: compare them before "
                   "comparing two runs' rankings (or another tool's).")
        st.dataframe(fingerprint_rows(fp), hide_index=True, width="stretch", key="fingerprint")


def show_runs(s: store.Store) -> None:
    con = s.cursor()
    runs = store.list_runs(con)
    run_checks.flag_failing(con)  # ui.run_checks: runs whose numerical self-checks fail
    board = store.leaderboard(con)
    show_heatmaps(board)
    show_readings(con, runs, board)
    st.subheader(f"Runs ({len(runs)})")
    st.dataframe(
        runs[["run_id", "kind", "model", "task", "status", "n_train", "n_test", "k_default", "methods",
              "checkpoints", "created"]],
        hide_index=True, width="stretch",
        column_config={"run_id": st.column_config.TextColumn("run"),
                       "methods": st.column_config.TextColumn("methods", width="medium")},
    )
    run = st.selectbox("Run", runs.run_id.tolist(), key="run")
    info = store.run_info(con, run)
    run_checks.show(con, run)
    show_fingerprint(con, run)
    with st.expander(f"Spec and versions of {run}"):
        st.caption(f"spec hash {info.get('spec_hash', '')}")
        st.json({"spec": info.get("spec"), "versions": info.get("versions")}, expanded=1)
    board = board[board.run_id == run]
    if not store.run_labelled(con, run):
        show_unlabelled_leaderboard(con, run, board)
        return
    last = board[board.checkpoint == board.checkpoint.max()]
    chance = float(last.chance_acc.iloc[0])
    best = float(last.best_coverage.iloc[0])
    k = int(last.k.iloc[0])
    st.markdown(f"**Leaderboard** for `{html.escape(run)}` at checkpoint {int(last.checkpoint.iloc[0])}, "
                f"k = {k}: chance level {chance:.2f}, best possible coverage {best:.2f}")
    st.plotly_chart(leaderboard_chart(last, chance), width="stretch", key="leaderboard")
    st.dataframe(show_stability(con, run, board), hide_index=True, width="stretch",
                 column_config={"stability": st.column_config.NumberColumn(
                     "stability", format="%.2f", help="mean top-k overlap of the method's ranking when a setting "
                     "that should not matter changes (the stability check; 1 = unmoved)")})


st.title("Influence Explorer")
st.caption("Which training samples are behind a fine-tuned LLM's behaviour — and can the attribution method "
           "be trusted?")
try:
    s = get_store()
    new = s.ingest_all(strict=False)  # runs that finished since the last look
    if new:
        st.toast(f"Ingested {len(new)} new run(s)")
    summ = store.summary(s.cursor())
    cols = st.columns(4)
    for col, (label, key) in zip(cols, [("Runs", "runs"), ("Samples", "samples"), ("Scores", "scores"),
                                          ("Methods", "methods")]):
        col.metric(label, f"{summ[key]:,}")
    if summ["runs"] == 0:
        show_empty()
    else:
        active = None if read_only() else demo_job.latest(jobs_dir())
        if active and active.get("status") in ("queued", "running"):
            demo_progress(active["id"])
        else:
            with st.expander("Run a demo"):
                demo_launcher()
        show_runs(s)
except store.StoreError as e:
    st.error(f"The store could not be read: {e}")
