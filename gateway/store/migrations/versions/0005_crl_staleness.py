"""Revocation counters and CRL coverage: deciding a CRL's staleness with one look-up.

Adds ``revocation_counters`` (revocations per CA name, counted up by each revocation) and
``crl_coverage`` (the count each CRL was built from). Counters start at the number of
certificates already revoked; CRLs published before have no coverage row, so each series is
signed anew once, on its first request after the upgrade.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revocation_counters",
        sa.Column("ca", sa.Text(), nullable=False),
        sa.Column("revocations", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("ca", name=op.f("pk_revocation_counters")),
    )
    op.create_table(
        "crl_coverage",
        sa.Column("series", sa.Text(), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("revocations", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("series", "number", name=op.f("pk_crl_coverage")),
    )
    op.execute(
        "INSERT INTO revocation_counters (ca, revocations) "
        "SELECT ca, COUNT(*) FROM certificates WHERE revoked_at IS NOT NULL GROUP BY ca"
    )


def downgrade() -> None:
    op.drop_table("crl_coverage")
    op.drop_table("revocation_counters")
