"""Lists in SQL: model tags are also rows of their own, indexed, so the model list filters by
tag in SQL; each model keeps its version count, so a list of models never counts versions

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    model_tags = op.create_table(
        "model_tags",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.String(length=1024), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_model_tags_model_id_models"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("model_id", "key", name=op.f("pk_model_tags")),
    )
    op.create_index("ix_model_tags_key_value", "model_tags", ["key", "value"])
    models = sa.table("models", sa.column("id", sa.Integer()), sa.column("tags", sa.JSON()))
    connection = op.get_bind()
    rows = [{"model_id": model_id, "key": key, "value": value}
            for model_id, tags in connection.execute(sa.select(models.c.id, models.c.tags))
            for key, value in (tags or {}).items()]
    if rows:
        op.bulk_insert(model_tags, rows)
    # A plain ADD COLUMN on both backends: on SQLite a batch copy of "models" would drop the old
    # table, and with foreign keys on that deletes every row that cascades from it.
    op.add_column("models", sa.Column("version_count", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE models SET version_count = "
               "(SELECT count(*) FROM model_versions WHERE model_versions.model_id = models.id)")


def downgrade() -> None:
    op.execute("ALTER TABLE models DROP COLUMN version_count")  # SQLite 3.35+ and PostgreSQL, no table copy
    op.drop_index("ix_model_tags_key_value", table_name="model_tags")
    op.drop_table("model_tags")
