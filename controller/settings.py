"""Typed settings: a TOML file plus ILLUMINATE_* environment variables. Fails fast.

Environment variables override the file; nested keys use a double underscore, for
example ILLUMINATE_BROKER__URL=mqtt://127.0.0.1:1883 or ILLUMINATE_DATABASE__URL=...
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from controller.campaigns import EVALUATION_S
from devices.connection import BrokerAddress
from devices.protocol import DEFAULT_ROOT, Topics
from schedules.cost import MAX_OCCURRENCES, MAX_SITE_OCCURRENCES, Limits


class SettingsError(ValueError):
    """Settings that cannot work; the message says which key and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BrokerSettings(_Section):
    url: str | None = Field(
        default=None,
        description="mqtt://host:port or mqtts://host:port; unset starts the embedded broker",
    )
    username: str = "illuminate-controller"
    password: SecretStr | None = None
    client_id: str = "illuminate-controller"
    topic_root: str = DEFAULT_ROOT
    ca_file: Path | None = None
    embedded_host: str = "127.0.0.1"
    embedded_port: int = Field(default=1883, ge=0, le=65535)
    device_url: str | None = Field(
        default=None,
        description="the broker address given to devices at registration "
        "(mqtt://host:port or mqtts://host:port); unset: url, or the embedded broker's",
    )
    dynsec_admin_username: str | None = Field(
        default=None,
        description="a Mosquitto dynamic-security admin: with it, registering, rotating "
        "and decommissioning a device changes its broker account too",
    )
    dynsec_admin_password: SecretStr | None = None

    @field_validator("url", "device_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value:
            BrokerAddress.parse(value)
        return value or None

    @model_validator(mode="after")
    def _dynsec(self) -> BrokerSettings:
        if bool(self.dynsec_admin_username) != bool(self.dynsec_admin_password):
            raise ValueError(
                "set dynsec_admin_username and dynsec_admin_password together, or neither"
            )
        if self.dynsec_admin_username and self.url is None:
            raise ValueError(
                "dynsec_admin_username needs broker.url: the embedded broker has no "
                "dynamic-security plugin"
            )
        return self

    def dynsec_admin(self) -> BrokerAddress | None:
        """The broker address with the dynsec admin's credentials, or None when unset."""
        if self.url is None or not self.dynsec_admin_username or not self.dynsec_admin_password:
            return None
        address = BrokerAddress.parse(self.url)
        return BrokerAddress(
            address.host,
            address.port,
            address.tls,
            self.dynsec_admin_username,
            self.dynsec_admin_password.get_secret_value(),
        )

    def device_endpoint(self, embedded_url: str | None = None) -> BrokerAddress:
        """Where devices connect: device_url, else url, else the embedded broker's."""
        url = self.device_url or self.url or embedded_url
        if url is None:
            url = f"mqtt://{self.embedded_host}:{self.embedded_port}"
        address = BrokerAddress.parse(url)
        return BrokerAddress(address.host, address.port, address.tls)

    @field_validator("topic_root")
    @classmethod
    def _root(cls, value: str) -> str:
        Topics(value)
        return value

    def address(self) -> BrokerAddress:
        if self.url is None:
            raise SettingsError("broker.url is not set")
        address = BrokerAddress.parse(self.url)
        password = self.password.get_secret_value() if self.password else None
        return address.with_credentials(address.username or self.username, password)


class BrokerHookSettings(_Section):
    """The HTTP hook a delegating broker (EMQX) asks; see controller/web/broker_hook.py."""

    token: SecretStr | None = Field(
        default=None,
        description="bearer token the broker sends to /api/v1/broker/authn and /authz; "
        "unset turns the hook off",
    )

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("the broker hook token must be at least 16 characters")
        return value


class DatabaseSettings(_Section):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db; "
        "unset uses SQLite in the data folder",
    )


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)


class ControlSettings(_Section):
    grace_s: float = Field(default=30, gt=0, le=3600, description="apply report deadline")
    horizon_h: float = Field(default=48, gt=0, le=24 * 14, description="how far plans reach")
    tick_s: float = Field(default=30, gt=0, le=3600, description="safety reconcile period")
    publish_timeout_s: float = Field(
        default=30, gt=0, le=300, description="a publish not acknowledged by then is sent again"
    )
    upcoming_h: float = Field(default=24, gt=0, description="how far ahead 'scheduled' looks")
    clock_follow_step_s: float = Field(
        default=900,
        ge=0,
        description="how long a step of the system clock must hold before it is followed",
    )
    clock_tolerance_ms: int = Field(
        default=1000,
        ge=1,
        le=3_600_000,
        description="a device clock off by more than this is flagged and applies by ours",
    )
    clock_beacon_s: float = Field(
        default=30, ge=1, le=3600, description="how often the controller publishes its time"
    )


