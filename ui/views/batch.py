"""Evaluación por lotes. First tab: CSV upload, per-row validation against the served spec, chunked scoring,
download. Second tab: a CSV of confirmed outcomes keyed by the scored file's request_id and row, checked row by
row and sent to the API's POST /feedback (ui/outcomes.py)."""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd
import requests
import streamlit as st

from ui import api, batch, components, outcomes, spec
from ui import scored as scored_file
from ui.i18n import current_lang, t
from ui.settings import load

settings = load()
lang = current_lang()

st.title(t("batch_title"))
st.caption(t("batch_intro"))
components.disclaimer()

info = components.served_model_info(settings.api_base_url)

features: list[spec.Feature] = info["features"]
bands: list[dict[str, Any]] = info.get("risk_bands") or []
by_name = {f["name"]: f for f in features}


def _problem_table(problems: list[outcomes.Problem], key: str) -> None:
    """One line per problem: the CSV row, the column and the rule in words (never the cell's value)."""
    st.dataframe(
        pd.DataFrame(
            [
                {
                    t("row"): p.row,
                    t("column"): p.field,
                    t("problem"): t(f"outcome_rule_{p.rule}", detail=p.detail),
                }
                for p in problems
            ]
        ),
        hide_index=True,
        key=key,
    )


def outcomes_tab() -> None:
    """Confirmed diagnoses: upload, row-by-row check, send in chunks of UI_BATCH_CHUNK_ROWS to POST /feedback
    (each chunk one transaction on the API; resending is harmless), and a summary of what was stored."""
    st.markdown(t("outcomes_intro"))
    st.download_button(
        t("outcomes_template"),
        data=outcomes.TEMPLATE.encode("utf-8"),
        file_name="diagnosticos.csv" if lang == "es" else "diagnoses.csv",
        mime="text/csv",
        on_click="ignore",
        key="outcomes_template",
    )
    components.uploader_text()
    size = st.get_option("server.maxUploadSize")
    upload = st.file_uploader(
        t("outcomes_upload_label"), type=["csv"], key="outcomes_upload", help=t("outcomes_upload_help", size=size)
    )
    if upload is None:
        return
    data = upload.getvalue()
    try:
        frame = batch.read_csv(data)
    except (ValueError, pd.errors.ParserError, UnicodeError):
        st.error(t("csv_unreadable"), icon=":material/description:")
        return
    if frame.empty:
        st.error(t("csv_empty"), icon=":material/description:")
        return
    check = outcomes.validate(frame, lang)
    if check.missing_columns:
        columns = ", ".join(f"`{c}`" for c in check.missing_columns)
        st.error(t("outcomes_missing_columns", columns=columns), icon=":material/description:")
        return
    if check.duplicate_columns:
        columns = ", ".join(f"`{c}`" for c in check.duplicate_columns)
        st.error(t("outcomes_duplicate_columns", columns=columns), icon=":material/description:")
        return
    st.subheader(t("validation_title"))
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(t("rows_total"), check.total)
    c2.metric(t("outcomes_ready"), len(check.outcomes))
    c3.metric(t("outcomes_pending"), check.pending)
    c4.metric(t("rows_invalid"), check.invalid_rows)
    if check.problems:
        _problem_table(check.problems, "outcomes_report")
        st.caption(t("row_numbering"))
    else:
        st.success(t("outcomes_all_valid"), icon=":material/check_circle:")
    if not check.outcomes:
        return
    tag = (hashlib.sha256(data).hexdigest(), lang)
    if st.button(t("outcomes_send", n=len(check.outcomes)), type="primary", key="send_outcomes"):
        total = len(check.outcomes)
        bar = st.progress(0.0, text=t("outcomes_sending", done=0, total=total))
        sent = outcomes.Sent()
        try:
            for start in range(0, total, settings.batch_chunk_rows):
                part = slice(start, start + settings.batch_chunk_rows)
                answer = api.feedback(settings.api_base_url, check.outcomes[part], settings.api_timeout_s)
                outcomes.merge(sent, answer, check.rows[part])
                done = min(total, start + settings.batch_chunk_rows)
                bar.progress(done / total, text=t("outcomes_sending", done=done, total=total))
        except api.ApiUnavailable as exc:
            if exc.status == 403:
                st.error(t("outcomes_forbidden"), icon=":material/lock:")
            elif exc.status == 409:
                st.error(t("outcomes_log_off"), icon=":material/cloud_off:")
            else:
                components.api_error(exc, settings.api_base_url)
            if not sent.stored:
                return
        except api.ApiError as exc:
            components.api_error(exc, settings.api_base_url)
            return
        finally:
            bar.empty()  # done (or stopped): the summary or the error says what happened
        st.session_state["outcomes_sent"] = (tag, sent)
    last_tag, sent = st.session_state.get("outcomes_sent", (None, None))
    if last_tag != tag or sent is None:
        return
    st.subheader(t("outcomes_result_title"))
    s1, s2, s3 = st.columns(3)
    s1.metric(t("outcomes_stored"), sent.stored)
    s2.metric(t("outcomes_not_found"), sent.not_found)
    s3.metric(t("outcomes_invalid"), sent.invalid + check.invalid_rows)
    st.success(t("outcomes_summary", stored=sent.stored, total=len(check.outcomes)), icon=":material/check_circle:")
    if sent.problems:
        _problem_table(sent.problems, "outcomes_sent_report")


tab_patients, tab_outcomes = st.tabs([t("tab_patients"), t("tab_outcomes")])
with tab_outcomes:  # drawn first: the patients' tab stops the script run where its steps end
    outcomes_tab()

