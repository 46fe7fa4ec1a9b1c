"""devices: adapter config, credential rotation and decommissioning; sites: removal

Revision ID: 0009
Revises: 0008

A decommissioned device keeps its row (and its commands and their events): only its
secret is dropped. A removed site keeps its row too, so the history that names it
still resolves; it leaves the catalog.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("config", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("credentials_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("decommissioned_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("sites") as batch:
        batch.add_column(sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.drop_column("removed_at")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("decommissioned_at")
        batch.drop_column("credentials_at")
        batch.drop_column("config")
