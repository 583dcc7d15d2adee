"""Every string of the UI, in Spanish (default) and English, and the sidebar language selector.

One table so a missing translation is a failing test (tests/test_ui_i18n.py), not a silent English fallback.
Placeholders use str.format names, and must be the same in both languages.
"""

from __future__ import annotations

import streamlit as st

LANGS: tuple[str, ...] = ("es", "en")
DEFAULT_LANG = "es"
LANG_NAMES = {"es": "Español", "en": "English"}

STRINGS: dict[str, dict[str, str]] = {
    # ---- app shell ----
    "app_title": {"es": "Riesgo de diabetes tipo 2", "en": "Type 2 diabetes risk"},
    # Same text in both: whoever needs to switch language must recognise the selector.
    "language": {"es": "Idioma / Language", "en": "Idioma / Language"},
    "nav_individual": {"es": "Evaluación individual", "en": "Individual assessment"},
    "nav_batch": {"es": "Evaluación por lotes", "en": "Batch assessment"},
    "nav_model": {"es": "Modelo", "en": "Model"},
    "not_found_title": {"es": "Página no encontrada", "en": "Page not found"},
    "not_found_text": {
        "es": "La dirección {path} no corresponde a ninguna página de esta aplicación.",
        "en": "The address {path} is not a page of this app.",
    },
    "not_found_link": {"es": "Ir a la evaluación individual", "en": "Go to the individual assessment"},
    "sidebar_disclaimer": {
        "es": "Herramienta de apoyo al cribado. No es un diagnóstico.",
        "en": "Screening aid. Not a diagnosis.",
    },
    "unexpected_error": {
        "es": "Se produjo un error inesperado en esta página. Recárguela; si persiste, avise al equipo técnico.",
        "en": "An unexpected error occurred on this page. Reload it; if it persists, tell the technical team.",
    },
    # ---- login ----
    "login_title": {"es": "Acceso para profesionales", "en": "Clinician sign-in"},
    "username": {"es": "Usuario", "en": "User name"},
    "password": {"es": "Contraseña", "en": "Password"},
    "login_button": {"es": "Entrar", "en": "Sign in"},
    "login_oidc": {"es": "Entrar con la cuenta de la organización", "en": "Sign in with your organisation account"},
    "login_failed": {"es": "Usuario o contraseña incorrectos.", "en": "Wrong user name or password."},
    "login_locked": {
        "es": "Demasiados intentos fallidos: la cuenta queda bloqueada {minutes} minutos.",
        "en": "Too many failed attempts: the account is locked for {minutes} minutes.",
    },
    "session_expired": {
        "es": "La sesión se cerró por inactividad. Vuelva a entrar.",
        "en": "The session ended after a period of inactivity. Sign in again.",
    },
    "logged_in_as": {"es": "Sesión de {user}", "en": "Signed in as {user}"},
    "logout": {"es": "Salir", "en": "Sign out"},
    "auth_off_refused": {
        "es": "El acceso sin identificación solo se permite en un equipo local. Avise al equipo técnico.",
        "en": "Access without sign-in is only allowed on a local machine. Tell the technical team.",
    },
    "settings_invalid": {
        "es": "La aplicación está mal configurada y no puede funcionar. Avise al equipo técnico: {detail}",
        "en": "The app is misconfigured and cannot work. Tell the technical team: {detail}",
    },
    "disclaimer": {
        "es": "**Ayuda para el cribado, no un diagnóstico.** Un resultado de este modelo no confirma ni descarta "
        "la diabetes: confírmelo con glucosa plasmática en ayunas, HbA1c o una prueba de tolerancia oral a la "
        "glucosa (SOG), interpretadas por un profesional.",
        "en": "**Screening aid, not a diagnosis.** A result from this model neither confirms nor rules out "
        "diabetes: confirm it with fasting plasma glucose, HbA1c or an oral glucose tolerance test (OGTT), "
        "read by a clinician.",
    },
    # ---- API and registry problems ----
    "api_down": {
        "es": "No se puede contactar con el servicio de predicción ({url}). Inténtelo de nuevo en unos minutos; "
        "si persiste, avise al equipo técnico.",
        "en": "The prediction service ({url}) cannot be reached. Try again in a few minutes; if it persists, "
        "tell the technical team.",
    },
    "api_bad_response": {
        "es": "El servicio de predicción ({url}) respondió de forma inesperada. Avise al equipo técnico.",
        "en": "The prediction service ({url}) gave an unexpected answer. Tell the technical team.",
    },
    "api_http_error": {
        "es": "El servicio de predicción ({url}) devolvió un error (HTTP {status}). Inténtelo de nuevo; si persiste, "
        "avise al equipo técnico.",
        "en": "The prediction service ({url}) returned an error (HTTP {status}). Try again; if it persists, tell "
        "the technical team.",
    },
    "api_no_model": {
        "es": "El servicio de predicción ({url}) está en marcha pero no tiene ningún modelo cargado.",
        "en": "The prediction service ({url}) is running but has no model loaded.",
    },
    "api_degraded": {
        "es": "El servicio funciona en modo degradado: no llega al registro de modelos y usa su copia local.",
        "en": "The service is degraded: it cannot reach the model registry and uses its local copy.",
    },
    "registry_down": {
        "es": "No se puede leer el registro de modelos ({uri}). La información del modelo no está disponible "
        "por ahora.",
        "en": "The model registry ({uri}) cannot be read. Model information is unavailable for now.",
    },
    "registry_no_model": {
        "es": "El registro ({uri}) no contiene ningún modelo llamado «{name}».",
        "en": "The registry ({uri}) holds no model named '{name}'.",
    },
    "fix_fields": {"es": "Revise estos datos:", "en": "Please check these fields:"},
    "row_n": {"es": "Fila {n}", "en": "Row {n}"},
    # ---- individual assessment ----
    "individual_title": {"es": "Evaluación individual", "en": "Individual assessment"},
    "individual_intro": {
        "es": "Introduzca los datos del paciente. Los campos opcionales pueden marcarse como «No medido».",
        "en": "Enter the patient's data. Optional fields can be marked 'Not measured'.",
    },
    "valid_range": {"es": "Rango válido: {range}", "en": "Valid range: {range}"},
    "not_measured": {"es": "No medido", "en": "Not measured"},
    "required_placeholder": {"es": "Obligatorio", "en": "Required"},
    "optional_placeholder": {"es": "Opcional", "en": "Optional"},
    "submit": {"es": "Calcular riesgo", "en": "Calculate risk"},
    "result_title": {"es": "Resultado", "en": "Result"},
    "probability": {"es": "Probabilidad de diabetes tipo 2", "en": "Probability of type 2 diabetes"},
    "risk_band": {"es": "Nivel de riesgo", "en": "Risk level"},
    "label": {"es": "Clasificación", "en": "Classification"},
    "label_positive": {"es": "Positivo", "en": "Positive"},
    "label_negative": {"es": "Negativo", "en": "Negative"},
    "label_help": {
        "es": "Positivo cuando la probabilidad alcanza el umbral de decisión del modelo ({threshold}): se "
        "recomienda una prueba diagnóstica.",
        "en": "Positive when the probability reaches the model's decision threshold ({threshold}): a diagnostic "
        "test is advised.",
    },
    "contributions_title": {"es": "¿Qué datos pesan en este resultado?", "en": "What drives this result?"},
    "contribution_axis": {
        "es": "Contribución al riesgo (log-odds)",
        "en": "Contribution to risk (log-odds)",
    },
    "raises": {"es": "Aumenta el riesgo", "en": "Raises the risk"},
    "lowers": {"es": "Reduce el riesgo", "en": "Lowers the risk"},
    "feature": {"es": "Variable", "en": "Feature"},
    "contributions_help": {
        "es": "Cada barra muestra cuánto desplaza ese dato el riesgo respecto a un paciente de referencia "
        "(valores medios del entrenamiento; riesgo {reference}). Los datos no medidos se imputan con la mediana.",
        "en": "Each bar shows how far that input moves the risk from a reference patient (training averages; "
        "risk {reference}). Inputs not measured are imputed with the median.",
    },
    "interval_caption": {"es": "Intervalo del 90 %: {low} – {high}", "en": "90 % interval: {low} – {high}"},
    "interval_help": {
        "es": "Rango de la probabilidad entre 100 versiones del modelo reentrenadas con remuestreos (bootstrap) de "
        "los datos de entrenamiento: refleja cuánto sabe el modelo sobre pacientes como este, no el error de "
        "las mediciones.",
        "en": "Range of the probability across 100 versions of the model retrained on bootstrap resamples of the "
        "training data: it shows how much the model knows about patients like this one, not measurement error.",
    },
    "interval_low": {"es": "Límite inferior (90 %)", "en": "Lower limit (90 %)"},
    "interval_high": {"es": "Límite superior (90 %)", "en": "Upper limit (90 %)"},
    "model_version_used": {"es": "Modelo {name}, versión {version}", "en": "Model {name}, version {version}"},
    "request_reference": {
        "es": "Referencia de esta evaluación: request_id `{request_id}`, row 0 (para registrar el diagnóstico "
        "confirmado en «Evaluación por lotes» → «Diagnósticos confirmados»).",
        "en": "Reference of this assessment: request_id `{request_id}`, row 0 (to record the confirmed diagnosis "
        "in 'Batch assessment' → 'Confirmed diagnoses').",
    },
    # ---- batch assessment ----
    "batch_title": {"es": "Evaluación por lotes", "en": "Batch assessment"},
    "batch_intro": {
        "es": "Suba un archivo CSV con un paciente por fila. Se valida cada fila y se evalúan las válidas.",
        "en": "Upload a CSV file with one patient per row. Every row is checked and the valid ones are scored.",
    },
    "batch_columns_title": {"es": "Columnas esperadas", "en": "Expected columns"},
    "batch_columns_help": {
        "es": "Separador coma o punto y coma; se admite la coma decimal. Las columnas adicionales (p. ej. un "
        "identificador) se conservan en el archivo resultante. Una celda vacía en un campo opcional significa "
        "«no medido».",
        "en": "Comma or semicolon separated; decimal commas are accepted. Extra columns (e.g. an identifier) are "
        "kept in the output file. An empty cell in an optional field means 'not measured'.",
    },
    "column": {"es": "Columna", "en": "Column"},
    "valid_range_col": {"es": "Rango válido", "en": "Valid range"},
    "required_col": {"es": "Obligatoria", "en": "Required"},
    "yes": {"es": "Sí", "en": "Yes"},
    "no": {"es": "No", "en": "No"},
    "download_template": {"es": "Descargar plantilla CSV", "en": "Download CSV template"},
    "upload_label": {"es": "Archivo CSV de pacientes", "en": "Patients CSV file"},
    "upload_help": {
        "es": "Una fila por paciente, con las columnas indicadas arriba. Tamaño máximo: {size} MB.",
        "en": "One row per patient, with the columns listed above. Maximum size: {size} MB.",
    },
    "upload_button": {"es": "Elegir archivo", "en": "Choose file"},
    "machine_csv": {
        "es": "Archivo para otros programas (punto decimal, nombres de columna de la API)",
        "en": "File for other programs (decimal point, the API's column names)",
    },
    "machine_csv_help": {
        "es": "Sin marcar, el archivo está pensado para leerlo: columnas en español, coma decimal y «;» como "
        "separador. Marcado, usa los nombres y códigos de la API (probability, risk_level, label) y el punto "
        "decimal, para importarlo en otro sistema.",
        "en": "Unticked, the file is meant to be read: columns in English, decimal point, comma-separated. "
        "Ticked, it uses the API's names and codes (probability, risk_level, label), for import into another "
        "system.",
    },
    "renamed_results": {
        "es": "El archivo ya tenía columnas con el nombre de un resultado; los resultados se llaman así: {columns}",
        "en": "The file already had columns named like a result; the results are named: {columns}",
    },
    "col_probability": {"es": "probabilidad (%)", "en": "probability (%)"},
    "col_risk_level": {"es": "nivel de riesgo", "en": "risk level"},
    "col_label": {"es": "clasificación", "en": "classification"},
    "col_model_version": {"es": "versión del modelo", "en": "model version"},
    "col_errors": {"es": "errores", "en": "errors"},
    # The prediction's key in the API's inference log: the API's names in both languages, because a confirmed
    # outcome is sent back with them (the outcomes tab reads these columns).
    "col_request_id": {"es": "request_id", "en": "request_id"},
    "col_row": {"es": "row", "en": "row"},
    "scored_keys_help": {
        "es": "Las columnas request_id y row identifican cada evaluación. Cuando tenga el diagnóstico confirmado, "
        "añada al archivo las columnas diabetes, test y test_date y súbalo en la pestaña «Diagnósticos "
        "confirmados».",
        "en": "The request_id and row columns identify each assessment. Once the diagnosis is confirmed, add the "
        "columns diabetes, test and test_date to the file and upload it in the 'Confirmed diagnoses' tab.",
    },
    # ---- confirmed outcomes (batch page, second tab) ----
    "tab_patients": {"es": "Evaluar pacientes", "en": "Score patients"},
    "tab_outcomes": {"es": "Diagnósticos confirmados", "en": "Confirmed diagnoses"},
    "outcomes_intro": {
        "es": "Registre el resultado de la prueba de confirmación de pacientes ya evaluados: así se mide si el "
        "modelo acierta. Un CSV con una fila por evaluación y las columnas:\n\n"
        "- `request_id` y `row` (`row` es opcional; 0 si falta): los del archivo evaluado que descargó en la otra "
        "pestaña;\n"
        "- `diabetes`: sí/no o 1/0;\n"
        "- `test`: la prueba que lo confirmó, `hba1c`, `fasting_glucose` (glucemia en ayunas) u `ogtt` "
        "(sobrecarga oral de glucosa);\n"
        "- `test_date`: la fecha de la prueba, AAAA-MM-DD o DD/MM/AAAA.\n\n"
        "Las filas sin diagnóstico todavía (las tres últimas columnas vacías) se omiten. Enviar de nuevo el mismo "
        "diagnóstico lo corrige, no lo duplica.",
        "en": "Record the result of the confirming test for patients already assessed: this is how the model's "
        "accuracy is measured. A CSV with one row per assessment and the columns:\n\n"
        "- `request_id` and `row` (`row` is optional; 0 when absent): those of the scored file downloaded in the "
        "other tab;\n"
        "- `diabetes`: yes/no or 1/0;\n"
        "- `test`: the confirming test, `hba1c`, `fasting_glucose` or `ogtt` (oral glucose tolerance test);\n"
        "- `test_date`: the date of the test, YYYY-MM-DD.\n\n"
        "Rows without a diagnosis yet (the last three columns empty) are skipped. Sending the same diagnosis again "
        "corrects it; it is never stored twice.",
    },
    "outcomes_template": {"es": "Descargar plantilla de diagnósticos", "en": "Download the diagnoses template"},
    "outcomes_upload_label": {"es": "Archivo CSV de diagnósticos confirmados", "en": "Confirmed diagnoses CSV file"},
    "outcomes_upload_help": {
        "es": "Una fila por evaluación, con las columnas indicadas arriba. Tamaño máximo: {size} MB.",
        "en": "One row per assessment, with the columns listed above. Maximum size: {size} MB.",
    },
    "outcomes_missing_columns": {
        "es": "Faltan columnas: {columns}. No se puede enviar ningún diagnóstico.",
        "en": "Columns are missing: {columns}. No diagnosis can be sent.",
    },
    "outcomes_duplicate_columns": {
        "es": "Hay más de una columna {columns} (sin distinguir mayúsculas): deje solo una.",
        "en": "More than one column is named {columns} (ignoring case): keep only one.",
    },
    "outcomes_ready": {"es": "Listos para enviar", "en": "Ready to send"},
    "outcomes_pending": {"es": "Sin diagnóstico (se omiten)", "en": "No diagnosis yet (skipped)"},
    "outcomes_all_valid": {
        "es": "Todas las filas con diagnóstico son válidas.",
        "en": "Every row with a diagnosis is valid.",
    },
    "outcomes_send": {"es": "Enviar {n} diagnósticos", "en": "Send {n} diagnoses"},
    "outcomes_sending": {"es": "Enviando… {done}/{total}", "en": "Sending… {done}/{total}"},
    "outcomes_result_title": {"es": "Resultado del envío", "en": "What was stored"},
    "outcomes_stored": {"es": "Guardados", "en": "Stored"},
    "outcomes_not_found": {"es": "Evaluación desconocida", "en": "Unknown request id"},
    "outcomes_invalid": {"es": "No válidos", "en": "Invalid"},
    "outcomes_summary": {
        "es": "{stored} de {total} diagnósticos guardados junto a su evaluación.",
        "en": "{stored} of {total} diagnoses stored with their assessment.",
    },
    "outcomes_forbidden": {
        "es": "El servicio de predicción no permite a esta aplicación registrar diagnósticos (falta el permiso "
        "«feedback» en API_SERVICE_SCOPES). Avise al equipo técnico.",
        "en": "The prediction service does not let this app record diagnoses (the 'feedback' scope is missing "
        "from API_SERVICE_SCOPES). Tell the technical team.",
    },
    "outcomes_log_off": {
        "es": "El registro de predicciones del servicio está desactivado (INFERENCE_LOG=off): los diagnósticos no "
        "se pueden asociar a ninguna evaluación.",
        "en": "The prediction service's inference log is off (INFERENCE_LOG=off): diagnoses cannot be matched "
        "to any assessment.",
    },
    "outcome_rule_required": {"es": "dato obligatorio vacío", "en": "required value is empty"},
    "outcome_rule_bad_request_id": {
        "es": "no es un request_id (letras, cifras, . _ -; hasta 64)",
        "en": "not a request_id (letters, digits, . _ -; up to 64)",
    },
    "outcome_rule_bad_row": {"es": "debe ser un número entero ≥ 0", "en": "must be a whole number ≥ 0"},
    "outcome_rule_bad_yes_no": {"es": "debe ser sí/no o 1/0", "en": "must be yes/no or 1/0"},
    "outcome_rule_bad_test": {
        "es": "prueba no admitida (admitidas: hba1c, fasting_glucose, ogtt)",
        "en": "test not accepted (accepted: hba1c, fasting_glucose, ogtt)",
    },
    "outcome_rule_bad_date": {
        "es": "no es una fecha (AAAA-MM-DD o DD/MM/AAAA)",
        "en": "not a date (YYYY-MM-DD)",
    },
    "outcome_rule_future_date": {"es": "la fecha es futura", "en": "the date is in the future"},
    "outcome_rule_duplicate": {
        "es": "la misma evaluación (request_id y row) ya está en la fila {detail}",
        "en": "the same assessment (request_id and row) is already in row {detail}",
    },
    "outcome_rule_not_found": {
        "es": "el servicio no tiene ninguna evaluación con este request_id y row",
        "en": "the service has no assessment with this request_id and row",
    },
    "outcome_rule_api_invalid": {"es": "rechazado por el servicio: {detail}", "en": "refused by the service: {detail}"},
    "csv_unreadable": {
        "es": "No se pudo leer el archivo como CSV. Compruebe el formato.",
        "en": "The file could not be read as CSV. Check its format.",
    },
    "csv_empty": {"es": "El archivo no contiene filas de pacientes.", "en": "The file contains no patient rows."},
    "validation_title": {"es": "Informe de validación", "en": "Validation report"},
    "rows_total": {"es": "Filas", "en": "Rows"},
    "rows_valid": {"es": "Filas válidas", "en": "Valid rows"},
    "rows_invalid": {"es": "Filas con errores", "en": "Rows with errors"},
    "missing_columns": {
        "es": "Faltan columnas obligatorias: {columns}. No se puede evaluar ninguna fila.",
        "en": "Required columns are missing: {columns}. No row can be scored.",
    },
    "duplicate_columns": {
        "es": "Hay más de una columna para {columns} (los nombres se comparan sin mayúsculas ni espacios): deje "
        "solo una. No se puede evaluar ninguna fila.",
        "en": "More than one column matches {columns} (names are compared ignoring case and spaces): keep only "
        "one. No row can be scored.",
    },
    "renamed_columns": {
        "es": "Columnas sin nombre o repetidas, renombradas en el resultado: {columns}",
        "en": "Unnamed or repeated columns, renamed in the output: {columns}",
    },
    "blank_header": {"es": "(sin nombre)", "en": "(no name)"},
    "unknown_columns": {
        "es": "Columnas que el modelo no usa (se conservan en el resultado): {columns}",
        "en": "Columns the model does not use (kept in the output): {columns}",
    },
    "all_rows_valid": {"es": "Todas las filas son válidas.", "en": "All rows are valid."},
    "row": {"es": "Fila", "en": "Row"},
    "problem": {"es": "Problema", "en": "Problem"},
    "row_numbering": {
        "es": "Las filas se cuentan desde el primer paciente (la cabecera no cuenta): en una hoja de cálculo, "
        "la fila 1 es la línea 2.",
        "en": "Rows are counted from the first patient (the header does not count): in a spreadsheet, row 1 is line 2.",
    },
    "rule_missing_column": {"es": "falta la columna", "en": "column missing"},
    "rule_required": {"es": "dato obligatorio vacío", "en": "required value is empty"},
    "rule_not_number": {"es": "no es un número", "en": "not a number"},
    "rule_out_of_range": {"es": "fuera del rango válido {detail}", "en": "outside the valid range {detail}"},
    "rule_not_integer": {"es": "debe ser un número entero", "en": "must be a whole number"},
    "rule_extra_fields": {
        "es": "la fila tiene más valores que columnas la cabecera (no se evalúa para no desplazar datos)",
        "en": "the row has more values than the header has columns (not scored, so no value is shifted)",
    },
    "rule_not_category": {"es": "valor no admitido (admitidos: {detail})", "en": "value not allowed ({detail})"},
    "rule_duplicate_column": {"es": "columna repetida", "en": "repeated column"},
    "score_button": {"es": "Evaluar {n} filas válidas", "en": "Score {n} valid rows"},
    "scoring_progress": {"es": "Evaluando… {done}/{total}", "en": "Scoring… {done}/{total}"},
    "scored_title": {"es": "Resultados", "en": "Results"},
    "scored_summary": {"es": "{n} de {total} filas evaluadas.", "en": "{n} of {total} rows scored."},
    "download_scored": {"es": "Descargar CSV evaluado", "en": "Download scored CSV"},
    # ---- model card ----
    "model_title": {"es": "Modelo", "en": "Model"},
    "served_now": {
        "es": "El servicio de predicción usa ahora **{name} versión {version}** (alias «{alias}»).",
        "en": "The prediction service is now serving **{name} version {version}** (alias '{alias}').",
    },
    "serving_now_short": {"es": "en servicio", "en": "serving"},
    "served_not_alias": {
        "es": "El servicio usa la versión {served}, pero el alias «{alias}» apunta a la versión {version}: "
        "el servicio la cargará en su próxima recarga.",
        "en": "The service uses version {served} but alias '{alias}' points to version {version}: the service "
        "will pick it up on its next reload.",
    },
    "served_other_registry": {
        "es": "La versión {version} que usa el servicio no es la versión {version} de este registro (otra "
        "ejecución de entrenamiento): el servicio y esta aplicación leen registros distintos. Avise al equipo "
        "técnico.",
        "en": "The version {version} the service uses is not version {version} of this registry (another training "
        "run): the service and this app read different registries. Tell the technical team.",
    },
    "versions_title": {"es": "Versiones registradas", "en": "Registered versions"},
    "version": {"es": "Versión", "en": "Version"},
    "aliases": {"es": "Alias", "en": "Aliases"},
    "serving_col": {"es": "En servicio", "en": "Serving"},
    "created": {"es": "Creada", "en": "Created"},
    "errors_col": {"es": "Errores", "en": "Errors"},
    "gate": {"es": "Control de calidad", "en": "Quality gate"},
    "gate_passed": {"es": "superado", "en": "passed"},
    "gate_failed": {"es": "no superado", "en": "failed"},
    "gate_reasons": {"es": "Motivos", "en": "Reasons"},
    # Gate reasons, from the codes pipeline/registry.py records with each version.
    "gate_reason_below_floor": {
        "es": "ROC AUC {auc} por debajo del mínimo {floor}",
        "en": "ROC AUC {auc} is below the floor {floor}",
    },
    "gate_reason_no_served": {"es": "ninguna versión tenía el alias «{alias}»", "en": "no current {alias}"},
    "gate_reason_served_unscorable": {
        "es": "la versión {version} («{alias}») no puede evaluarse con estos datos de prueba; promoción manual",
        "en": "{alias} v{version} cannot be scored on this test data; promote by hand",
    },
    "gate_reason_worse_than_served": {
        "es": "ROC AUC {auc} peor que la de la versión {version} («{alias}», {served_auc}) en más de {max_drop}",
        "en": "ROC AUC {auc} is worse than {alias} v{version} ({served_auc}) by more than {max_drop}",
    },
    "gate_reason_served_score": {
        "es": "la versión {version} («{alias}») obtiene ROC AUC {served_auc} con los mismos datos",
        "en": "{alias} v{version} scores ROC AUC {served_auc} on the same data",
    },
    "select_version": {"es": "Ficha de la versión", "en": "Card for version"},
    "card_title": {"es": "Ficha del modelo {name} · v{version}", "en": "Model card {name} · v{version}"},
    "intended_use_title": {"es": "Uso previsto", "en": "Intended use"},
    "intended_use_text": {
        "es": "Ayuda para el **cribado**: estima la probabilidad de diabetes tipo 2 no diagnosticada en la "
        "población descrita más abajo, para decidir a quién hacer una prueba diagnóstica. **No es un "
        "diagnóstico** ni sustituye el juicio clínico.",
        "en": "A **screening** aid: it estimates the probability of undiagnosed type 2 diabetes in the population "
        "described below, to decide who should have a diagnostic test. **It is not a diagnosis** and does not "
        "replace clinical judgement.",
    },
    "population_title": {"es": "Población y datos", "en": "Population and data"},
    "population_text": {
        "es": "Conjunto de datos `{dataset}`: {n_train} pacientes para entrenar y {n_test} reservados para la "
        "evaluación final.",
        "en": "Dataset `{dataset}`: {n_train} patients for training and {n_test} held out for the final evaluation.",
    },
    "registry_text_english": {
        "es": "Texto tal como figura en el registro (en inglés).",
        "en": "Text as recorded in the registry.",
    },
    "model_details": {
        "es": "Familia {family}, calibración {calibration} · datos sha256 {checksum}… · código {commit}…",
        "en": "Family {family}, calibration {calibration} · data sha256 {checksum}… · code {commit}…",
    },
    "calibration_none": {"es": "sin recalibrar", "en": "no recalibration"},
    "calibration_sigmoid": {"es": "Platt (sigmoide)", "en": "Platt (sigmoid)"},
    "metrics_title": {
        "es": "Resultados en datos reservados ({n} pacientes)",
        "en": "Held-out results ({n} patients)",
    },
    "this_model": {"es": "Este modelo (v{version})", "en": "This model (v{version})"},
    "baseline_logreg_recomputed": {
        "es": "Regresión logística (recalculada)",
        "en": "Logistic regression (recomputed)",
    },
    "baseline_glucose_recomputed": {"es": "Solo glucosa (recalculada)", "en": "Glucose alone (recomputed)"},
    "published": {"es": "Publicado: {source}", "en": "Published: {source}"},
    "sensitivity": {"es": "Sensibilidad", "en": "Sensitivity"},
    "specificity": {"es": "Especificidad", "en": "Specificity"},
    "calibration_slope": {"es": "Pendiente de calibración", "en": "Calibration slope"},
    "calibration_intercept": {"es": "Intercepto de calibración", "en": "Calibration intercept"},
    "intervals_title": {"es": "Incertidumbre (intervalos del 95 %)", "en": "Uncertainty (95 % intervals)"},
    "metric": {"es": "Métrica", "en": "Metric"},
    "value": {"es": "Valor", "en": "Value"},
    "interval_95": {"es": "Intervalo del 95 %", "en": "95 % interval"},
    "intervals_help": {
        "es": "Intervalos bootstrap (1000 remuestreos de los pacientes de prueba): con pocos cientos de pacientes, "
        "diferencias dentro del intervalo no son concluyentes.",
        "en": "Bootstrap intervals (1000 resamples of the test patients): with a few hundred patients, differences "
        "inside the interval are not conclusive.",
    },
    "subgroups_title": {"es": "Rendimiento por subgrupo", "en": "Performance by subgroup"},
    "subgroup": {"es": "Subgrupo", "en": "Subgroup"},
    "cases": {"es": "Casos", "en": "Cases"},
    "flag": {"es": "Aviso", "en": "Flag"},
    "flag_below": {"es": "Por debajo del global", "en": "Below overall"},
    "too_few": {"es": "Muy pocos casos", "en": "Too few cases"},
    "subgroups_help": {
        "es": "Se marca un subgrupo cuando todo su intervalo del 95 % del AUC queda por debajo del AUC global. "
        "Los subgrupos pequeños tienen intervalos anchos: no estar marcado no prueba un rendimiento igual.",
        "en": "A subgroup is flagged when its whole 95 % AUC interval lies below the overall AUC. Small subgroups "
        "have wide intervals: not being flagged does not prove equal performance.",
    },
    "metrics_help": {
        "es": "ROC AUC: discriminación (más alto es mejor). Brier: error de las probabilidades (más bajo es "
        "mejor). Errores: clasificaciones erróneas con el umbral del modelo. Las referencias recalculadas usan "
        "la misma partición; las publicadas vienen de la literatura.",
        "en": "ROC AUC: discrimination (higher is better). Brier: error of the probabilities (lower is better). "
        "Errors: misclassifications at the model's threshold. Recomputed baselines use the same split; "
        "published ones come from the literature.",
    },
    "published_unavailable": {
        "es": "Las referencias publicadas no están disponibles para esta versión.",
        "en": "Published baselines are not available for this version.",
    },
    "plots_title": {"es": "Curva ROC, calibración y análisis de decisión",
                    "en": "ROC curve, calibration and decision analysis"},  # fmt: skip
    "roc_x": {"es": "1 − especificidad (falsos positivos)", "en": "1 − specificity (false positive rate)"},
    "roc_y": {"es": "Sensibilidad", "en": "Sensitivity"},
    "calib_x": {"es": "Probabilidad predicha", "en": "Predicted probability"},
    "calib_y": {"es": "Proporción observada con diabetes", "en": "Observed fraction with diabetes"},
    "dc_x": {"es": "Umbral de probabilidad para actuar", "en": "Threshold probability for acting"},
    "dc_y": {"es": "Beneficio neto", "en": "Net benefit"},
    "dc_model": {"es": "Según el modelo", "en": "By the model"},
    "dc_treat_all": {"es": "Estudiar a todos", "en": "Test everyone"},
    "dc_treat_none": {"es": "No estudiar a nadie", "en": "Test no one"},
    "dc_caption": {
        "es": "Curva de decisión en datos reservados: el beneficio neto de estudiar a quien supere cada umbral, "
        "frente a estudiar a todos o a nadie (Vickers y Elkin, 2006). El modelo aporta donde su curva queda por "
        "encima de las otras dos.",
        "en": "Decision curve on held-out data: the net benefit of testing patients above each threshold, against "
        "testing everyone or no one (Vickers and Elkin, 2006). The model helps where its curve lies above both.",
    },
    "roc_caption": {"es": "Curva ROC en datos reservados", "en": "ROC curve on held-out data"},
    "calib_caption": {"es": "Calibración en datos reservados", "en": "Calibration on held-out data"},
    "plot_missing": {
        "es": "La ejecución no contiene el gráfico `{path}`.",
        "en": "The run has no `{path}` plot.",
    },
    "inputs_title": {"es": "Datos de entrada", "en": "Inputs"},
    "bands_text": {
        "es": "Niveles de riesgo: {bands}. Umbral de decisión: {threshold}.",
        "en": "Risk levels: {bands}. Decision threshold: {threshold}.",
    },
    "limits_title": {"es": "Limitaciones", "en": "Limitations"},
    "limits_text": {
        "es": "- Validado solo en la población descrita arriba; en otras poblaciones no está validado y la "
        "calibración puede no mantenerse.\n"
        "- Todas las cifras proceden de un único conjunto de datos reservado: con pocos pacientes, su "
        "incertidumbre es amplia.\n"
        "- Los datos opcionales no medidos se imputan con la mediana del entrenamiento, lo que añade "
        "incertidumbre.",
        "en": "- Validated only in the population described above; in other populations it is not validated and "
        "calibration may not hold.\n"
        "- Every figure comes from a single held-out set: with few patients, its uncertainty is wide.\n"
        "- Optional inputs that were not measured are imputed with the training median, which adds "
        "uncertainty.",
    },
    "full_card": {
        "es": "Ficha completa registrada (en inglés)",
        "en": "Full registered model card",
    },
    # ---- monitoring page ----
    "nav_monitoring": {"es": "Monitorización", "en": "Monitoring"},
    "mon_title": {"es": "Monitorización del modelo", "en": "Model monitoring"},
    "mon_intro": {
        "es": "Lo que el modelo ha respondido, según el registro de predicciones: volumen, latencia, niveles de "
        "riesgo, deriva de los datos respecto al entrenamiento y rendimiento frente a diagnósticos confirmados.",
        "en": "What the model has answered, from the prediction log: volume, latency, risk levels, data drift "
        "against the training data and performance against confirmed diagnoses.",
    },
    "mon_db_down": {
        "es": "No se puede leer el registro de predicciones ({url}). Avise al equipo técnico.",
        "en": "The prediction log ({url}) cannot be read. Tell the technical team.",
    },
    "mon_empty": {
        "es": "Todavía no hay predicciones registradas.",
        "en": "No predictions have been logged yet.",
    },
    "mon_version": {"es": "Versión del modelo", "en": "Model version"},
    "mon_dates": {"es": "Periodo (UTC)", "en": "Period (UTC)"},
    "mon_pick_range": {
        "es": "Elija la fecha de inicio y la de fin.",
        "en": "Pick a start and an end date.",
    },
    "mon_no_rows": {
        "es": "No hay predicciones de esta versión en el periodo elegido.",
        "en": "No predictions of this version in the chosen period.",
    },
    "mon_predictions": {"es": "Predicciones", "en": "Predictions"},
    "mon_latency_p50_p95": {"es": "Latencia p50 / p95", "en": "Latency p50 / p95"},
    "mon_latency_mean": {"es": "Latencia media", "en": "Mean latency"},
    "mon_outcomes": {"es": "Diagnósticos confirmados", "en": "Confirmed outcomes"},
    "mon_volume": {"es": "Predicciones por día", "en": "Predictions per day"},
    "mon_latency": {"es": "Latencia media por día", "en": "Mean latency per day"},
    "mon_latency_ms": {"es": "Latencia (ms)", "en": "Latency (ms)"},
    "mon_risk_mix": {"es": "Niveles de riesgo", "en": "Risk levels"},
    "mon_share_now": {"es": "Periodo elegido", "en": "Chosen period"},
    "mon_share_ref": {"es": "Entrenamiento", "en": "Training"},
    "mon_drift": {"es": "Deriva de los datos de entrada", "en": "Input data drift"},
    "mon_no_reference": {
        "es": "Esta versión se entrenó sin distribuciones de referencia: vuelva a entrenarla para ver la deriva.",
        "en": "This version was trained without reference distributions: retrain it to see drift.",
    },
    "mon_drift_help": {
        "es": "Índice de estabilidad poblacional (PSI) de cada variable frente a los datos de entrenamiento: "
        "aviso desde {warn}, alerta desde {alert}. Gris: entrenamiento; azul: periodo elegido.",
        "en": "Population stability index (PSI) of each feature against the training data: warning from "
        "{warn}, alert from {alert}. Grey: training; blue: chosen period.",
    },
    "mon_drift_sample": {
        "es": "Deriva estimada sobre una muestra aleatoria de {n} de las {total} predicciones.",
        "en": "Drift estimated on a random sample of {n} of the {total} predictions.",
    },
    "mon_feature": {"es": "Variable", "en": "Feature"},
    "mon_status": {"es": "Estado", "en": "Status"},
    "mon_missing": {"es": "Valores ausentes (entrenamiento → ahora)", "en": "Missing values (training → now)"},
    "mon_level_ok": {"es": "estable", "en": "stable"},
    "mon_level_warn": {"es": "aviso", "en": "warning"},
    "mon_level_alert": {"es": "alerta", "en": "alert"},
    "mon_reference": {"es": "Entrenamiento", "en": "Training"},
    "mon_current": {"es": "Periodo elegido", "en": "Chosen period"},
    "mon_performance": {
        "es": "Rendimiento frente a diagnósticos confirmados",
        "en": "Performance on confirmed outcomes",
    },
    "mon_no_outcomes": {
        "es": "Aún no hay diagnósticos confirmados para este periodo (se envían a POST /feedback).",
        "en": "No confirmed outcomes for this period yet (they are sent to POST /feedback).",
    },
    "mon_outcomes_n": {
        "es": "Basado en {n} diagnósticos confirmados ({positives} con diabetes). Intervalos de confianza al 95 %.",
        "en": "Based on {n} confirmed outcomes ({positives} with diabetes). 95 % confidence intervals.",
    },
    "mon_metric": {"es": "Métrica", "en": "Metric"},
    "mon_value": {"es": "Valor", "en": "Value"},
    "mon_ci": {"es": "IC 95 %", "en": "95 % CI"},
    "mon_metric_auc": {"es": "AUC ROC", "en": "ROC AUC"},
    "mon_metric_brier": {"es": "Brier", "en": "Brier"},
    "mon_metric_calibration_slope": {"es": "Pendiente de calibración", "en": "Calibration slope"},
    "mon_metric_sensitivity": {"es": "Sensibilidad", "en": "Sensitivity"},
    "mon_metric_specificity": {"es": "Especificidad", "en": "Specificity"},
}

