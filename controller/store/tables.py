"""Database tables (SQLAlchemy 2). Instants are stored in UTC.

Schema changes go through Alembic migrations in `controller/store/migrations`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("refusing to store a naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON}


class CityRow(Base):
    __tablename__ = "cities"
    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    name: Mapped[dict[str, Any]] = mapped_column(JSON)
    timezone: Mapped[str] = mapped_column(String(64))


class SiteRow(Base):
    __tablename__ = "sites"
    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    city_id: Mapped[str] = mapped_column(ForeignKey("cities.id"), index=True)
    name: Mapped[dict[str, Any]] = mapped_column(JSON)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    photo: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """The site's picture, `{"src", "alt": {lang: text}}` (schedules.model.Photo)."""
    removed_at: Mapped[datetime | None] = mapped_column(default=None)
    """Set when the site is deleted: it leaves the catalog, its row stays for history."""


class DeviceRow(Base):
    """A lighting controller at a site. Its id is also its MQTT username."""

    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32), default="native")
    """The adapter that speaks to it (`native`: our agent)."""
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """The adapter's settings for this device."""
    secret_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[datetime]
    credentials_at: Mapped[datetime | None] = mapped_column(default=None)
    """When its password was last replaced (None: the one issued at registration)."""
    decommissioned_at: Mapped[datetime | None] = mapped_column(default=None)
    """Set when it is decommissioned: its secret is dropped, its row and history stay."""
    online: Mapped[bool | None] = mapped_column(Boolean, default=None)
    status_at: Mapped[datetime | None] = mapped_column(default=None)
    firmware: Mapped[str | None] = mapped_column(String(100), default=None)
    reported_state: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    reported_at: Mapped[datetime | None] = mapped_column(default=None)
    applied_version: Mapped[int | None] = mapped_column(Integer, default=None)
    applied_step_at: Mapped[datetime | None] = mapped_column(default=None)
    applied_state: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    applied_at: Mapped[datetime | None] = mapped_column(default=None)
    version_floor: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """The highest plan version the device says it has: the next version must exceed it
    (after a database restore the device may hold versions this database never issued)."""
    confirmed_by: Mapped[str | None] = mapped_column(String(8), default=None)
    """How the applied step was confirmed: echo, readback or sensor."""
    mismatch_version: Mapped[int | None] = mapped_column(Integer, default=None)
    mismatch_step_at: Mapped[datetime | None] = mapped_column(default=None)
    mismatch: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """The step the device's light sensor last refuted, with the reason and figures."""


class CampaignRow(Base):
    __tablename__ = "campaigns"
    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class CommandRow(Base):
    """One plan version for one device: the outbox row and its lifecycle state."""

    __tablename__ = "commands"
    __table_args__ = (
        UniqueConstraint("device_id", "version", name="uq_commands_device_version"),
        Index("ix_commands_state", "state"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    state_at: Mapped[datetime]
    created_at: Mapped[datetime]
    published_at: Mapped[datetime | None] = mapped_column(default=None)
    reason: Mapped[str | None] = mapped_column(String(500), default=None)


class CommandEventRow(Base):
    """Append-only audit of every lifecycle transition, with its time."""

    __tablename__ = "command_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    command_id: Mapped[int] = mapped_column(ForeignKey("commands.id"), index=True)
    device_id: Mapped[str] = mapped_column(String(48), index=True)
    version: Mapped[int] = mapped_column(Integer)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
    detail: Mapped[str | None] = mapped_column(String(500), default=None)


class RevisionRow(Base):
    """A change counter per aggregate ("registry", "campaigns"), bumped in the same
    transaction as the change, so another process can tell cheaply that it changed."""

    __tablename__ = "revisions"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class UserRow(Base):
    """A staff account: admin, coordinator or technician (scoped to `cities`)."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("name", name="uq_users_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    cities: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime]
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiTokenRow(Base):
    """A bearer token of a user. Only its SHA-256 is stored, never the token."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    hint: Mapped[str | None] = mapped_column(String(16), default=None)
    """The token's first characters (`ilm_` and 8 more), so its holder can tell it apart."""
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class AuditRow(Base):
    """Append-only: who did what to which object, and when. The database refuses
    updates and deletes of its rows (triggers, migration 0006)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_kind_id", "kind", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(String(48), default=None)
    city: Mapped[str | None] = mapped_column(String(48), default=None)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class RolloutRow(Base):
    """A staged rollout of one change to a campaign (`controller/rollout.py`)."""

    __tablename__ = "rollouts"
    __table_args__ = (Index("ix_rollouts_state", "state"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(String(48), index=True)
    state: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The campaign as changed."""
    previous: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The campaign before the change: what an abort puts back."""
    sites: Mapped[list[str]] = mapped_column(JSON)
    started_at: Mapped[datetime]
    state_at: Mapped[datetime]
    counted_from: Mapped[datetime]
    """Results of versions sent from this instant on count for the pause rule."""
    reason: Mapped[str | None] = mapped_column(String(500), default=None)


class RolloutReleaseRow(Base):
    """A device sent the change of a rollout: its version, when, in which wave."""

    __tablename__ = "rollout_releases"
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime]
    wave: Mapped[str] = mapped_column(String(64))


class DeviceEventRow(Base):
    """The record of what was lit: each step a device reported applying (once per
    device, version and step) and each change of its online status."""

    __tablename__ = "device_events"
    __table_args__ = (
        UniqueConstraint("device_id", "kind", "version", "step_at", name="uq_device_events_step"),
        Index("ix_device_events_device_received", "device_id", "received_at"),
        Index("ix_device_events_step_at", "step_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(48))
    kind: Mapped[str] = mapped_column(String(8))
    received_at: Mapped[datetime]
    version: Mapped[int | None] = mapped_column(Integer, default=None)
    step_at: Mapped[datetime | None] = mapped_column(default=None)
    applied_at: Mapped[datetime | None] = mapped_column(default=None)
    state: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    source: Mapped[str | None] = mapped_column(String(8), default=None)
    confirmed_by: Mapped[str | None] = mapped_column(String(8), default=None)
    """A step: how it was confirmed (echo, readback or sensor)."""
    reading: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """What the device's light sensor saw (a step it confirmed, or a mismatch)."""
    reason: Mapped[str | None] = mapped_column(String(500), default=None)
    """A mismatch: why the reading does not confirm the step."""


class ControllerRunRow(Base):
    """One controller process: started, last alive (heartbeat), stopped cleanly."""

    __tablename__ = "controller_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime]
    alive_at: Mapped[datetime] = mapped_column(index=True)
    stopped_at: Mapped[datetime | None] = mapped_column(default=None)


class WindowOutcomeRow(Base):
    """The settled outcome of one window of one campaign at one device; kept after the
    campaign ends (or is replaced)."""

    __tablename__ = "window_outcomes"
    __table_args__ = (
        UniqueConstraint("device_id", "campaign_id", "starts_at", name="uq_window_outcomes"),
        Index("ix_window_outcomes_campaign", "campaign_id", "starts_at"),
        Index("ix_window_outcomes_ends_at", "ends_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(48))
    site_id: Mapped[str] = mapped_column(String(48))
    campaign_id: Mapped[str] = mapped_column(String(48))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    verdict: Mapped[str] = mapped_column(String(16))
    decided_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None] = mapped_column(default=None)
    reported_at: Mapped[datetime | None] = mapped_column(default=None)
