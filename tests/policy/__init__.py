"""Unit tests of the pure policy modules."""
