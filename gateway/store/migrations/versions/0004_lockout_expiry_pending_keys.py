"""End entity lockout and code expiry; pending requests bound to their key, without secrets.

- ``end_entities``: ``failed_attempts`` (0), ``locked_at`` and ``code_expires_at`` (NULL).
- ``pending_requests``: ``key_id`` and ``signer_key_id``; the unique transactionID becomes
  unique per key; a unique partial index allows one open request per end entity and alias.
- Existing pending requests lose their challengePassword (and the CSR signature over it),
  and get the ``key_id`` of their CSR. A row whose CSR cannot be read keeps a NULL key id:
  no poll matches it any more (the client enrolls again).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gateway.scep import csr as scep_csr

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = "status = 'pending'"


def _redact_pending_rows() -> None:
    connection = op.get_bind()
    table = sa.table(
        "pending_requests",
        sa.column("id", sa.BigInteger()),
        sa.column("csr_der", sa.LargeBinary()),
        sa.column("key_id", sa.Text()),
    )
    rows = connection.execute(sa.select(table.c.id, table.c.csr_der)).all()
    for row_id, der in rows:
        try:
            redacted = scep_csr.without_challenge(bytes(der))
            key_id: str | None = scep_csr.key_id(scep_csr.parse(redacted).public_key)
        except ValueError:
            # Unreadable: keep no trace of what it held; it cannot be polled any more.
            redacted, key_id = b"", None
        connection.execute(
            sa.update(table).where(table.c.id == row_id).values(csr_der=redacted, key_id=key_id)
        )


def upgrade() -> None:
    with op.batch_alter_table("end_entities") as batch:
        batch.add_column(
            sa.Column("failed_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("locked_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("code_expires_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("pending_requests") as batch:
        batch.add_column(sa.Column("key_id", sa.Text(), nullable=True))
        batch.add_column(sa.Column("signer_key_id", sa.Text(), nullable=True))
        batch.drop_constraint("uq_pending_requests_alias_transaction_id", type_="unique")
        batch.create_unique_constraint(
            "uq_pending_requests_alias_transaction_id_key_id",
            ["alias", "transaction_id", "key_id"],
        )
    _redact_pending_rows()
    # Older databases may hold several open requests of one end entity: keep the newest open.
    op.execute(
        "UPDATE pending_requests SET status = 'expired' WHERE status = 'pending' AND EXISTS ("
        "SELECT 1 FROM pending_requests AS newer WHERE newer.status = 'pending' "
        "AND newer.alias = pending_requests.alias AND newer.username = pending_requests.username "
        "AND newer.id > pending_requests.id)"
    )
    op.create_index(
        "uq_pending_requests_open_entity",
        "pending_requests",
        ["alias", "username"],
        unique=True,
        sqlite_where=sa.text(_OPEN),
        postgresql_where=sa.text(_OPEN),
    )


def downgrade() -> None:
    op.drop_index("uq_pending_requests_open_entity", table_name="pending_requests")
    with op.batch_alter_table("pending_requests") as batch:
        batch.drop_constraint("uq_pending_requests_alias_transaction_id_key_id", type_="unique")
        batch.create_unique_constraint(
            "uq_pending_requests_alias_transaction_id", ["alias", "transaction_id"]
        )
        batch.drop_column("signer_key_id")
        batch.drop_column("key_id")
    with op.batch_alter_table("end_entities") as batch:
        batch.drop_column("code_expires_at")
        batch.drop_column("locked_at")
        batch.drop_column("failed_attempts")
