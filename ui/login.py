"""Clinicians log in before anything else is rendered.

- ``oidc``: Streamlit's own ``st.login`` against an identity provider configured in ``.streamlit/secrets.toml``
  (``[auth]``: redirect_uri, cookie_secret, client_id, client_secret, server_metadata_url; on Render a Secret
  File). Chosen by default when that section exists.
- ``builtin``: a user name and password checked against the app's database (ui/users.py, managed with
  ``python -m ui.users``), an idle timeout (UI_SESSION_TIMEOUT_MIN) and a lockout after UI_LOGIN_MAX_FAILURES
  failures in a row. The default otherwise.
- ``off``: only when the server is bound to loopback (the local stack, tests); refused anywhere else.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import streamlit as st

from ui.i18n import t
from ui.settings import Settings

log = logging.getLogger("ui.login")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def mode(settings: Settings) -> str:
    if settings.auth is not None:
        return settings.auth
    if _oidc_configured():
        return "oidc"
    return "off" if _on_loopback() else "builtin"


def _on_loopback() -> bool:
    return str(st.get_option("server.address") or "") in LOOPBACK


def _oidc_configured() -> bool:
    return st.secrets.load_if_toml_exists() and "auth" in st.secrets


def require(settings: Settings) -> None:
    """Return only for a logged-in clinician (or with login off on loopback); otherwise render the login page
    and stop the script run, so no page, menu or data is sent to a stranger's browser."""
    how = mode(settings)
    if how == "off":
        if not _on_loopback():
            log.error("UI_AUTH=off is only allowed when the server is bound to loopback")
            st.error(t("auth_off_refused"), icon=":material/lock:")
            st.stop()
        return
    if how == "oidc":
        if not st.user.is_logged_in:
            st.title(t("login_title"))
            st.button(t("login_oidc"), on_click=st.login, type="primary", key="login_oidc")
            st.stop()
        st.sidebar.button(t("logout"), on_click=st.logout, key="logout")
        return
    _builtin(settings)


def current_user() -> str | None:
    """The logged-in clinician: the built-in login's user name, or the identity provider's e-mail (else its
    subject); None with login off or outside a session. The API records it as the caller of what the app sends
    (ui/api.py, header X-Inference-User)."""
    try:
        session = st.session_state.get("auth")
        if session and session.get("user"):
            return str(session["user"])
        if st.user.is_logged_in:
            return str(st.user.get("email") or st.user.get("sub") or "") or None
    except Exception:  # noqa: BLE001 - no script run (a test calling the client directly) or no identity provider
        return None
    return None


def _builtin(settings: Settings) -> None:
    session = st.session_state.get("auth")
    now = time.monotonic()
    if session and now - session["seen"] < settings.session_timeout_min * 60:
        session["seen"] = now
        st.sidebar.caption(t("logged_in_as", user=session["user"]))
        if st.sidebar.button(t("logout"), key="logout"):
            st.session_state.pop("auth", None)
            st.rerun()
        return
    expired = session is not None
    st.session_state.pop("auth", None)
    st.title(t("login_title"))
    if expired:
        st.info(t("session_expired"), icon=":material/timer_off:")
    with st.form("login"):
        username = st.text_input(t("username"), key="login_user")
        password = st.text_input(t("password"), type="password")
        submitted = st.form_submit_button(t("login_button"), type="primary")
    if submitted:
        from ui import users  # the database driver is only needed on the login page

        outcome = users.verify(users.engine(), username, password, settings.login_max_failures,
                               timedelta(minutes=settings.lockout_min))  # fmt: skip
        if outcome.ok:
            st.session_state["auth"] = {"user": username.strip(), "seen": now}
            st.rerun()
        log.warning("failed login%s", " (account locked)" if outcome.locked else "")  # never the name typed
        st.error(t("login_locked", minutes=settings.lockout_min) if outcome.locked else t("login_failed"))
    st.stop()
