"""The app's pages as the sidebar shows them: named, with icons, in three groups (``st.navigation``).

One declaration, read by ``app.py`` (the entry point) and by the tests: each page keeps the URL path it had as a
file of the legacy ``pages/`` folder (``/Explore``, ``/Compare_methods``, ...), so old links and their query
parameters keep working. The files live in ``app_pages/``: a folder named ``pages/`` beside the entry point would
make Streamlit serve a first visit to ``/Explore`` in its legacy mode, without this navigation. No Streamlit
import here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PageInfo:
    file: str  # relative to the repository root
    title: str  # the sidebar name
    url_path: str  # "" for the home page (served at "/")
    icon: str  # a Material Symbols name, as st.Page takes it


NAVIGATION: dict[str, tuple[PageInfo, ...]] = {
    "Results": (
        PageInfo("app_pages/home.py", "Home", "", ":material/home:"),
        PageInfo("app_pages/explore.py", "Explore", "Explore", ":material/search:"),
        PageInfo("app_pages/ask.py", "Ask", "Ask", ":material/question_answer:"),
        PageInfo("app_pages/compare_methods.py", "Compare methods", "Compare_methods", ":material/compare_arrows:"),
        PageInfo("app_pages/dataset.py", "Dataset", "Dataset", ":material/table_rows:"),
        PageInfo("app_pages/behaviour.py", "Behaviour", "Behaviour", ":material/group_work:"),
    ),
    "Analyses": (
        PageInfo("app_pages/ihvp_error.py", "iHVP error", "iHVP_error", ":material/functions:"),
        PageInfo("app_pages/convergence.py", "Convergence", "Convergence", ":material/trending_down:"),
        PageInfo("app_pages/retraining.py", "Retraining", "Retraining", ":material/replay:"),
    ),
    "Jobs": (
        PageInfo("app_pages/jobs.py", "Jobs", "Jobs", ":material/play_circle:"),
    ),
}

PAGES: tuple[PageInfo, ...] = tuple(p for group in NAVIGATION.values() for p in group)
