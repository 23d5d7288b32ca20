"""Jobs: build a run spec in a form, validate it, queue it for a worker (``python -m engine worker``), and follow
every job's progress and log; cancel or re-queue. Jobs are files under the jobs folder (``engine.jobs``), so
they survive page reloads, browser closes and app restarts. Uploaded datasets are validated before anything is
kept (``engine.uploads``).

The page builds the spec as a dict and validates it with ``engine.spec.spec_from_dict`` — the same check as
``python -m engine run`` — so what is queued is what a worker can run. Heavy imports first (app convention).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd  # noqa: F401  (import before any st.* call)
import streamlit as st

import store
from engine import jobs, workers
from engine.errors import InputError
from engine.methods import REGISTRY
from engine.spec import ANALYSES, DEFAULT_METHODS, PRESETS, spec_from_dict
from engine.tasks import TASK_NAMES
from engine.uploads import keep_upload, list_datasets, max_upload_bytes, validate_upload
from store.paths import REPO_ROOT
from ui.auth import can_submit, current_user, read_only, require_login
from ui.common import esc, get_store

st.set_page_config(page_title="Jobs · Influence Explorer", layout="wide")
require_login()

MODELS = ["tiny", "smollm2-135m"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
STATUS_ICON = {"queued": "⏳", "running": "▶️", "done": "✅", "failed": "❌", "cancelled": "⏹️"}


def paths():
    db = store.default_store_path()
    return jobs.default_jobs_dir(db), db.parent / "datasets"


# ---------------------------------------------------------------------------------------------- upload


def upload_section(datasets_dir) -> None:
    with st.expander("Upload a dataset (JSONL, CSV, Parquet or Arrow with prompt, response, label, split columns)"):
        limit_mb = max_upload_bytes() / 2**20
        st.caption(f"One file with columns prompt, response, label and split (train or test); an optional id "
                   f"column must be unique. Up to {limit_mb:.0f} MB. Nothing is kept unless the whole file is valid.")
        up = st.file_uploader("Dataset file", type=["jsonl", "ndjson", "csv", "parquet", "pq", "arrow"],
                              key="upload_file")
        name = st.text_input("Keep it as (letters, digits, - _ .)", key="upload_name",
                             value=(up.name.rsplit(".", 1)[0] if up else ""))
        if st.button("Validate and keep", key="upload_keep", disabled=up is None):
            try:
                data = up.getvalue()
                task = validate_upload(up.name, data)
                folder = keep_upload(task, datasets_dir, name.strip())
            except InputError as e:
                st.error(f"Not kept: {e}")
            else:
                st.success(f"Kept dataset {esc(name.strip())}: {len(task.train)} train, {len(task.test)} test, "
                           f"{len(task.labels)} labels ({esc(folder.name)}).")


# ---------------------------------------------------------------------------------------------- the form


def spec_form(datasets_dir) -> dict | None:
    """The run-spec form; returns the spec dict when submitted."""
    kept = list_datasets(datasets_dir)
    source = st.radio("Data", ["built-in task", "uploaded dataset"], horizontal=True, key="data_source")
    with st.form("spec_form"):
        c1, c2, c3 = st.columns(3)
        with c1:
            st.markdown("**Run**")
            name = st.text_input("Run name (optional)", key="f_name")
            preset = st.selectbox("Start from preset", list(PRESETS), index=list(PRESETS).index("quick"),
                                  key="f_preset", help="quick: CPU demo sizes; paper: the paper's settings")
            model = st.selectbox("Base model", MODELS, key="f_model")
            device = st.selectbox("Device", ["auto", "cpu", "cuda"], key="f_device")
            if source == "built-in task":
                task_name = st.selectbox("Task", TASK_NAMES, index=TASK_NAMES.index("grammars"), key="f_task")
                n_train = st.number_input("Training samples per label", 1, 10000, 10, key="f_ntrain")
                n_test = st.number_input("Test samples per label", 1, 1000, 3, key="f_ntest")
                task = {"name": task_name, "n_train_per_label": int(n_train), "n_test_per_label": int(n_test)}
            else:
                ds = st.selectbox("Dataset", kept, key="f_dataset",
                                  placeholder="upload one first" if not kept else None)
                task = {"name": "file", "path": str(datasets_dir / ds) if ds else ""}
        with c2:
            st.markdown("**LoRA and training**")
            r = st.number_input("LoRA rank r", 1, 256, 4, key="f_r")
            alpha = st.number_input("LoRA alpha", 1, 1024, 32, key="f_alpha")
            targets = st.multiselect("Target modules", TARGETS, default=["q_proj", "v_proj"], key="f_targets")
            epochs = st.number_input("Epochs", 1, 100, 2, key="f_epochs")
            batch = st.number_input("Batch size", 1, 512, 8, key="f_batch")
            lr = st.number_input("Learning rate", 1e-7, 1.0, 1e-3, format="%.1e", key="f_lr")
            max_len = st.number_input("Max tokens per sample", 8, 4096, 64, key="f_maxlen")
            loss_on = st.selectbox("Loss on", ["sequence", "response"], key="f_losson")
        with c3:
            st.markdown("**Attribution and analyses**")
            methods = st.multiselect("Methods", sorted(REGISTRY), default=list(DEFAULT_METHODS), key="f_methods")
            checkpoints = st.selectbox("Score checkpoints", ["all", "last"], key="f_ckpts")
            lambda_c = st.number_input("Damping λ_c", 1e-6, 1e6, 10.0, key="f_lambda")
            stages = st.multiselect("Analyses", list(ANALYSES), default=["ihvp", "convergence"], key="f_stages",
                                    help="retrain re-fine-tunes the model once per removed group: the slow one")
            n_single = st.number_input("Retrain: single samples removed", 0, 100, 2, key="f_single")
            n_labels = st.number_input("Retrain: labels removed (0 = all)", 0, 1000, 2, key="f_labels")
            n_random = st.number_input("Retrain: random 10 % subsets", 0, 100, 3, key="f_random")
        submitted = st.form_submit_button("Validate and queue", type="primary", disabled=not can_submit())
    if not submitted:
        return None
    spec = {"preset": preset, "task": task, "model": {"name": model}, "device": device,
            "lora": {"r": int(r), "alpha": int(alpha), "target_modules": targets},
            "train": {"epochs": int(epochs), "batch_size": int(batch), "lr": float(lr), "max_length": int(max_len),
                      "loss_on": loss_on},
            "scoring": {"methods": methods, "checkpoints": checkpoints, "lambda_c": float(lambda_c)},
            "analysis": {"stages": stages, "retrain_single": int(n_single), "retrain_labels": int(n_labels),
                         "retrain_seeds": int(n_random)}}
    if name.strip():
        spec["name"] = name.strip()
    return spec


def queue(spec: dict, jobs_dir) -> None:
    try:
        if spec["task"].get("name") == "file" and not spec["task"].get("path"):
            raise InputError("spec field 'task.path': no dataset chosen; upload one first")
        run_spec = spec_from_dict(spec)
        job_id = jobs.submit(jobs_dir, run_spec, submitted_by=current_user())
    except InputError as e:
        st.error(f"Not queued: {e}")
        return
    st.success(f"Queued job {esc(job_id)} (run {esc(run_spec.run_name)}). A worker (`python -m engine worker`) "
               "picks it up; its progress shows below.")


# ---------------------------------------------------------------------------------------------- workers


def worker_command(jobs_dir) -> str:
    """The shell command that starts a worker on this app's store (and jobs folder, when it is not the default)."""
    db = store.default_store_path().resolve()
    cmd = ".venv/bin/python -m engine worker"
    if db != (REPO_ROOT / "data" / "influence.duckdb").resolve():
        cmd += f" --store {db}"
    if Path(jobs_dir).resolve() != db.parent / "jobs":
        cmd += f" --jobs {Path(jobs_dir).resolve()}"
    return cmd


