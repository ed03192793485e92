"""Interop tests: real third-party SCEP clients against scep-gateway (see ``clients.py``)."""
