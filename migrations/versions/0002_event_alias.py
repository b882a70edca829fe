"""Events name the alias they concern, so a rollback finds an alias's last move by index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch_op:
        batch_op.add_column(sa.Column("alias", sa.String(length=128), nullable=True))
        batch_op.create_index("ix_events_model_name_alias_id", ["model_name", "alias", "id"])


def downgrade() -> None:
    with op.batch_alter_table("events") as batch_op:
        batch_op.drop_index("ix_events_model_name_alias_id")
        batch_op.drop_column("alias")