@st.fragment(run_every=2)
def workers_panel(jobs_dir) -> None:
    """How many workers are alive, where, on which device; with none, says so and how to start one. Refreshes
    itself."""
    live = workers.alive(jobs_dir)
    if not live:
        st.warning("**No worker is running**: queued jobs wait until one starts. Start one in a shell, from the "
                   "app's folder (`make run` starts one with the app; one worker per GPU):")
        st.code(worker_command(jobs_dir), language="bash")
        return
    rows = pd.DataFrame([{"host": w.get("host"), "pid": w.get("pid"), "device": w.get("device"),
                          "running": w.get("job") or "idle", "jobs done": w.get("jobs_done", 0),
                          "since": w.get("started")} for w in live])
    busy = int((rows.running != "idle").sum())
    hosts = ", ".join(sorted(f"{h} ({d})" for h, d in {(w.get("host"), w.get("device")) for w in live}))
    st.success(f"**{len(live)} worker{'s' if len(live) > 1 else ''} alive** ({busy} busy) on {esc(hosts)}")
    with st.expander("Workers"):
        st.dataframe(rows, hide_index=True, width="stretch")


# ---------------------------------------------------------------------------------------------- job list


def _requeue(jobs_dir, job_id: str) -> None:
    try:
        jobs.requeue(jobs_dir, job_id)
    except InputError as e:  # e.g. it finished between the render and the click
        st.toast(str(e))