# Units as the feature spec writes them (plain strings, not localised there) -> how to show them.
UNITS: dict[str, dict[str, str]] = {
    "años": {"es": "años", "en": "years"},
    "years": {"es": "años", "en": "years"},
}


def unit(text: str, lang: str) -> str:
    return UNITS.get(text, {}).get(lang, text)


def tr(key: str, lang: str, **kwargs: object) -> str:
    """``key`` in ``lang``; an unknown key shows itself (visible in review) rather than crashing a page."""
    entry = STRINGS.get(key)
    if entry is None:
        return key
    text = entry.get(lang) or entry[DEFAULT_LANG]
    return text.format(**kwargs) if kwargs else text


def calibration_name(method: str, lang: str) -> str:
    """A registered calibration code (none, sigmoid) in words; an unknown code is shown as recorded."""
    key = f"calibration_{method}"
    return tr(key, lang) if key in STRINGS else method


def current_lang() -> str:
    lang = st.session_state.get("lang", DEFAULT_LANG)
    return lang if lang in LANGS else DEFAULT_LANG


def t(key: str, **kwargs: object) -> str:
    return tr(key, current_lang(), **kwargs)


def language_selector() -> None:
    """Sidebar selector; ``?lang=en`` in the URL picks the starting language (handy for links and tests)."""
    if "lang" not in st.session_state:
        wanted = st.query_params.get("lang", DEFAULT_LANG)
        st.session_state["lang"] = wanted if wanted in LANGS else DEFAULT_LANG
    st.sidebar.selectbox(t("language"), LANGS, format_func=LANG_NAMES.__getitem__, key="lang")
