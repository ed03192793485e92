"""Alembic environment and revisions of the store schema (loaded by Alembic, not imported)."""
