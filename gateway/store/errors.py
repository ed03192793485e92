"""Errors raised by the store, all of them :class:`~gateway.errors.StoreError`.

Each carries the data that explains it. ``client_text`` stays generic; ``detail`` (for the log)
names the entity or the certificate.
"""

from __future__ import annotations

from gateway.errors import StoreError


class InvalidRecord(StoreError):
    """A value that the store cannot hold (naive datetime, serial out of range, bad status)."""

    def __init__(self, detail: str) -> None:
        super().__init__("invalid store record", detail=detail)


class EntityExists(StoreError):
    """An end entity of that username already exists."""

    def __init__(self, username: str) -> None:
        super().__init__("end entity already exists", detail=f"end entity {username!r} exists")
        self.username = username


class NoSuchEntity(StoreError):
    """No end entity of that username."""

    def __init__(self, username: str) -> None:
        super().__init__("no such end entity", detail=f"no end entity {username!r}")
        self.username = username


class EntityNotEnrollable(StoreError):
    """The end entity does not exist, or its status does not allow an enrollment."""

    def __init__(self, username: str, status: str | None) -> None:
        why = "does not exist" if status is None else f"has status {status!r}"
        super().__init__("end entity cannot enroll", detail=f"end entity {username!r} {why}")
        self.username = username
        self.status = status


class SerialCollision(StoreError):
    """The CA already issued a certificate with that serial number: draw another one."""

    def __init__(self, ca: str, serial: int) -> None:
        super().__init__(
            "serial number already used", detail=f"CA {ca!r} already used serial {serial:#x}"
        )
        self.ca = ca
        self.serial = serial
