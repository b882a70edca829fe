"""Initial schema: models, model_versions, aliases, events

Revision ID: 0001
Revises: 
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_name', sa.String(length=128), nullable=False),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('before', sa.JSON(), nullable=True),
    sa.Column('after', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events'))
    )
    op.create_index('ix_events_model_name_id', 'events', ['model_name', 'id'])

    op.create_table('models',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('last_version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('last_version >= 0', name=op.f('ck_models_last_version_non_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_models')),
    sa.UniqueConstraint('name', name=op.f('uq_models_name'))
    )
    op.create_table('model_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('format', sa.String(length=16), nullable=False),
    sa.Column('estimator', sa.String(length=256), nullable=False),
    sa.Column('n_features', sa.Integer(), nullable=False),
    sa.Column('feature_names', sa.JSON(), nullable=False),
    sa.Column('feature_aliases', sa.JSON(), nullable=False),
    sa.Column('classes', sa.JSON(), nullable=True),
    sa.Column('labels', sa.JSON(), nullable=True),
    sa.Column('has_proba', sa.Boolean(), nullable=False),
    sa.Column('input_kind', sa.String(length=16), nullable=False),
    sa.Column('library_versions', sa.JSON(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.CheckConstraint("format IN ('pickle', 'joblib', 'skops')", name=op.f('ck_model_versions_format_known')),
    sa.CheckConstraint("input_kind IN ('array', 'dataframe')", name=op.f('ck_model_versions_input_kind_known')),
    sa.CheckConstraint('length(sha256) = 64', name=op.f('ck_model_versions_sha256_length')),
    sa.CheckConstraint('n_features >= 1', name=op.f('ck_model_versions_n_features_positive')),
    sa.CheckConstraint('size_bytes >= 0', name=op.f('ck_model_versions_size_non_negative')),
    sa.CheckConstraint('version >= 1', name=op.f('ck_model_versions_version_positive')),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_model_versions_model_id_models'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_versions')),
    sa.UniqueConstraint('model_id', 'version', name=op.f('uq_model_versions_model_id_version'))
    )
    op.create_index('ix_model_versions_sha256', 'model_versions', ['sha256'])

    op.create_table('aliases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_aliases_model_id_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], name=op.f('fk_aliases_version_id_model_versions'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_aliases')),
    sa.UniqueConstraint('model_id', 'name', name=op.f('uq_aliases_model_id_name'))
    )
    op.create_index('ix_aliases_version_id', 'aliases', ['version_id'])



def downgrade() -> None:
    op.drop_index('ix_aliases_version_id', table_name='aliases')

    op.drop_table('aliases')
    op.drop_index('ix_model_versions_sha256', table_name='model_versions')

    op.drop_table('model_versions')
    op.drop_table('models')
    op.drop_index('ix_events_model_name_id', table_name='events')

    op.drop_table('events')