class HealthSettings(_Section):
    """What /readyz holds the controller to, and how the public page bridges a restart
    (docs/operations.md)."""

    database_timeout_s: float = Field(
        default=2.0, gt=0, le=60, description="the database must answer the probe within this"
    )
    backlog_max: int = Field(
        default=10_000, ge=1, description="device messages received and not stored yet, at most"
    )
    backlog_age_s: float = Field(
        default=30.0, gt=0, description="how long the oldest unstored device message may wait"
    )
    public_hold_s: float = Field(
        default=30.0,
        ge=0,
        description="after a start, how long the last-known public status is served while "
        "the broker link comes up and its reports are taken in",
    )
    public_max_age_s: float = Field(
        default=60.0,
        ge=1,
        description="the public status is rendered again at least this often",
    )


class PublicSettings(_Section):
    """The public page's map, its embeddable widget and its shared links
    (docs/public-page.md)."""

    map_tiles: str = Field(
        default="https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        description="the map's tile address, with {z}, {x} and {y} (and {s} for a "
        "subdomain); empty: the map shows no tiles, only the monuments",
    )
    map_attribution: str = Field(
        default="© OpenStreetMap contributors",
        description="the tiles' credit, shown on the map as text",
    )
    embed_ancestors: tuple[str, ...] = Field(
        default=("*",),
        description="the pages that may frame the widget at /embed/{city}: '*' for any, "
        "or origins such as https://www.brussels.be",
    )
    base_url: str | None = Field(
        default=None,
        description="the public address of the page (https://illuminate.example.org), "
        "for the absolute links in shared cards; unset: the address a request came to",
    )

    @field_validator("map_tiles")
    @classmethod
    def _tiles(cls, value: str) -> str:
        from controller.web.headers import tile_source

        tile_source(value)  # raises ValueError with the reason
        return value

    @field_validator("embed_ancestors")
    @classmethod
    def _ancestors(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from controller.web.headers import check_ancestor

        for item in value:
            check_ancestor(item)
        return value

    @field_validator("base_url")
    @classmethod
    def _base(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d+)?(/[^\s?#]*)?", value):
            raise ValueError(f"base_url must be http(s)://host[:port][/path], not {value!r}")
        return value.rstrip("/")


class LimitsSettings(_Section):
    """What one input may cost. A campaign over these is refused, naming the window."""

    max_occurrences: int = Field(
        default=MAX_OCCURRENCES,
        ge=1,
        le=10_000_000,
        description="occurrences of one campaign in the 400 days checked",
    )
    max_site_occurrences: int = Field(
        default=MAX_SITE_OCCURRENCES,
        ge=1,
        le=1_000_000_000,
        description="sites times occurrences of one campaign in the 400 days checked",
    )
    evaluation_s: float = Field(
        default=EVALUATION_S,
        gt=0,
        le=60,
        description="how long checking one campaign sent to the API may take",
    )

    def campaign_limits(self) -> Limits:
        return Limits(self.max_occurrences, self.max_site_occurrences)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ILLUMINATE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: Path = Path("data")
    broker: BrokerSettings = BrokerSettings()
    broker_hook: BrokerHookSettings = BrokerHookSettings()
    database: DatabaseSettings = DatabaseSettings()
    http: HttpSettings = HttpSettings()
    control: ControlSettings = ControlSettings()
    limits: LimitsSettings = LimitsSettings()
    health: HealthSettings = HealthSettings()
    public: PublicSettings = PublicSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{self.data_dir / 'illuminate.sqlite'}"

    @property
    def topics(self) -> Topics:
        return Topics(self.broker.topic_root)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read the file (if any) and the environment; raise SettingsError with every fault."""
    source = str(config_file) if config_file else "environment"
    if config_file is not None:
        if not config_file.is_file():
            raise SettingsError(f"{config_file}: no such settings file")
        try:
            tomllib.loads(config_file.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{config_file}: not valid TOML: {exc}") from None

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=config_file)

    try:
        loaded = _FromFile(**overrides)
    except ValidationError as exc:
        problems = [
            f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        ]
        raise SettingsError(f"invalid settings ({source}):\n" + "\n".join(problems)) from None
    return loaded
