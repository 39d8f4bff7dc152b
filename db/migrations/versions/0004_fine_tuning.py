"""Fine-tuning: jobs, their checked examples and events, model versions, tenants' default versions; jobs may name
a version; jobs are indexed by lease token (lease renewals).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('fine_tuning_jobs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('base_model', sa.String(length=200), nullable=False),
    sa.Column('task', sa.String(length=16), nullable=False),
    sa.Column('queue', sa.String(length=100), nullable=False),
    sa.Column('training_file_id', sa.Uuid(), nullable=False),
    sa.Column('validation_file_id', sa.Uuid(), nullable=True),
    sa.Column('hyperparameters', sa.JSON(), nullable=False),
    sa.Column('suffix', sa.String(length=64), nullable=True),
    sa.Column('metadata', sa.JSON(), nullable=True),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('data_report', sa.JSON(), nullable=True),
    sa.Column('error', sa.JSON(), nullable=True),
    sa.Column('fine_tuned_model', sa.String(length=200), nullable=True),
    sa.Column('trained_steps', sa.Integer(), nullable=False),
    sa.Column('checkpoint', sa.LargeBinary(), nullable=True),
    sa.Column('checkpoint_step', sa.Integer(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('lease_owner', sa.String(length=200), nullable=True),
    sa.Column('lease_token', sa.String(length=64), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancel_requested_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('validating_files', 'queued', 'running', 'succeeded', 'failed', 'cancelled')", name='ck_fine_tuning_jobs_status'),
    sa.CheckConstraint("task IN ('caption', 'vqa', 'sentiment', 'classify')", name='ck_fine_tuning_jobs_task'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['training_file_id'], ['files.id'], ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['validation_file_id'], ['files.id'], ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('fine_tuning_jobs', schema=None) as batch_op:
        batch_op.create_index('ix_fine_tuning_jobs_claim', ['queue', 'status', 'created_at'], unique=False)
        batch_op.create_index('ix_fine_tuning_jobs_status_lease', ['status', 'lease_expires_at'], unique=False)
        batch_op.create_index('ix_fine_tuning_jobs_tenant_created', ['tenant_id', 'created_at'], unique=False)

    op.create_table('fine_tuning_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.Uuid(), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['fine_tuning_jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('fine_tuning_events', schema=None) as batch_op:
        batch_op.create_index('ix_fine_tuning_events_job', ['job_id', 'id'], unique=False)

    op.create_table('fine_tuning_examples',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('split', sa.String(length=16), nullable=False),
    sa.Column('line', sa.Integer(), nullable=False),
    sa.Column('image_sha256', sa.String(length=64), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('target', sa.Text(), nullable=False),
    sa.CheckConstraint("split IN ('train', 'validation', 'test')", name='ck_fine_tuning_examples_split'),
    sa.ForeignKeyConstraint(['job_id'], ['fine_tuning_jobs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id', 'image_sha256'], ['images.tenant_id', 'images.sha256'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('fine_tuning_examples', schema=None) as batch_op:
        batch_op.create_index('ix_fine_tuning_examples_job_split', ['job_id', 'split', 'id'], unique=False)

    op.create_table('model_versions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('base_model', sa.String(length=200), nullable=False),
    sa.Column('task', sa.String(length=16), nullable=False),
    sa.Column('fine_tuning_job_id', sa.Uuid(), nullable=True),
    sa.Column('weights', sa.LargeBinary(), nullable=False),
    sa.Column('weights_sha256', sa.String(length=64), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('eval', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("task IN ('caption', 'vqa', 'sentiment', 'classify')", name='ck_model_versions_task'),
    sa.ForeignKeyConstraint(['fine_tuning_job_id'], ['fine_tuning_jobs.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.create_index('ix_model_versions_tenant_name', ['tenant_id', 'name'], unique=True)

    op.create_table('tenant_default_models',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('task', sa.String(length=16), nullable=False),
    sa.Column('model_version_id', sa.Uuid(), nullable=False),
    sa.Column('forced', sa.Boolean(), nullable=False),
    sa.Column('promoted_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', 'task')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('model_version_id', sa.Uuid(), nullable=True))
        batch_op.create_index('ix_jobs_lease_token', ['lease_token'], unique=False)
        batch_op.create_foreign_key('fk_jobs_model_version_id', 'model_versions', ['model_version_id'], ['id'], ondelete='RESTRICT')


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_jobs_model_version_id', type_='foreignkey')
        batch_op.drop_index('ix_jobs_lease_token')
        batch_op.drop_column('model_version_id')

    op.drop_table('tenant_default_models')
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_index('ix_model_versions_tenant_name')

    op.drop_table('model_versions')
    with op.batch_alter_table('fine_tuning_examples', schema=None) as batch_op:
        batch_op.drop_index('ix_fine_tuning_examples_job_split')

    op.drop_table('fine_tuning_examples')
    with op.batch_alter_table('fine_tuning_events', schema=None) as batch_op:
        batch_op.drop_index('ix_fine_tuning_events_job')

    op.drop_table('fine_tuning_events')
    with op.batch_alter_table('fine_tuning_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_fine_tuning_jobs_tenant_created')
        batch_op.drop_index('ix_fine_tuning_jobs_status_lease')
        batch_op.drop_index('ix_fine_tuning_jobs_claim')

    op.drop_table('fine_tuning_jobs')
