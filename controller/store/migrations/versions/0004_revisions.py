"""revisions: change counters per aggregate, bumped in the same transaction as the change

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "revisions",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Integer(), nullable=False, server_default="0"),
    )
    op.bulk_insert(table, [{"name": "registry", "value": 0}, {"name": "campaigns", "value": 0}])


def downgrade() -> None:
    op.drop_table("revisions")
