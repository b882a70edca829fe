"""Guards: a weighted alias may carry a rule that returns it to its state before the canary when
a candidate version's measure over a window passes a limit (counts appended per worker flush)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "guards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alias_id", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("max", sa.Double(), nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("min_samples", sa.Integer(), nullable=False),
        sa.Column("baseline", sa.JSON(), nullable=False),
        sa.Column("baseline_version", sa.Integer(), nullable=False),
        sa.Column("candidates", sa.JSON(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.CheckConstraint("metric IN ('error_rate', 'disagreement', 'p99_ms')", name=op.f("ck_guards_metric_known")),
        sa.CheckConstraint("window_seconds > 0 AND min_samples > 0", name=op.f("ck_guards_window_positive")),
        sa.ForeignKeyConstraint(["alias_id"], ["aliases.id"], name=op.f("fk_guards_alias_id_aliases"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guards")),
        sa.UniqueConstraint("alias_id", name=op.f("uq_guards_alias_id")),
    )
    op.create_table(
        "guard_counts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guard_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("rows_disagreed", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["guard_id"], ["guards.id"], name=op.f("fk_guard_counts_guard_id_guards"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guard_counts")),
    )
    op.create_index("ix_guard_counts_guard_id_at", "guard_counts", ["guard_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_guard_counts_guard_id_at", table_name="guard_counts")
    op.drop_table("guard_counts")
    op.drop_table("guards")
