"""Tests of gateway.store, each on SQLite and on PostgreSQL."""
