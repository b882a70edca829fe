"""Versions keep their input example, load warnings and whether they take missing values;
estimators that read one text column get input kind "text"

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch_op:
        batch_op.add_column(sa.Column("example", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("load_warnings", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("allow_nan", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.drop_constraint(op.f("ck_model_versions_input_kind_known"), type_="check")
        batch_op.create_check_constraint(op.f("ck_model_versions_input_kind_known"),
                                         "input_kind IN ('array', 'dataframe', 'text')")


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch_op:
        batch_op.drop_constraint(op.f("ck_model_versions_input_kind_known"), type_="check")
        batch_op.create_check_constraint(op.f("ck_model_versions_input_kind_known"),
                                         "input_kind IN ('array', 'dataframe')")
        batch_op.drop_column("allow_nan")
        batch_op.drop_column("load_warnings")
        batch_op.drop_column("example")
