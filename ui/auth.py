"""Optional team sign-in (Streamlit's native OIDC) and the read-only switch.

- Sign-in is on when ``.streamlit/secrets.toml`` has an ``[auth]`` section (see the README); then every page
  calls :func:`require_login` first and shows only a sign-in button to anonymous visitors.
- ``INFLUENCE_READ_ONLY=1`` makes the deployment read-only: browsing works, submitting / cancelling jobs and
  the demo launcher are off (the app still ingests finished runs, which is not a user action).
"""

from __future__ import annotations

import streamlit as st

from engine.paths import read_only


def auth_configured() -> bool:
    """True when secrets.toml configures an OIDC provider (``[auth]``)."""
    try:
        return "auth" in st.secrets
    except Exception:  # noqa: BLE001 - no secrets file at all, or an unreadable one: no sign-in configured
        return False


def require_login() -> None:
    """With sign-in configured, stop the page for anonymous visitors after showing a sign-in button."""
    if not auth_configured() or _logged_in():
        return
    st.title("Influence Explorer")
    st.info("This deployment asks you to sign in.")
    st.button("Sign in", type="primary", on_click=st.login, key="login")
    st.stop()


def current_user() -> str | None:
    """The signed-in user's e-mail (or name), None without sign-in."""
    if not auth_configured() or not _logged_in():
        return None
    return st.user.get("email") or st.user.get("name")


def can_submit() -> bool:
    """Whether this visitor may queue, cancel or re-queue jobs."""
    return not read_only()


def _logged_in() -> bool:
    # st.user is a mapping; "is_logged_in" is present once an auth provider is configured (absent in AppTest)
    return bool(st.user.get("is_logged_in", False))
