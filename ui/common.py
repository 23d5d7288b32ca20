"""Store access and URL-backed state shared by ``app.py`` and every page in ``app_pages/``.

State lives in the URL (``st.query_params``): run, checkpoint, method(s), test prompt, k. A page reads its
initial widget values from the URL and writes them back on change, so a copied link reproduces the view
(navigating by URL starts a new session, so nothing may depend on ``st.session_state`` alone).
"""

from __future__ import annotations

import html
import io
import re

import pyarrow as pa
import pyarrow.parquet as pq
import streamlit as st

import store
from engine.paths import default_store_path


@st.cache_resource
def get_store() -> store.Store:
    """The app process owns the database: one read-write connection, rebuilt from run folders if corrupt."""
    return store.open_or_rebuild(default_store_path())


def cursor():
    """A cursor for this script run (DuckDB connections are not thread-safe; cursors are cheap)."""
    s = get_store()
    s.ingest_all(strict=False)  # pick up runs that finished since the last look; a no-op when none did
    return s.cursor()


def qp_get(key: str, default=None, cast=str):
    """A query parameter cast with ``cast``; ``default`` when absent or malformed."""
    raw = st.query_params.get(key)
    if raw is None:
        return default
    try:
        return cast(raw)
    except (TypeError, ValueError):
        return default


def qp_set(**values) -> None:
    """Write values into the URL (None removes the key); only touches keys that changed."""
    for key, value in values.items():
        if value is None:
            if key in st.query_params:
                del st.query_params[key]
        elif st.query_params.get(key) != str(value):
            st.query_params[key] = str(value)


def pick_run(con, label: str = "Run", key: str = "run") -> str | None:
    """Sidebar run picker bound to the ``run`` query parameter; None (with a message) when the store is empty."""
    runs = store.list_runs(con)
    if runs.empty:
        st.info("No runs yet. Start with the demo on the home page, or `python -m engine demo`.")
        return None
    ids = runs.run_id.tolist()
    wanted = qp_get("run", ids[0])
    run = st.sidebar.selectbox(label, ids, index=ids.index(wanted) if wanted in ids else 0, key=key)
    qp_set(run=run)
    return run


def pick_checkpoint(con, run: str, key: str = "ckpt") -> int:
    """Sidebar checkpoint picker (default: the last one) bound to ``ckpt``."""
    cks = store.checkpoints(con, run)
    wanted = qp_get("ckpt", cks[-1], int)
    ck = st.sidebar.selectbox("Checkpoint (epoch)", cks, index=cks.index(wanted) if wanted in cks else len(cks) - 1,
                              key=key)
    qp_set(ckpt=ck)
    return ck


def esc(text: str) -> str:
    """HTML-escape dataset text before it goes into HTML (``unsafe_allow_html``) or markdown."""
    return html.escape(str(text), quote=True)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}()#+\-.!|~$])")


def md(text) -> str:
    """Dataset text made safe for ``st.markdown``: markdown punctuation backslash-escaped (``th* c*lm`` is not
    italics, ``[x](javascript:...)`` is not a link), then HTML-escaped. Also inside inline HTML such as
    ``<code>``, whose content markdown still parses."""
    return esc(_MD_SPECIAL.sub(r"\\\1", str(text)))


def folded(text: str, limit: int = 160) -> str:
    """Escaped text, cut at ``limit`` characters with an ellipsis (the full text goes in an expander)."""
    t = str(text)
    return esc(t if len(t) <= limit else t[: limit - 1] + "…")


def chart_text(text, limit: int = 160) -> str:
    """Dataset text for plotly labels and hovers: cut at ``limit`` characters, and ``<``/``>`` replaced by look-alike
    angle quotes so that plotly, which renders a few HTML tags in text, shows tags as text. Not HTML-escaped
    (plotly would show ``&quot;`` literally)."""
    t = str(text)
    t = t if len(t) <= limit else t[: limit - 1] + "…"
    return t.replace("<", "‹").replace(">", "›")


def parquet_bytes(df) -> bytes:
    """A DataFrame as Parquet bytes (no index), for download buttons."""
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    return buf.getvalue()


def export_buttons(df, stem: str, key: str, what: str = "") -> None:
    """CSV and Parquet download buttons for ``df`` (widget keys ``<key>_csv`` and ``<key>_parquet``)."""
    label = f"{what} as " if what else "Download "
    c1, c2, _ = st.columns([1, 1, 3])
    c1.download_button(f"{label}CSV", df.to_csv(index=False).encode("utf-8"), file_name=f"{stem}.csv",
                       mime="text/csv", key=f"{key}_csv")
    c2.download_button(f"{label}Parquet", parquet_bytes(df), file_name=f"{stem}.parquet",
                       mime="application/vnd.apache.parquet", key=f"{key}_parquet")
