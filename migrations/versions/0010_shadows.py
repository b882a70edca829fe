"""Shadows: an alias may run a fraction of its requests on another version after answering, and
count how the two compare (one row of counts per worker flush, added up when read)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shadows",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alias_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("fraction", sa.Double(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.CheckConstraint("fraction > 0 AND fraction <= 1", name=op.f("ck_shadows_fraction_range")),
        sa.ForeignKeyConstraint(["alias_id"], ["aliases.id"], name=op.f("fk_shadows_alias_id_aliases"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["version_id"], ["model_versions.id"],
                                name=op.f("fk_shadows_version_id_model_versions"), ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shadows")),
        sa.UniqueConstraint("alias_id", name=op.f("uq_shadows_alias_id")),
    )
    op.create_index("ix_shadows_version_id", "shadows", ["version_id"])
    op.create_table(
        "shadow_counts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shadow_id", sa.Integer(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("compared", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.Column("dropped", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("rows_agreed", sa.BigInteger(), nullable=False),
        sa.Column("max_abs_diff", sa.Double(), nullable=True),
        sa.Column("primary_ms", sa.JSON(), nullable=False),
        sa.Column("shadow_ms", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["shadow_id"], ["shadows.id"], name=op.f("fk_shadow_counts_shadow_id_shadows"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shadow_counts")),
    )
    op.create_index("ix_shadow_counts_shadow_id", "shadow_counts", ["shadow_id"])


def downgrade() -> None:
    op.drop_index("ix_shadow_counts_shadow_id", table_name="shadow_counts")
    op.drop_table("shadow_counts")
    op.drop_index("ix_shadows_version_id", table_name="shadows")
    op.drop_table("shadows")
