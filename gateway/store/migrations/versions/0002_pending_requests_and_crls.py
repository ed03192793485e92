"""Pending requests, CRLs, and certificate look-ups by end entity and CA.

Adds the tables ``pending_requests`` and ``crls``, and replaces the index on
``certificates.username`` by one on ``(username, ca)`` (which serves both look-ups). Existing
rows are kept as they are.

Revision ID: 0002
Revises: 0001
Create Date: 2025-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "crls",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("ca", sa.Text(), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("this_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("number > 0", name=op.f("ck_crls_number")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crls")),
        sa.UniqueConstraint("ca", "number", name="uq_crls_ca_number"),
    )
    op.create_table(
        "pending_requests",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("alias", sa.Text(), nullable=False),
        sa.Column("ca", sa.Text(), nullable=False),
        sa.Column("transaction_id", sa.Text(), nullable=False),
        sa.Column("transaction_key", sa.Text(), nullable=False),
        sa.Column("username", sa.Text(), nullable=True),
        sa.Column("subject_dn", sa.Text(), nullable=False),
        sa.Column("csr_der", sa.LargeBinary(), nullable=False),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("issued_serial", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected', 'expired', 'issued')",
            name=op.f("ck_pending_requests_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_requests")),
        sa.UniqueConstraint(
            "alias", "transaction_id", name="uq_pending_requests_alias_transaction_id"
        ),
    )
    op.create_index(
        op.f("ix_pending_requests_alias_transaction_key"),
        "pending_requests",
        ["alias", "transaction_key"],
    )
    op.create_index(
        op.f("ix_pending_requests_alias_username"), "pending_requests", ["alias", "username"]
    )
    op.create_index(
        op.f("ix_pending_requests_status_expires_at"),
        "pending_requests",
        ["status", "expires_at"],
    )
    op.create_index(op.f("ix_certificates_username_ca"), "certificates", ["username", "ca"])
    op.drop_index(op.f("ix_certificates_username"), table_name="certificates")


def downgrade() -> None:
    op.create_index(op.f("ix_certificates_username"), "certificates", ["username"])
    op.drop_index(op.f("ix_certificates_username_ca"), table_name="certificates")
    op.drop_index(op.f("ix_pending_requests_status_expires_at"), table_name="pending_requests")
    op.drop_index(op.f("ix_pending_requests_alias_username"), table_name="pending_requests")
    op.drop_index(op.f("ix_pending_requests_alias_transaction_key"), table_name="pending_requests")
    op.drop_table("pending_requests")
    op.drop_table("crls")
