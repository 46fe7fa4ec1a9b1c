"""device_events, controller_runs, window_outcomes: the record of what was lit

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "device_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=48), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        _at("received_at"),
        sa.Column("version", sa.Integer(), nullable=True),
        _at("step_at", nullable=True),
        _at("applied_at", nullable=True),
        sa.Column("state", sa.JSON(), nullable=True),
        sa.Column("source", sa.String(length=8), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "device_id", "kind", "version", "step_at", name="uq_device_events_step"
        ),
    )
    op.create_index(
        "ix_device_events_device_received", "device_events", ["device_id", "received_at"]
    )
    op.create_index("ix_device_events_step_at", "device_events", ["step_at"])
    op.create_table(
        "controller_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _at("started_at"),
        _at("alive_at"),
        _at("stopped_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_controller_runs_alive_at", "controller_runs", ["alive_at"])
    op.create_table(
        "window_outcomes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=48), nullable=False),
        sa.Column("site_id", sa.String(length=48), nullable=False),
        sa.Column("campaign_id", sa.String(length=48), nullable=False),
        _at("starts_at"),
        _at("ends_at"),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        _at("decided_at"),
        _at("confirmed_at", nullable=True),
        _at("reported_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "campaign_id", "starts_at", name="uq_window_outcomes"),
    )
    op.create_index("ix_window_outcomes_campaign", "window_outcomes", ["campaign_id", "starts_at"])
    op.create_index("ix_window_outcomes_ends_at", "window_outcomes", ["ends_at"])


def downgrade() -> None:
    op.drop_index("ix_window_outcomes_ends_at", table_name="window_outcomes")
    op.drop_index("ix_window_outcomes_campaign", table_name="window_outcomes")
    op.drop_table("window_outcomes")
    op.drop_index("ix_controller_runs_alive_at", table_name="controller_runs")
    op.drop_table("controller_runs")
    op.drop_index("ix_device_events_step_at", table_name="device_events")
    op.drop_index("ix_device_events_device_received", table_name="device_events")
    op.drop_table("device_events")
