"""Influence Explorer — Streamlit entry point: the sidebar navigation over the pages (``ui.navigation``).

Run with ``streamlit run app.py`` (``make run`` also starts a worker). The home page is ``app_pages/home.py``;
every page keeps its URL (``/Explore?run=...``). Sign-in (when configured) is checked here, before any page runs,
and again by each page (which also runs on its own in the tests).
"""

from __future__ import annotations

import streamlit as st

from engine.paths import REPO_ROOT
from ui.auth import require_login
from ui.navigation import NAVIGATION

st.set_page_config(page_title="Influence Explorer", layout="wide")
require_login()
pages = {group: [st.Page(str(REPO_ROOT / p.file), title=p.title, icon=p.icon, url_path=p.url_path or None,
                         default=not p.url_path) for p in group_pages]
         for group, group_pages in NAVIGATION.items()}
st.navigation(pages).run()
