"""Jobs: build a run spec in a form, validate it, queue it for a worker (``python -m engine worker``), and follow
every job's progress and log; cancel or re-queue. Jobs are files under the jobs folder (``engine.jobs.queue``), so
they survive page reloads, browser closes and app restarts. Uploaded datasets are validated before anything is
kept (``engine.data.uploads``).

The page builds the spec as a dict — the chosen preset plus only what the user changed (``ui.spec_form``) — and
validates it with ``engine.spec.load.spec_from_dict``, the same check as ``python -m engine run``, so what is queued is
what a worker can run. Two kinds of run: fine-tune a fresh adapter, or attribute the user's existing adapter
(folders on the worker's machine; no weights go through the browser). No torch is imported (method names and
parameters come from ``engine.catalog.methods``). Heavy imports first (app convention).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd  # noqa: F401  (import before any st.* call)
import streamlit as st

import store
from engine.catalog.analyses import ANALYSES
from engine.catalog.methods import DEFAULT_METHODS, METHOD_NAMES
from engine.data.tasks import TASK_NAMES
from engine.data.uploads import keep_upload, list_datasets, max_upload_bytes, validate_upload
from engine.errors import InputError
from engine.jobs import queue as jobs
from engine.jobs import workers
from engine.jobs.plan_client import plan_spec
from engine.paths import DEFAULT_STORE_PATH, default_datasets_dir, default_jobs_dir, default_store_path, read_only
from engine.spec.load import spec_from_dict
from engine.spec.presets import PRESETS
from ui.auth import can_submit, current_user, require_login
from ui.common import esc, get_store, md
from ui.plan_view import show_plan
from ui.spec_form import (
    DEVICE_FIELD,
    ENCODING_FIELDS,
    MODEL_FIELD,
    RETRAIN_FIELDS,
    SCORING_FIELDS,
    TASK_FIELDS,
    TRAIN_FIELDS,
    changes,
    param_changes,
    param_fields,
    preset_values,
)

st.set_page_config(page_title="Jobs · Influence Explorer", layout="wide")
require_login()

STATUS_ICON = {"queued": "⏳", "running": "▶️", "done": "✅", "failed": "❌", "cancelled": "⏹️", "broken": "⚠️"}


def paths():
    db = default_store_path()
    return default_jobs_dir(db), default_datasets_dir(db)


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

FINETUNE, ATTRIBUTE = "fine-tune a LoRA adapter, then attribute", "attribute an existing adapter"
SOURCES = ("built-in task", "uploaded dataset", "dataset path on the worker")


def _load_preset(only_missing: bool = False) -> None:
    """Put the chosen preset's values into the form's widgets (all of them, or only those not set yet)."""
    values = preset_values(st.session_state.get("f_preset", "quick"))
    for f in (*TASK_FIELDS, *TRAIN_FIELDS, *ENCODING_FIELDS, *SCORING_FIELDS, *RETRAIN_FIELDS):
        if not only_missing or f.key not in st.session_state:
            v = values[f.path]
            st.session_state[f.key] = list(v) if isinstance(v, (list, tuple)) else v
    if not only_missing or "f_template" not in st.session_state:
        st.session_state["f_template"] = values["train.template"]


def _bound(value, kind: type):
    return None if value is None else kind(value)


def _widget(f, container=st):
    """A widget for form field ``f`` (``ui.spec_form.FormField``: options and bounds are the spec field's rule);
    its value comes from session state (set from the preset) or, for a choice not set yet, is the first option."""
    kw = {"key": f.key, "help": f.help or None}
    if f.kind == "int":
        return container.number_input(f.label, min_value=_bound(f.minimum, int), max_value=_bound(f.maximum, int),
                                      step=1, **kw)
    if f.kind == "float":
        return container.number_input(f.label, min_value=_bound(f.minimum, float),
                                      max_value=_bound(f.maximum, float), format="%.1e", **kw)
    if f.kind == "choice":
        return container.selectbox(f.label, list(f.options), **kw)
    if f.kind == "text":
        return container.text_input(f.label, **kw)
    return container.multiselect(f.label, list(f.options), **kw)


def _param_widget(p, container):
    """A widget for one method parameter (``ui.spec_form.ParamField``), starting at the method's default."""
    label = f"{p.name}" + (" (empty = automatic)" if p.optional else "")
    if p.kind == "bool":
        return container.checkbox(label, value=bool(p.default), key=p.key, help=p.help or None)
    if p.kind == "choice":
        opts = list(p.options)
        return container.selectbox(label, opts, index=opts.index(p.default), key=p.key, help=p.help or None)
    if p.kind == "int":
        return container.number_input(label, value=p.default, step=1, key=p.key, help=p.help or None)
    if p.kind == "float":
        return container.number_input(label, value=p.default, format="%g", key=p.key, help=p.help or None)
    return container.text_input(label, value=p.default or "", key=p.key, help=p.help or None)


def _data_inputs(source: str, kept: list[str], datasets_dir, values: dict) -> dict:
    """The task part of the spec for the chosen data source."""
    if source == "built-in task":
        task_name = st.selectbox("Task", TASK_NAMES, index=TASK_NAMES.index("grammars"), key="f_task")
        values["task.name"] = task_name
        for f in TASK_FIELDS:
            values[f.path] = _widget(f)
        st.caption("Empty sample counts = the task's full (paper) size.")
        return {}
    if source == "uploaded dataset":
        ds = st.selectbox("Dataset", kept, key="f_dataset", placeholder="upload one first" if not kept else None)
        return {"name": "file", "path": str(datasets_dir / ds) if ds else ""}
    path = st.text_input("Dataset path on the worker's machine (folder or JSONL/CSV/Parquet file)", key="f_dspath")
    return {"name": "file", "path": path.strip()}


def _form_buttons() -> str | None:
    """The form's two buttons: "queue", "plan" (the memory plan first), or None when neither was pressed."""
    b1, b2, b3 = st.columns(3)
    b3.number_input("Worker's GPU memory, GB (for the plan of a cuda run)", min_value=1.0, value=80.0,
                    key="f_plan_gpu_gb")
    queue_it = b1.form_submit_button("Validate and queue", type="primary", disabled=not can_submit())
    plan_it = b2.form_submit_button("Plan memory and disk first", disabled=not can_submit(),
                                    help="Predict each stage's peak memory and the disk from the model's "
                                         "configuration (nothing is loaded), on this machine's memory")
    return "queue" if queue_it else "plan" if plan_it else None


def spec_form(datasets_dir) -> dict | None:
    """The run-spec form; returns the spec dict when submitted: the preset plus what the user changed."""
    kept = list_datasets(datasets_dir)
    mode = st.radio("What to run", [FINETUNE, ATTRIBUTE], horizontal=True, key="f_mode")
    c0, c00 = st.columns(2)
    c0.selectbox("Start from preset", list(PRESETS), index=list(PRESETS).index("quick"), key="f_preset",
                 on_change=_load_preset, help="quick: CPU demo sizes; paper: the paper's settings. The form shows "
                 "the preset's values; only what you change is sent on top of it.")
    source = c00.radio("Data", SOURCES, horizontal=True, key="data_source")
    _load_preset(only_missing=True)
    values: dict = {}
    with st.form("spec_form"):
        c1, c2, c3 = st.columns(3)
        with c1:
            st.markdown("**Run**")
            name = st.text_input("Run name (optional)", key="f_name")
            model_spec: dict = {}
            if mode == FINETUNE:
                values[MODEL_FIELD.path] = _widget(MODEL_FIELD)
            else:
                model_spec["name"] = st.text_input("Base model: a built-in name, an id in the worker's HF cache, "
                                                   "or a folder on the worker's machine", key="f_base").strip()
                model_spec["adapter"] = st.text_input("Adapter folder on the worker's machine (adapter_config.json "
                                                      "+ adapter_model.safetensors)", key="f_adapter").strip()
                ckpts = st.text_area("Checkpoint folders (optional): one per line, or the folder holding "
                                     "checkpoint-* folders", key="f_ckdirs")
                model_spec["checkpoints"] = [c.strip() for c in ckpts.splitlines() if c.strip()]
            values[DEVICE_FIELD.path] = _widget(DEVICE_FIELD)
            task = _data_inputs(source, kept, datasets_dir, values)
        with c2:
            if mode == FINETUNE:
                st.markdown("**LoRA and training**")
                for f in TRAIN_FIELDS:
                    values[f.path] = _widget(f)
            else:
                st.markdown("**How the adapter was trained**")
                st.caption("The gradients are those of the adapter's training loss: give the prompt format and "
                           "the loss the adapter was trained with. Its LoRA settings come from adapter_config.json.")
                values["train.template"] = st.text_input("Prompt template ({prompt} and {response})",
                                                         key="f_template")
            for f in ENCODING_FIELDS:
                values[f.path] = _widget(f)
        with c3:
            st.markdown("**Attribution and analyses**")
            methods = st.multiselect("Methods", list(METHOD_NAMES), default=list(DEFAULT_METHODS), key="f_methods")
            values["scoring.methods"] = methods
            for f in SCORING_FIELDS:
                values[f.path] = _widget(f)
            allowed = list(ANALYSES) if mode == FINETUNE else [a for a in ANALYSES if a != "retrain"]
            values["analysis.stages"] = st.multiselect(
                "Analyses", allowed, default=["ihvp", "convergence"], key=f"f_stages_{mode == FINETUNE}",
                help="retrain re-fine-tunes the model once per removed group: the slow one" if mode == FINETUNE
                else "retrain needs the adapter's full training recipe: use a spec file (README)")
            if mode == FINETUNE:
                for f in RETRAIN_FIELDS:
                    values[f.path] = _widget(f)
            with st.expander("Method parameters"):
                entered = {}
                for m in methods:
                    fields_ = param_fields(m)
                    if fields_:
                        st.markdown(f"**{m}**")
                        entered[m] = {p.name: _param_widget(p, st) for p in fields_}
        action = _form_buttons()
    if action is None:
        return None
    st.session_state["f_action"] = action
    preset = st.session_state.get("f_preset", "quick")
    spec = {"preset": preset, **changes(values, preset)}
    params = param_changes({m: {k: (None if v == "" else v) for k, v in vals.items()} for m, vals in entered.items()})
    if params:
        spec.setdefault("scoring", {})["params"] = params
    if task:
        spec["task"] = task
    if mode == ATTRIBUTE:
        spec["model"] = {k: v for k, v in model_spec.items() if v or k == "adapter"}
    if name.strip():
        spec["name"] = name.strip()
    return spec


def _checked(spec: dict):
    """The form's spec dict as a RunSpec; InputError for what the form left out."""
    if spec.get("task", {}).get("name") == "file" and not spec["task"].get("path"):
        raise InputError("spec field 'task.path': no dataset chosen; upload one first or give a path")
    if "adapter" in spec.get("model", {}):
        if not spec["model"]["adapter"]:
            raise InputError("spec field 'model.adapter': give the adapter folder (a path on the worker's machine)")
        if not spec["model"].get("name"):
            raise InputError("spec field 'model.name': give the base model the adapter was trained on")
    return spec_from_dict(spec)


def plan(spec: dict) -> None:
    """The spec's memory plan (a child process: the plan needs torch's meta device), shown before queueing."""
    try:
        _checked(spec)
        with st.spinner("Planning memory and disk from the model's configuration…"):
            result = plan_spec(spec, gpu_memory_gb=st.session_state.get("f_plan_gpu_gb"))
    except InputError as e:
        st.error(f"No plan: {e}")
        return
    show_plan(result)


def queue(spec: dict, jobs_dir) -> None:
    try:
        run_spec = _checked(spec)
        job_id = jobs.submit(jobs_dir, run_spec, submitted_by=current_user())
    except InputError as e:
        st.error(f"Not queued: {e}")
        return
    st.success(f"Queued job {esc(job_id)} (run {esc(run_spec.run_name)}). A worker (`python -m engine worker`) "
               "picks it up; its progress shows below.")


# ---------------------------------------------------------------------------------------------- workers


def worker_command(jobs_dir) -> str:
    """The shell command that starts a worker on this app's store (and jobs folder, when it is not the default)."""
    db = default_store_path().resolve()
    cmd = ".venv/bin/python -m engine worker"
    if db != DEFAULT_STORE_PATH.resolve():
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
            # md(): the message quotes the run's output (dataset text in error lines): no markdown may come alive
            c1.markdown(f"{STATUS_ICON.get(status, '')} **{md(j.get('run', '?'))}** — {esc(label)}  \n"
                        f"<small>job {esc(j['id'])} · queued {esc(j.get('created', ''))}"
                        f"{' by ' + md(j['submitted_by']) if j.get('submitted_by') else ''}"
                        f"{' · started ' + esc(j['started']) if j.get('started') else ''}"
                        f"{' · finished ' + esc(j['finished']) if j.get('finished') else ''}</small>  \n"
                        f"<code>{md(j.get('message', ''))}</code>", unsafe_allow_html=True)
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
    if spec is not None and st.session_state.get("f_action") == "plan":
        plan(spec)
    elif spec is not None:
        queue(spec, jobs_dir)
st.subheader("Queue")
job_list(jobs_dir)
