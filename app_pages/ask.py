"""Ask: attribute a new question against a run's kept training features, in seconds, from the browser.

Two directions (the run's query index must cover them: ``python -m engine index --run RUN`` builds one): a new
prompt, with a response or the model's own answer — which training samples are behind it; or a candidate training
text — which of the run's test prompts it would influence most. The answer comes from the query server
(:mod:`ui.ask`; the page never imports torch), which this page starts when none is alive. Every answer is saved in
the store (:mod:`store.queries.asks`); ``?q=<id>`` reopens one, and the run's past questions are listed. State in
the URL: ``run`` and ``q``. Query and dataset text reaches the screen escaped (:mod:`ui.ask_view`).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

import store
from engine.catalog.methods import default_methods
from engine.paths import default_runs_dir, default_store_path
from engine.runfolder.runformat import index_info
from ui import ask_tokens, ask_view
from ui.ask import Request, ask, refusal
from ui.auth import can_submit, require_login
from ui.common import cursor, md, pick_run, qp_get, qp_set

st.set_page_config(page_title="Ask · Influence Explorer", layout="wide")
require_login()

KINDS = {"prompt": "A new prompt: which training samples are behind it?",
         "candidate": "A candidate training text: which test prompts would it influence?"}
MAX_K = 50  # ranks per method a question asks for at most (side-by-side tables longer than this are unreadable)
DEFAULT_METHODS = 3  # methods picked at first: the catalog's first (engine.catalog.methods.default_methods)


def reopened(con) -> dict | None:
    """The saved query ``?q=`` names (its run becomes the page's run), or None; an unknown id is said and dropped."""
    qid = qp_get("q")
    if not qid:
        return None
    try:
        saved = store.saved_query(con, qid)
    except store.UnknownQueryError as e:
        st.warning(f"{e}.")
        qp_set(q=None)
        return None
    if "run" not in st.session_state:  # a fresh visit: the link decides the run
        qp_set(run=saved["run"])
    return saved


def index_status(run: str, folder: str, methods: list[str]) -> dict | None:
    """Whether the run has a query index (and its size), and which methods can answer what; without an index,
    the command that builds one."""
    info = index_info(Path(folder)) if folder else None
    if info is None:
        st.info(f"Run {run} has no query index, so it cannot answer new questions yet. Build one with\n\n"
                f"`python -m engine index --run {run}`\n\n(the demos make one by themselves). Saved questions "
                "can still be reopened below.")
    else:
        st.caption(f"Query index: {info.get('size_bytes', 0) / 2**20:.1f} MB, {info.get('n_train')} training and "
                   f"{info.get('n_test')} test samples, checkpoint(s) "
                   f"{', '.join(map(str, info.get('checkpoints', [])))}.")
    with st.expander("Which methods can answer a new question", expanded=False):
        st.caption("A new prompt (prompt) or a candidate training text (candidate). " + (
            "From the run's query index." if info else "What an index would allow (from the catalog)."))
        st.dataframe(ask_view.methods_table(methods, info), hide_index=True, width="stretch", key="ask_methods")
    return info


def form(run: str, info: dict, k_default: int) -> Request | None:
    """The question's widgets; the request when the Ask button was pressed."""
    kind = st.radio("Ask about", list(KINDS), format_func=KINDS.__getitem__, key="ask_kind", horizontal=True)
    prompt_label = "Prompt" if kind == "prompt" else "Candidate training prompt"
    prompt = st.text_area(prompt_label, key="ask_prompt", height=110, max_chars=20_000,
                          placeholder="Type or paste the text")
    generate = kind == "prompt" and st.checkbox(
        "Let the model answer", key="ask_generate",
        help="The run's fine-tuned model answers the prompt greedily (last checkpoint); that answer is attributed.")
    response = st.text_area("Response" if kind == "prompt" else "Candidate training response", key="ask_response",
                            height=80, max_chars=20_000, disabled=generate,
                            help="The answer whose training sources you want (may be empty).")
    can = list(info.get(f"{kind}_methods") or [])
    cannot = sorted((info.get("cannot") or {}).get(kind) or {})
    c1, c2 = st.columns([4, 1])
    methods = c1.multiselect("Methods", can, default=default_methods(can, DEFAULT_METHODS), key=f"ask_methods_{kind}",
                             help="Only the methods of this run that can answer this kind of question.")
    top = max(1, min(MAX_K, int(info.get("n_train" if kind == "prompt" else "n_test") or 1)))
    k = c2.number_input("k", 1, top, min(k_default, top), key=f"ask_k_{kind}", help="Samples ranked per method.")
    if cannot:
        st.caption(f"Cannot answer this kind of question: {md(', '.join(cannot))} (why: see the table above).")
    if not st.button("Ask", type="primary", key="ask_submit"):
        return None
    return Request(run, kind, prompt, "" if generate else response, bool(generate), methods, int(k))


def answer_and_save(con, req: Request) -> str | None:
    """Ask the query server (starting one, retrying once if it dies) and save the answer; its id, or None after
    a message saying why there is none."""
    store_path = default_store_path()
    answer = ask_view.from_server("Asking the query server…",
                                  lambda say: ask(req, store_path, default_runs_dir(store_path), say),
                                  lambda a: f"Answered in {a['seconds'].get('total_s', 0):.2f} s")
    if answer is None:
        return None
    return store.save_query(con, req.run, answer["kind"], answer["prompt"], answer["response"],
                            generated=answer["generated"], k=req.k, top=answer["top"],
                            seconds=answer["seconds"].get("total_s"), cannot=answer["cannot"], notes=answer["notes"])


def past(con, run: str, current: str | None) -> None:
    """The run's past questions, newest first; choosing one reopens it (``?q=``)."""
    saved = store.saved_queries(con, run)
    st.subheader("Past questions of this run")
    if saved.empty:
        st.caption("None yet: every question asked here is saved, and its link reopens it.")
        return
    ids = saved.ask_id.tolist()
    texts = {r.ask_id: f"{r.created:%Y-%m-%d %H:%M} · {r.kind} · {ask_view.cut(r.prompt, 80)}"
             for r in saved.itertuples(index=False)}
    key = f"ask_past_{current}"  # a new widget per question shown, so that it starts at that question

    def reopen() -> None:
        qp_set(q=st.session_state[key])

    st.selectbox("Reopen", [None, *ids], index=ids.index(current) + 1 if current in ids else 0, key=key,
                 format_func=lambda i: "—" if i is None else texts[i], on_change=reopen)
    view = saved[["created", "kind", "prompt", "response", "methods", "k", "seconds"]].copy()
    view["prompt"], view["response"] = view.prompt.map(ask_view.cut), view.response.map(ask_view.cut)
    view["methods"] = view.methods.map(", ".join)
    st.dataframe(view, hide_index=True, width="stretch", key="ask_past_table",
                 column_config={"seconds": st.column_config.NumberColumn(format="%.2f")})


def main() -> None:
    st.title("Ask")
    st.caption("Attribute a question the run has never seen: a new prompt (and its response, or the model's own "
               "answer), or a candidate training text. Answered by the run's own methods from its kept training "
               "features.")
    con = cursor()
    saved = reopened(con)
    run = pick_run(con)
    if run is None:
        return
    if saved is not None and saved["run"] != run:  # another run was picked: the reopened question was not its
        saved = None
        qp_set(q=None)
    info = store.run_info(con, run)
    index = index_status(run, info.get("folder") or "", info.get("methods") or [])
    if index is not None and can_submit():
        req = form(run, index, int(info.get("k_default") or 10))
        if req is not None:
            why = refusal(req)
            if why:
                st.warning(why)
            else:
                qid = answer_and_save(con, req)
                if qid is not None:
                    qp_set(q=qid)
                    saved = store.saved_query(con, qid)
    elif index is not None:
        st.info("This deployment is read-only: saved questions can be reopened, new ones cannot be asked.")
    if saved is not None:
        st.divider()
        ask_view.show(con, run, saved)
        if can_submit():  # the token view is computed by the query server, which a read-only deployment does not ask
            st.divider()
            ask_tokens.section(saved)
    st.divider()
    past(con, run, saved["ask_id"] if saved else None)


try:
    main()
except store.StoreError as e:
    st.error(f"The store could not be read: {e}")