@st.fragment(run_every=2)
def job_list(jobs_dir) -> None:
    """Every job with status, progress message and log; refreshes itself, and ingests finished runs."""
    try:
        get_store().ingest_all(strict=False)
    except store.StoreError as e:
        st.warning(f"Finished runs could not be ingested yet: {e}")
    live = workers.alive(jobs_dir)
    all_jobs = jobs.list_jobs(jobs_dir)
    if not all_jobs:
        st.info("No jobs yet.")
        return
    counts = pd.Series([j.get("status") for j in all_jobs]).value_counts()
    st.caption(" · ".join(f"{STATUS_ICON.get(s, '')} {s}: {n}" for s, n in counts.items()))
    for j in all_jobs:
        status = j.get("status", "?")
        label = "running (worker lost)" if j["stale"] else status
        if status == "queued" and not live:
            j["message"] = "no worker is running: start one (above) to run this job"
        with st.container(border=True, key=f"job_{j['id']}"):
            c1, c2, c3 = st.columns([4, 1, 1])
            c1.markdown(f"{STATUS_ICON.get(status, '')} **{esc(j.get('run', '?'))}** — {esc(label)}  \n"
                        f"<small>job {esc(j['id'])} · queued {esc(j.get('created', ''))}"
                        f"{' by ' + esc(j['submitted_by']) if j.get('submitted_by') else ''}"
                        f"{' · started ' + esc(j['started']) if j.get('started') else ''}"
                        f"{' · finished ' + esc(j['finished']) if j.get('finished') else ''}</small>  \n"
                        f"<code>{esc(j.get('message', ''))}</code>", unsafe_allow_html=True)
            # callbacks run before the rerun they trigger, so the list below already shows the new state
            if can_submit() and status in ("queued", "running") and not j["stale"]:
                c2.button("Cancel", key=f"cancel_{j['id']}", on_click=jobs.cancel, args=(jobs_dir, j["id"]))
            if can_submit() and (status in ("failed", "cancelled") or j["stale"]):
                c2.button("Re-queue", key=f"requeue_{j['id']}", on_click=_requeue, args=(jobs_dir, j["id"]))
            if status == "done":
                c3.markdown(f"[Explore](Explore?run={esc(j.get('run', ''))})")
            log = jobs.log_tail(jobs_dir, j["id"], 6000)
            if log:
                with st.expander("Log"):
                    st.code(log[-4000:], language=None)


# ---------------------------------------------------------------------------------------------- page


st.title("Jobs")
st.caption("Fine-tune, score and analyse a model from the browser. The app only queues; a worker process runs "
           "the job and writes a run folder, which appears in the explorer when it is done.")
jobs_dir, datasets_dir = paths()
workers_panel(jobs_dir)
if read_only():
    st.info("This deployment is read-only: you can follow jobs, but submitting, cancelling and uploads are off.")
else:
    upload_section(datasets_dir)
    spec = spec_form(datasets_dir)
    if spec is not None:
        queue(spec, jobs_dir)
st.subheader("Queue")
job_list(jobs_dir)