with tab_patients:
    with st.expander(t("batch_columns_title")):
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        t("column"): f["name"],
                        t("feature"): spec.label(f, lang),
                        t("valid_range_col"): spec.range_text(f, lang),
                        t("required_col"): t("no") if f.get("optional") else t("yes"),
                    }
                    for f in features
                ]
            ),
            hide_index=True,
        )
        st.caption(t("batch_columns_help"))
        st.download_button(
            t("download_template"),
            data=(",".join(f["name"] for f in features) + "\n").encode("utf-8"),
            file_name="plantilla_pacientes.csv" if lang == "es" else "patients_template.csv",
            mime="text/csv",
            on_click="ignore",
            key="template",
        )

    components.uploader_text()
    upload = st.file_uploader(
        t("upload_label"), type=["csv"], key="upload", help=t("upload_help", size=st.get_option("server.maxUploadSize"))
    )
    if upload is None:
        st.stop()

    data = upload.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    try:
        frame = batch.read_csv(data)
    except (ValueError, pd.errors.ParserError, UnicodeError):
        st.error(t("csv_unreadable"), icon=":material/description:")
        st.stop()
    if frame.empty:
        st.error(t("csv_empty"), icon=":material/description:")
        st.stop()

    check = batch.validate(frame, features)
    n_rows, n_valid = len(check.frame), len(check.valid_index)

    st.subheader(t("validation_title"))
    c1, c2, c3 = st.columns(3)
    c1.metric(t("rows_total"), n_rows)
    c2.metric(t("rows_valid"), n_valid)
    c3.metric(t("rows_invalid"), n_rows - n_valid)

    def _feature_names(names: list[str]) -> str:
        return ", ".join(spec.label(by_name[m], lang) + f" (`{m}`)" for m in names)

    if check.missing_columns:
        st.error(t("missing_columns", columns=_feature_names(check.missing_columns)), icon=":material/description:")
    if check.duplicate_columns:
        st.error(t("duplicate_columns", columns=_feature_names(check.duplicate_columns)), icon=":material/description:")
    if check.unknown_columns:
        st.info(t("unknown_columns", columns=", ".join(f"`{c}`" for c in check.unknown_columns)))
    if check.renamed_columns:
        renamed = ", ".join(
            f"`{old}` → `{new}`" if old else f"{t('blank_header')} → `{new}`" for old, new in check.renamed_columns
        )
        st.info(t("renamed_columns", columns=renamed))
    row_problems = [p for p in check.problems if p.row > 0]
    if row_problems:
        report = pd.DataFrame(
            [
                {
                    t("row"): p.row,
                    t("feature"): spec.label(by_name[p.field], lang) if p.field in by_name else p.field,
                    t("problem"): components.problem_text(p.rule, by_name.get(p.field), p.detail),
                }
                for p in row_problems
            ]
        )
        st.dataframe(report, hide_index=True, key="validation_report")
        st.caption(t("row_numbering"))
    elif not (check.missing_columns or check.duplicate_columns):
        st.success(t("all_rows_valid"), icon=":material/check_circle:")

    if n_valid == 0:
        st.stop()

    # Scoring results survive reruns (e.g. the download click) for this exact file and language. Only the latest
    # result is kept per session, so a long session of uploads does not grow the server's memory.
    state_tag = (digest, lang)
    if st.button(t("score_button", n=n_valid), type="primary", key="score"):
        bar = st.progress(0.0, text=t("scoring_progress", done=0, total=n_valid))

        def progress(done: int, total: int) -> None:
            bar.progress(done / total, text=t("scoring_progress", done=done, total=total))

        try:
            with requests.Session() as session:
                scored = batch.score(
                    check,
                    lambda chunk: api.predict(
                        settings.api_base_url, chunk, lang, settings.api_timeout_s, contributions=False, session=session
                    ),
                    settings.batch_chunk_rows,
                    progress,
                )
        except api.ApiError as exc:
            components.api_error(exc, settings.api_base_url, features)
            st.stop()
        finally:
            bar.empty()  # the scored table (or the error) replaces it
        batch.add_errors(
            scored,
            check.problems,
            lambda p: f"{p.field}: {components.problem_text(p.rule, by_name.get(p.field), p.detail)}",
        )
        st.session_state["batch_scored"] = (state_tag, scored)

    tag, scored = st.session_state.get("batch_scored", (None, None))
    if tag != state_tag:
        scored = None
    if scored is not None:
        st.subheader(t("scored_title"))
        n_scored = int(scored["probability"].notna().sum())
        st.success(t("scored_summary", n=n_scored, total=n_rows), icon=":material/check_circle:")
        machine = st.toggle(t("machine_csv"), key="machine_csv", help=t("machine_csv_help"))
        mode = scored_file.MACHINE if machine else scored_file.HUMAN
        table, renamed = scored_file.table(check, scored, features, bands, lang, mode)
        if renamed:
            st.info(t("renamed_results", columns=", ".join(f"`{old}` → `{new}`" for old, new in renamed)))
        # All text for display: blank (not "None") where a row was not scored, and no mixed-type columns for Arrow.
        shown, _ = scored_file.table(check, scored, features, bands, lang, scored_file.HUMAN)
        probability_col = shown.columns[len(check.frame.columns)]
        shown[probability_col] = [
            spec.format_probability(p, lang) if pd.notna(p) else "" for p in scored["probability"]
        ]
        st.dataframe(shown.astype(object).where(shown.notna(), "").astype(str), hide_index=True, key="scored_table")
        st.download_button(
            t("download_scored"),
            data=scored_file.to_csv(table, lang, mode),
            file_name=(upload.name.rsplit(".", 1)[0] or "pacientes")
            + ("_evaluado.csv" if lang == "es" else "_scored.csv"),
            mime="text/csv",
            on_click="ignore",  # no rerun: the table stays as it is
            key="download_scored",
            type="primary",
        )
        st.caption(t("scored_keys_help"))
