"""Clinicians' app entry point: `streamlit run ui/app.py`.

Three pages (st.navigation): individual assessment, batch assessment, model card. The app never loads the
model: it calls the serving API over HTTP and reads the MLflow registry.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

# `streamlit run` puts only ui/ on sys.path; the project root is needed to import `ui.*` and `common`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402

from ui import i18n  # noqa: E402
from ui.i18n import t  # noqa: E402

log = logging.getLogger("ui")

# Clinicians get neither developer menus nor exception details (pages catch errors; this is the backstop).
st.set_option("client.toolbarMode", "viewer")
st.set_option("client.showErrorDetails", "none")
st.set_page_config(page_title=t("app_title"), page_icon=":material/monitor_heart:", layout="wide")
i18n.language_selector()

pages = [
    st.Page(
        "views/individual.py", title=t("nav_individual"), icon=":material/person:", url_path="individual", default=True
    ),
    st.Page("views/batch.py", title=t("nav_batch"), icon=":material/table_view:", url_path="lotes"),
    st.Page("views/model.py", title=t("nav_model"), icon=":material/description:", url_path="modelo"),
    st.Page("views/monitoring.py", title=t("nav_monitoring"), icon=":material/monitoring:", url_path="monitorizacion"),
]
page = st.navigation(pages)
st.sidebar.caption(t("sidebar_disclaimer"))
try:
    page.run()
except Exception:  # noqa: BLE001 - last resort: the traceback goes to the server log, never to a clinician
    log.exception("unexpected error on page %s", page.url_path)
    st.error(t("unexpected_error"))
