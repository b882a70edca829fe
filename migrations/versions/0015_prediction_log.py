"""The sampled prediction log (partitioned by day on PostgreSQL), drift counts per bin, verdicts;
whether a version is explainable

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("explainable", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("unexplainable", sa.Text(), nullable=True))
    op.create_table(
        "prediction_log",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(128), nullable=True),
        sa.Column("request_key", sa.String(256), nullable=True),
        sa.Column("n_rows", sa.Integer(), nullable=False),
        sa.Column("rows", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["model_versions.id"],
                                name="fk_prediction_log_version_id_model_versions", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", "at", name="pk_prediction_log"),
        postgresql_partition_by="RANGE (at)",
    )
    op.create_index("ix_prediction_log_version_id_at", "prediction_log", ["version_id", "at"])
    op.create_table(
        "drift_counts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("output", sa.Boolean(), nullable=False),
        sa.Column("feature", sa.String(128), nullable=False),
        sa.Column("bin", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["model_versions.id"],
                                name="fk_drift_counts_version_id_model_versions", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_drift_counts"),
        sa.UniqueConstraint("version_id", "bucket", "output", "feature", "bin",
                            name="uq_drift_counts_version_id_bucket_output_feature_bin"),
    )
    op.create_table(
        "drift_verdicts",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("output", sa.Boolean(), nullable=False),
        sa.Column("feature", sa.String(128), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("psi", sa.Double(), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["model_versions.id"],
                                name="fk_drift_verdicts_version_id_model_versions", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("version_id", "output", "feature", name="pk_drift_verdicts"),
    )


def downgrade() -> None:
    op.drop_table("drift_verdicts")
    op.drop_table("drift_counts")
    op.drop_table("prediction_log")  # on PostgreSQL, with its day partitions
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("unexplainable")
        batch.drop_column("explainable")
