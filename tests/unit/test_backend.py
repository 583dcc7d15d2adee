from common.backend import normalize_database_url, redact, tracking_uri


def test_render_urls_are_normalised_for_psycopg2() -> None:
    assert normalize_database_url("postgres://u:p@h:5432/db") == "postgresql+psycopg2://u:p@h:5432/db"
    assert normalize_database_url("postgresql://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert normalize_database_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert normalize_database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_tracking_uri_order() -> None:
    db = {"DATABASE_URL": "postgres://u:secret@h/db"}
    assert tracking_uri(db) == "postgresql+psycopg2://u:secret@h/db"
    assert tracking_uri({**db, "MLFLOW_TRACKING_HOSTPORT": "mlflow:5000"}) == "http://mlflow:5000"
    assert tracking_uri({**db, "MLFLOW_TRACKING_URI": "http://x:1"}) == "http://x:1"
    assert tracking_uri({}).startswith("sqlite:///") and tracking_uri({}).endswith("/mlflow.db")


def test_redact_hides_password() -> None:
    assert redact("postgresql+psycopg2://u:secret@h/db") == "postgresql+psycopg2://u:***@h/db"
    assert "secret" not in redact("postgres://u:secret@h:5432/db")
