"""API key scopes and rate limits, tenant image-URL switch and job quota, job error codes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

ACTIVE_SQL = "status IN ('queued', 'running')"


def upgrade() -> None:
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('allow_image_urls', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('max_active_jobs', sa.Integer(), nullable=True))
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scopes', sa.String(length=100), server_default='submit read', nullable=False))
        batch_op.add_column(sa.Column('rate_limit_per_minute', sa.Integer(), nullable=True))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('error_code', sa.String(length=16), nullable=True))
        batch_op.create_index('ix_jobs_tenant_error_code', ['tenant_id', 'error_code'], unique=False)
        batch_op.create_index('ix_jobs_tenant_active', ['tenant_id'], unique=False,
                              postgresql_where=sa.text(ACTIVE_SQL), sqlite_where=sa.text(ACTIVE_SQL))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_tenant_active')
        batch_op.drop_index('ix_jobs_tenant_error_code')
        batch_op.drop_column('error_code')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('rate_limit_per_minute')
        batch_op.drop_column('scopes')
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('max_active_jobs')
        batch_op.drop_column('allow_image_urls')
