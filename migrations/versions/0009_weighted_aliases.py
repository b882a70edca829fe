"""Weighted aliases: an alias may split its requests between versions ({"<version>": weight});
its version_id is then the heaviest of them

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN on both backends (a nullable column needs no table copy on SQLite).
    op.add_column("aliases", sa.Column("weights", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("aliases") as batch:
        batch.drop_column("weights")
