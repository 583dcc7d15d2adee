"""Settings every service shares, defined once: where the registry lives and which model it serves.

A service subclasses :class:`CommonSettings` and adds its own fields; values come from the environment
(empty values count as unset), a bad value stops the service at start-up with :class:`SettingsError` naming
the variable and the rule, and every field documents itself (``Field(description=...)``), so
:func:`settings_table` renders the table a README shows.

| variable                  | default          | meaning                                                            |
|---------------------------|------------------|--------------------------------------------------------------------|
| MODEL_NAME                | diabetes-t2      | registered model (trained, served, shown)                          |
| MODEL_ALIAS               | champion         | alias that names the served version                                |
| MLFLOW_TRACKING_URI       |                  | tracking/registry URI (a server or a database); wins over the rest |
| MLFLOW_TRACKING_HOSTPORT  |                  | host:port of the MLflow server (Render's fromService hostport)     |
| DATABASE_URL              |                  | Postgres registry used directly                                    |

Tracking URI order: ``MLFLOW_TRACKING_URI``, then ``http://$MLFLOW_TRACKING_HOSTPORT``, then ``DATABASE_URL``,
then the project's SQLite file ``mlflow.db`` (so a newcomer needs nothing). Postgres URLs are rewritten for
psycopg2 (``common.backend.normalize_database_url``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, ClassVar, Self

from pydantic import Field, ValidationError, computed_field
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from common.backend import tracking_uri as _resolve_tracking_uri

DEFAULT_MODEL_NAME = "diabetes-t2"
DEFAULT_MODEL_ALIAS = "champion"
# The monitor job's runs (monitor/job.py); its MLflow user may write there only (deploy/users.py).
MONITORING_EXPERIMENT = "diabetes-t2-monitoring"
# A registered model alias: MLflow accepts letters, digits, '_' and '-' (and refuses "latest" / "v<n>").
ALIAS_PATTERN = r"^[A-Za-z0-9_-]{1,255}$"

# The environment a `from_env(env)` call reads instead of os.environ (tests, and callers holding a mapping).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("settings_environ", default=None)


class SettingsError(ValueError):
    """A setting with an unusable value; the message names the variable and the rule."""


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(dict(self._environ), self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class CommonSettings(BaseSettings):
    """Base class of each service's settings. Fields use ``validation_alias`` = the environment variable."""

    model_config = SettingsConfigDict(
        case_sensitive=True,  # variables are upper case; `port` is not `PORT`
        env_ignore_empty=True,  # VAR= (as Render writes an unset value) means "use the default"
        extra="ignore",
        frozen=True,
        protected_namespaces=(),
        str_strip_whitespace=True,
    )

    model_name: str = Field(
        DEFAULT_MODEL_NAME, validation_alias="MODEL_NAME", min_length=1, description="registered model"
    )
    model_alias: str = Field(
        DEFAULT_MODEL_ALIAS,
        validation_alias="MODEL_ALIAS",
        pattern=ALIAS_PATTERN,
        description="alias that names the served version",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        validation_alias="MLFLOW_TRACKING_URI",
        repr=False,
        description="tracking/registry URI; wins over the rest",
    )
    mlflow_tracking_hostport: str | None = Field(
        None,
        validation_alias="MLFLOW_TRACKING_HOSTPORT",
        pattern=r"^[^\s/:]+:\d{1,5}$",
        description="host:port of the MLflow server (Render's fromService hostport)",
    )
    database_url: str | None = Field(
        None, validation_alias="DATABASE_URL", repr=False, description="Postgres registry used directly"
    )

    # MLflow's HTTP client retries 7 times with exponential backoff by default: minutes of a frozen start or
    # page when the tracking server is down. Subclasses tune the timeout.
    mlflow_http_timeout_s: ClassVar[int] = 10

    @computed_field(repr=False)  # type: ignore[prop-decorator]
    @property
    def tracking_uri(self) -> str:
        """The one place the tracking URI is resolved (order in the module docstring)."""
        env = {
            "MLFLOW_TRACKING_URI": self.mlflow_tracking_uri or "",
            "MLFLOW_TRACKING_HOSTPORT": self.mlflow_tracking_hostport or "",
            "DATABASE_URL": self.database_url or "",
        }
        return _resolve_tracking_uri(env)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only keyword arguments and the environment: no .env or secrets files that could silently win.
        environ = _ENVIRON.get()
        return (init_settings, env_settings if environ is None else _MappingEnvSource(settings_cls, environ))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        """Settings from ``env`` (default: os.environ); raises SettingsError naming every bad variable."""
        token = _ENVIRON.set(env)
        try:
            return cls()
        except ValidationError as exc:
            raise SettingsError(describe_errors(exc)) from None
        finally:
            _ENVIRON.reset(token)

    def apply_mlflow_defaults(self) -> None:
        """Bound MLflow's HTTP retries so an unreachable tracking server cannot stall a service for minutes.

        Only defaults: an operator's explicit MLFLOW_HTTP_* values win. Artifact progress bars are off: in a
        service's log they are noise, and their rates ("13086.75it/s") read like numbers from a request.
        """
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(self.mlflow_http_timeout_s))


def describe_errors(exc: ValidationError) -> str:
    """One line per bad variable: the variable's name and pydantic's rule, never the rejected value (it may
    be a secret such as a database URL)."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        var = ".".join(str(p) for p in err["loc"]) or "settings"
        lines.append(f"{var}: {err['msg']}")
    return "; ".join(lines)


def settings_table(cls: type[BaseSettings]) -> str:
    """A markdown table of a settings class: variable, default, meaning (for docs and README)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in cls.model_fields.items():
        var = field.validation_alias if isinstance(field.validation_alias, str) else name.upper()
        default: Any = field.get_default(call_default_factory=True)
        shown = "" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
        rows.append(f"| {var} | {shown} | {field.description or ''} |")
    return "\n".join(rows)
