"""One test module per threat of docs/security.md; each fails on the code before its fix."""
