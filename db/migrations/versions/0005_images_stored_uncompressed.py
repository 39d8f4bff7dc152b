"""Image bytes are stored out of line without compression (Postgres): they are JPEG or PNG, compressed already.

With the default storage, Postgres ran pglz over every image it stored, found nothing to gain and kept the
bytes as they were: measured with perf during single submissions of 640x480 JPEGs, pglz_compress was about three
quarters of Postgres's CPU. Rows stored before this revision keep the form they were written in.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":  # SQLite has no per-column storage
        op.execute("ALTER TABLE images ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE images ALTER COLUMN data SET STORAGE EXTENDED")
