"""Errors raised by the store, all of them :class:`~gateway.errors.StoreError`.

Each carries the data that explains it. ``client_text`` stays generic; ``detail`` (for the log)
names the object: the end entity, the certificate, the pending request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.errors import StoreError

if TYPE_CHECKING:
    from gateway.store.models import PendingRequest


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


class NoSuchCertificate(StoreError):
    """The CA issued no certificate with that serial number."""

    def __init__(self, ca: str, serial: int) -> None:
        super().__init__(
            "no such certificate", detail=f"CA {ca!r} issued no certificate with serial {serial:#x}"
        )
        self.ca = ca
        self.serial = serial


class AlreadyRevoked(StoreError):
    """The certificate is revoked already; its first revocation stands."""

    def __init__(self, ca: str, serial: int) -> None:
        super().__init__(
            "certificate already revoked",
            detail=f"certificate {serial:#x} of CA {ca!r} is already revoked",
        )
        self.ca = ca
        self.serial = serial


class PendingExists(StoreError):
    """A pending request with that transactionID already exists on the alias."""

    def __init__(self, alias: str, transaction_id: str) -> None:
        super().__init__(
            "pending request already exists",
            detail=f"pending request {transaction_id!r} on alias {alias!r} exists",
        )
        self.alias = alias
        self.transaction_id = transaction_id


class EntityPending(StoreError):
    """The end entity already has an open (pending) request on the alias: ``existing``."""

    def __init__(self, existing: PendingRequest) -> None:
        super().__init__(
            "end entity has a pending request",
            detail=f"end entity {existing.username!r} on alias {existing.alias!r} "
            f"has pending request {existing.id}",
        )
        self.existing = existing


class TooManyPending(StoreError):
    """The alias holds its maximum of open pending requests."""

    def __init__(self, alias: str, limit: int) -> None:
        super().__init__(
            "too many pending requests",
            detail=f"alias {alias!r} holds {limit} open pending requests",
        )
        self.alias = alias
        self.limit = limit


class NoSuchPending(StoreError):
    """No pending request with that id."""

    def __init__(self, pending_id: int) -> None:
        super().__init__("no such pending request", detail=f"no pending request {pending_id}")
        self.id = pending_id


class PendingNotDecidable(StoreError):
    """The pending request was decided already, has expired or was issued: no decision now."""

    def __init__(self, pending_id: int, status: str) -> None:
        super().__init__(
            "pending request cannot be decided",
            detail=f"pending request {pending_id} has status {status!r}",
        )
        self.id = pending_id
        self.status = status


class PendingNotApproved(StoreError):
    """The pending request that an issuance completes does not exist or is not approved."""

    def __init__(self, pending_id: int, status: str | None) -> None:
        why = "does not exist" if status is None else f"has status {status!r}"
        super().__init__(
            "pending request is not approved", detail=f"pending request {pending_id} {why}"
        )
        self.id = pending_id
        self.status = status


class LatestCertificateChanged(StoreError):
    """The end entity's latest certificate is not what the issuance expected: another
    issuance to the same end entity (a replica, a concurrent request) came first."""

    def __init__(self, username: str, expected: int | None, latest: int | None) -> None:
        want = "no valid certificate" if expected is None else f"latest {expected:x}"
        have = "none" if latest is None else f"{latest:x}"
        super().__init__(
            "the end entity's certificates changed",
            detail=f"end entity {username!r}: expected {want}, found {have}",
        )
        self.username = username
        self.expected = expected
        self.latest = latest
