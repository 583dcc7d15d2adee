"""Clinicians' app entry point: `streamlit run ui/app.py`.

Three pages (st.navigation): individual assessment, batch assessment, model card; any other path gets a page
that says so in the app's language. The app never loads the
model: it calls the serving API over HTTP and reads the MLflow registry.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from urllib.parse import urlsplit

# `streamlit run` puts only ui/ on sys.path; the project root is needed to import `ui.*` and `common`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402

from ui import i18n, login  # noqa: E402
from ui.i18n import t  # noqa: E402
from ui.settings import SettingsError, load  # noqa: E402

log = logging.getLogger("ui")

# Clinicians get neither developer menus nor exception details (pages catch errors; this is the backstop).
st.set_option("client.toolbarMode", "viewer")
st.set_option("client.showErrorDetails", "none")
# An emoji favicon is drawn by the browser; a `:material/...:` one is fetched from fonts.gstatic.com, a request
# to Google from every clinician's browser (tests/test_ui_e2e.py records any request leaving the app).
st.set_page_config(page_title=t("app_title"), page_icon="🩺", layout="wide")
i18n.language_selector()
try:
    settings = load()  # every page reads the settings; a bad value stops here, named, instead of on some page
except SettingsError as exc:
    log.error("invalid UI settings: %s", exc)
    st.error(t("settings_invalid", detail=str(exc)), icon=":material/settings_alert:")
    st.stop()
login.require(settings)  # a stranger gets the login page and nothing below this line

DEFAULT_PAGE_NAME = "individual"
PAGES = [
    # The default page lives at `/`; its name (`individual`) is left free for not_found() to catch.
    st.Page("views/individual.py", title=t("nav_individual"), icon=":material/person:", url_path="", default=True),
    st.Page("views/batch.py", title=t("nav_batch"), icon=":material/table_view:", url_path="lotes"),
    st.Page("views/model.py", title=t("nav_model"), icon=":material/description:", url_path="modelo"),
    st.Page("views/monitoring.py", title=t("nav_monitoring"), icon=":material/monitoring:", url_path="monitorizacion"),
]


def requested_path() -> str:
    """The page path in the browser's address bar (st.context.url), without the deployment's base path."""
    path = urlsplit(st.context.url or "").path.strip("/")
    base = str(st.get_option("server.baseUrlPath") or "").strip("/")
    return path.removeprefix(base).strip("/") if base else path


def not_found(path: str) -> st.Page:
    """Streamlit answers an unknown page path with an English "Page not found" dialog; instead the path gets
    our own page. `/individual` (what the default page would be called) goes to that page, at `/`."""

    def render() -> None:
        if path == DEFAULT_PAGE_NAME:
            st.switch_page(PAGES[0])
        st.title(t("not_found_title"))
        st.info(t("not_found_text", path=f"/{path}"), icon=":material/explore_off:")
        st.page_link(PAGES[0], label=t("not_found_link"), icon=":material/person:")

    return st.Page(render, title=t("not_found_title"), url_path=path)


# Our own links in the sidebar (the navigation menu is hidden) so the not-found page never shows in the menu.
path = requested_path()
extra = [not_found(path)] if path and "/" not in path and path not in {p.url_path for p in PAGES[1:]} else []
page = st.navigation(PAGES + extra, position="hidden")
for p in PAGES:
    st.sidebar.page_link(p, label=p.title, icon=p.icon)
st.sidebar.caption(t("sidebar_disclaimer"))
try:
    page.run()
except Exception:  # noqa: BLE001 - last resort: the traceback goes to the server log, never to a clinician
    log.exception("unexpected error on page %s", page.url_path)
    st.error(t("unexpected_error"))
