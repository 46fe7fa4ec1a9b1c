"""devices and device_events: how a step was confirmed, and light-sensor mismatches

Revision ID: 0010
Revises: 0009

`devices.confirmed_by` says how the newest applied step was confirmed (echo, readback or
sensor; NULL on rows from before: an echo). `devices.mismatch_*` keep the step the
device's light sensor last refuted, with the reason and figures. `device_events` gains
the same for the record: a step's `confirmed_by` and `reading`, and a `mismatch` event's
`reading` and `reason`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("confirmed_by", sa.String(8), nullable=True))
        batch.add_column(sa.Column("mismatch_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("mismatch_step_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("mismatch", sa.JSON(), nullable=True))
    with op.batch_alter_table("device_events") as batch:
        batch.add_column(sa.Column("confirmed_by", sa.String(8), nullable=True))
        batch.add_column(sa.Column("reading", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("reason", sa.String(500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device_events") as batch:
        batch.drop_column("reason")
        batch.drop_column("reading")
        batch.drop_column("confirmed_by")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("mismatch")
        batch.drop_column("mismatch_step_at")
        batch.drop_column("mismatch_version")
        batch.drop_column("confirmed_by")
