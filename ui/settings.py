"""Every setting of the app, typed and read from the environment in one place (pydantic-settings).

The registry location and the model name/alias come from :class:`common.settings.CommonSettings`, shared with
the other services; this class adds the app's own. A bad value is an error naming the variable and the rule
(:class:`SettingsError`), never a silent fallback to a default: ``python -m ui.settings`` checks the
environment before the server starts (exit status 1), and the app shows the same error instead of any page.

Read on each script run (cheap), so a test that points the app elsewhere sees its values; the one exception
is ``UI_CACHE_TTL_S``, which the cache decorators of ui/api.py and ui/registry.py take once, at import.

| variable              | default                 | meaning                                                        |
|-----------------------|-------------------------|----------------------------------------------------------------|
| API_BASE_URL          |                         | the serving API's URL; wins over API_HOSTPORT                  |
| API_HOSTPORT          |                         | host:port of the API (Render's fromService hostport)           |
|                       | http://127.0.0.1:8002   | (neither set: the local stack)                                 |
| UI_API_TIMEOUT_S      | 30                      | read timeout of a /predict call, seconds                       |
| UI_BATCH_CHUNK_ROWS   | 200                     | rows per /predict call in batch scoring                        |
| UI_CACHE_TTL_S        | 60                      | how long registry reads and /model/info are cached, seconds    |
| UI_AUTH               | (see ui/login.py)       | builtin, oidc or off (off only when bound to loopback)         |
| UI_SESSION_TIMEOUT_MIN| 30                      | idle minutes before a clinician is logged out                  |
| UI_LOGIN_MAX_FAILURES | 5                       | failed logins in a row before the account is locked            |
| UI_LOCKOUT_MIN        | 15                      | minutes a locked account waits                                 |
| APP_DATABASE_URL      | DATABASE_URL, app.db    | the app's own database (users), see ui/users.py                |
| (CommonSettings)      |                         | MODEL_NAME, MODEL_ALIAS, MLFLOW_TRACKING_URI, ... (common/)    |
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

# `streamlit run ui/app.py` only puts ui/ on sys.path; the project root is needed for `common` and `ui.*`.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from typing import Literal  # noqa: E402

from pydantic import Field  # noqa: E402 - needs the sys.path line above

from common.settings import CommonSettings, SettingsError, settings_table  # noqa: E402

DEFAULT_API_BASE_URL = "http://127.0.0.1:8002"
# What MLflow's HTTP client reads and CommonSettings.apply_mlflow_defaults sets (only when unset).
MLFLOW_HTTP_VARS = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
)

__all__ = ["Settings", "SettingsError", "load"]


class Settings(CommonSettings):
    api_base_url_env: str | None = Field(
        None,
        validation_alias="API_BASE_URL",
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="the serving API's URL; wins over API_HOSTPORT",
    )
    api_hostport: str | None = Field(
        None,
        validation_alias="API_HOSTPORT",
        pattern=r"^[^\s/:]+:\d{1,5}$",
        description="host:port of the API (Render's fromService hostport)",
    )
    api_timeout_s: float = Field(
        30.0, validation_alias="UI_API_TIMEOUT_S", gt=0, le=600, description="read timeout of a /predict call, s"
    )
    batch_chunk_rows: int = Field(
        200,
        validation_alias="UI_BATCH_CHUNK_ROWS",
        ge=1,
        le=10_000,
        description="rows per /predict call in batch scoring (request size, progress bar steps)",
    )
    cache_ttl_s: int = Field(
        60,
        validation_alias="UI_CACHE_TTL_S",
        ge=1,
        le=86_400,
        description="registry reads and /model/info cached this long; a new champion shows up within it, s",
    )

    auth: Literal["builtin", "oidc", "off"] | None = Field(
        None,
        validation_alias="UI_AUTH",
        description="clinicians' login: builtin (users in the app's database), oidc (st.login), off (loopback "
        "only); unset: oidc when .streamlit/secrets.toml has [auth], else builtin, off on loopback",
    )
    session_timeout_min: int = Field(
        30, validation_alias="UI_SESSION_TIMEOUT_MIN", ge=1, le=24 * 60, description="idle minutes before logout"
    )
    login_max_failures: int = Field(
        5, validation_alias="UI_LOGIN_MAX_FAILURES", ge=1, le=100, description="failed logins in a row → lockout"
    )
    lockout_min: int = Field(
        15, validation_alias="UI_LOCKOUT_MIN", ge=1, le=24 * 60, description="minutes a locked account waits"
    )

    @property
    def api_base_url(self) -> str:
        if self.api_base_url_env:
            return self.api_base_url_env.rstrip("/")
        if self.api_hostport:  # Render's fromService hostport: env vars cannot be concatenated there
            return f"http://{self.api_hostport}"
        return DEFAULT_API_BASE_URL


def load(env: Mapping[str, str] | None = None) -> Settings:
    """The app's settings from ``env`` (default: os.environ); raises SettingsError naming every bad variable."""
    return Settings.from_env(env)


def main() -> int:
    """`python -m ui.settings`: check the environment before `streamlit run` (exit 1 with the reasons)."""
    try:
        load()
    except SettingsError as exc:
        print(f"invalid UI settings: {exc}", file=sys.stderr)
        return 1
    print(settings_table(Settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
