"""sites.photo: a site's picture and its text per language, kept by the registry

Revision ID: 0011
Revises: 0010

A site file or `PUT /api/v1/sites/{id}` may give a site a `photo` ({"src", "alt"},
schedules/model.py); the registry now keeps it (NULL: none), so the public page shows it
whichever store the catalogue comes from.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.add_column(sa.Column("photo", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.drop_column("photo")
