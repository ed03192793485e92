"""End entities and issued certificates.

Revision ID: 0001
Revises:
Create Date: 2025-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "end_entities",
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("code_hash", sa.Text(), nullable=False),
        sa.Column("subject_dn", sa.Text(), nullable=False),
        sa.Column("ca", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('new', 'generated', 'failed')", name=op.f("ck_end_entities_status")
        ),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_end_entities")),
    )
    op.create_table(
        "certificates",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("ca", sa.Text(), nullable=False),
        sa.Column("serial", sa.Text(), nullable=False),
        sa.Column("subject_dn", sa.Text(), nullable=False),
        sa.Column("issuer_dn", sa.Text(), nullable=False),
        sa.Column("username", sa.Text(), nullable=True),
        sa.Column("transaction_id", sa.Text(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revocation_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certificates")),
        sa.UniqueConstraint("ca", "serial", name="uq_certificates_ca_serial"),
    )
    op.create_index(op.f("ix_certificates_username"), "certificates", ["username"])
    op.create_index(op.f("ix_certificates_transaction_id"), "certificates", ["transaction_id"])
    op.create_index(
        op.f("ix_certificates_issuer_dn_serial"), "certificates", ["issuer_dn", "serial"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_certificates_issuer_dn_serial"), table_name="certificates")
    op.drop_index(op.f("ix_certificates_transaction_id"), table_name="certificates")
    op.drop_index(op.f("ix_certificates_username"), table_name="certificates")
    op.drop_table("certificates")
    op.drop_table("end_entities")
