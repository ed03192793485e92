"""scep."""
