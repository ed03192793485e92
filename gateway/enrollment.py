"""PKIOperation: the use case, and the only place a ScepFailure becomes a FAILURE CertRep."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.ca.crl import issued_by
from gateway.ca.profile import issue_request
from gateway.errors import FailInfo, ScepFailure
from gateway.limits import Limits
from gateway.logs import clip
from gateway.metrics import Metrics
from gateway.policy.approval import decode_decision, find_own_pending, stored_csr
from gateway.policy.context import EnrollmentContext, Pending, PolicyEnv
from gateway.registry import AliasRuntime, ScepKeys
from gateway.revocation import CrlPublisher
from gateway.scep import decode, encode
from gateway.scep.crypto import DIGESTS, RESPONSE_CIPHER, WITHOUT_SINGLE_DES
from gateway.scep.csr import load_name
from gateway.scep.messages import MessageType, PkiRequest, ReplyTo, SignedMessage
from gateway.store import (
    CertificateRecord,
    EntityExists,
    EntityNotEnrollable,
    ExpectLatest,
    LatestCertificateChanged,
    PendingNotApproved,
    PendingStatus,
    SerialCollision,
    Store,
)

log = logging.getLogger(__name__)

_SERIAL_ATTEMPTS = 3


@dataclass(frozen=True)
class Answer:
    body: bytes
    status: str  # SUCCESS, FAILURE or PENDING, for logs and metrics


class Enrollment:
    """Answers PKIOperation requests for any alias of the current snapshot."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime],
        random: Callable[[int], bytes],
        serials: Callable[[], int] = x509.random_serial_number,
        metrics: Metrics | None = None,
        limits: Limits | None = None,
        crls: CrlPublisher | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics or Metrics()
        self._clock = clock
        self._random = random
        self._serials = serials
        self.limits = limits or Limits()
        self._env = PolicyEnv(store=store, clock=clock, random=random, hashing=self.limits.hashing)
        self._crls = crls or CrlPublisher(store, clock)

    async def pki_operation(
        self, alias: AliasRuntime, body: bytes, *, client: str | None = None
    ) -> Answer:
        # Unparseable: nobody to answer to, MalformedRequest -> HTTP 400 at the edge.
        message = decode.read_signed_message(body)
        # A source over its failure budget gets a signed FAILURE before anything expensive
        # (decryption, code hashing); everyone else waits for a place (or gets HTTP 503).
        return await self.limits.guard(
            client,
            (alias.name.encode(), body),
            lambda refusal: self._answer(alias, message, refusal),
        )

    async def _answer(
        self, alias: AliasRuntime, message: SignedMessage, refusal: ScepFailure | None = None
    ) -> Answer:
        keys = alias.keys[0]
        reply = decode.reply_to(message, self._digest(alias, message))
        try:
            if refusal is not None:
                raise refusal
            # What the outer message decides comes first, so that everything after the key
            # transport can only be the one "unreadable" answer or a valid request.
            kind = decode.check(message)
            self._check_time(alias, message)
            # Crypto runs on the loop, not in to_thread: for RSA-2048 the hand-off costs more
            # Python than the RSA it would move away (measured with `make bench`: c=16 on
            # PostgreSQL 117 -> 155 enrollments/s). Cores come from `serve --workers`.
            request = decode.open_request(
                message,
                kind,
                [k.decrypter for k in alias.keys],
                fallback_key=self._random,
                ciphers=WITHOUT_SINGLE_DES if alias.config.refuse_single_des else None,
            )
            keys = alias.issuer_for(alias.keys[request.recipient_index], self._clock())
            return await self._dispatch(alias, keys, request, reply)
        except ScepFailure as failure:
            log.info(
                "FAILURE alias=%s transaction=%s failInfo=%s: %s",
                alias.name,
                clip(message.transaction_id),
                failure.fail_info.name,
                failure.detail,
            )
            body = encode.failure(
                reply,
                keys.signer,
                failure.fail_info,
                failure.client_text,
                random=self._random(encode.NONCE_BYTES),
                now=self._clock(),
            )
            return Answer(body, "FAILURE")

    @staticmethod
    def _digest(alias: AliasRuntime, message: SignedMessage) -> str:
        # Answers are SHA-256 unless the alias mirrors the request's digest for clients that
        # cannot verify anything else (old Cisco IOS, REP-03). MD5 is never mirrored.
        if alias.config.response_digest == "mirror" and message.digest in DIGESTS:
            return message.digest
        return "sha256"

    @staticmethod
    def _cipher(alias: AliasRuntime, request: PkiRequest) -> str:
        if alias.config.response_cipher == "mirror":
            return RESPONSE_CIPHER[request.content_cipher]
        return alias.config.response_cipher

    def _check_time(self, alias: AliasRuntime, message: SignedMessage) -> None:
        skew = alias.config.max_signing_time_skew_seconds
        signing_time = message.signing_time
        if skew is None or signing_time is None:
            return
        # asn1crypto hands over what the client encoded: a GeneralizedTime without a zone
        # (naive) or year 0 (not a datetime) names no instant we could compare.
        if not isinstance(signing_time, datetime) or signing_time.tzinfo is None:
            raise ScepFailure(
                FailInfo.BAD_TIME,
                "signingTime has no time zone",
                detail=f"signingTime={clip(repr(signing_time))}",
            )
        if abs((self._clock() - signing_time).total_seconds()) > skew:
            raise ScepFailure(
                FailInfo.BAD_TIME,
                "signingTime is too far from the server's clock",
                detail=f"signingTime={signing_time.isoformat()}",
            )

    async def _dispatch(
        self, alias: AliasRuntime, keys: ScepKeys, request: PkiRequest, reply: ReplyTo
    ) -> Answer:
        kind = request.message_type
        if kind in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
            return await self._enroll(alias, keys, request, reply)
        if kind is MessageType.GET_CERT:
            return await self._get_cert(alias, keys, request, reply)
        if kind is MessageType.CERT_POLL:
            return await self._poll(alias, keys, request, reply)
        return await self._get_crl(alias, keys, request, reply)

    async def _signer_record(self, request: PkiRequest) -> CertificateRecord | None:
        """The certificate we issued that signed this request (a renewal candidate), if any."""
        signer = request.signer
        if signer.self_issued:
            # RFC 8894 2.3: a first enrollment is signed with a self-signed throwaway
            # certificate; only one a CA issued can be a renewal credential. Saves a query.
            return None
        try:
            issuer = load_name(asn1_x509.Name.load(signer.issuer_der)).rfc4514_string()
        except (ValueError, TypeError):
            return None
        record = await self._store.find_certificate_by_issuer_dn(issuer, signer.serial)
        return record if record is not None and record.der == signer.certificate_der else None

    async def _enroll(
        self, alias: AliasRuntime, keys: ScepKeys, request: PkiRequest, reply: ReplyTo
    ) -> Answer:
        ctx = EnrollmentContext(
            alias=alias.name,
            ca=keys.ca.name,
            request=request,
            now=self._clock(),
            signer_record=await self._signer_record(request),
        )
        outcome = await alias.pipeline.run(ctx, self._env)
        if isinstance(outcome, Pending):
            log.info(
                "PENDING alias=%s transaction=%s: %s",
                alias.name,
                request.transaction_id,
                outcome.reason,
            )
            return self._answer_pending(keys, reply)
        return await self._issue_and_answer(alias, keys, outcome, reply)

    async def _issue_and_answer(
        self, alias: AliasRuntime, keys: ScepKeys, ctx: EnrollmentContext, reply: ReplyTo
    ) -> Answer:
        issued = await self._issue(alias, keys, ctx)
        chain = [issued]
        if alias.config.include_ca_certificate:
            chain.append(keys.ca.certificate)
        return await self._success(alias, keys, ctx.request, reply, chain)

    async def _poll(
        self, alias: AliasRuntime, keys: ScepKeys, request: PkiRequest, reply: ReplyTo
    ) -> Answer:
        """CertPoll (GetCertInitial): RFC 8894 3.3.3, EJBCA's state machine (POLL-02)."""
        # Only the requester's key finds its request; anyone else gets the unknown-tid answer.
        pending = await find_own_pending(self._store, alias.name, request)
        if pending is None:
            # POLL-01: a poll without a matching request MUST be rejected.
            raise ScepFailure(FailInfo.BAD_CERT_ID, "no request with this transactionID")
        now = self._clock()
        status = pending.status
        if status is PendingStatus.PENDING and now >= pending.expires_at:
            status = PendingStatus.EXPIRED
        if status is PendingStatus.PENDING:
            return self._answer_pending(keys, reply)
        if status in (PendingStatus.REJECTED, PendingStatus.EXPIRED):
            why = (
                f": {pending.reason}" if status is PendingStatus.REJECTED and pending.reason else ""
            )
            raise ScepFailure(
                FailInfo.BAD_REQUEST,
                f"the request was {status.value}{why}",
                detail=f"pending request {pending.id}",
            )
        if status is PendingStatus.ISSUED and pending.issued_serial is not None:
            # A resync after a lost answer (RFC 8894 5.2): the same certificate again.
            record = await self._store.get_certificate(pending.ca, pending.issued_serial)
            if record is not None:
                cert = x509.load_der_x509_certificate(record.der)
                return await self._success(alias, keys, request, reply, [cert])
        csr = stored_csr(pending)
        base = EnrollmentContext(
            alias=alias.name,
            ca=pending.ca,
            request=replace(request, csr=csr),
            now=now,
            pending_id=pending.id,
        )
        return await self._issue_and_answer(
            alias, keys, decode_decision(base, pending.decision), reply
        )

    async def _issue(
        self, alias: AliasRuntime, keys: ScepKeys, ctx: EnrollmentContext
    ) -> x509.Certificate:
        csr = ctx.request.csr
        if csr is None or ctx.subject is None:
            raise ScepFailure(FailInfo.BAD_REQUEST, "no subject for the certificate")
        for _ in range(_SERIAL_ATTEMPTS):
            serial = self._serials()
            try:
                cert = keys.ca.issuer.issue(
                    issue_request(
                        alias.certificate_profile,
                        subject=ctx.subject,
                        public_key=csr.public_key,
                        serial=serial,
                        now=ctx.now,
                        subject_alt_names=ctx.subject_alt_names,
                        key_id=keys.ca.key_id,
                    ),
                )
            except ValueError as exc:
                # cryptography refuses to encode what the CSR carried (a PrintableString
                # with characters it does not allow, a malformed SAN): the request's fault.
                raise ScepFailure(
                    FailInfo.BAD_REQUEST,
                    "the requested subject or names cannot be put in a certificate",
                    detail=str(exc),
                ) from None
            record = CertificateRecord(
                ca=keys.ca.name,
                serial=serial,
                # What was issued, without parsing the new certificate back (faster, and
                # cryptography warns on every odd name a device sends, like C=USA).
                subject_dn=ctx.subject.rfc4514_string(),
                issuer_dn=keys.ca.subject.rfc4514_string(),
                username=ctx.username,
                transaction_id=ctx.request.transaction_id,
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                der=cert.public_bytes(serialization.Encoding.DER),
                issued_at=ctx.now,
                alias=alias.name,
            )
            try:
                await self._store.record_issuance(
                    record,
                    claim_entity=ctx.claim_entity,
                    upsert_entity=ctx.upsert_entity,
                    complete_pending=ctx.pending_id,
                    expect_latest=self._expect_latest(ctx),
                )
            except SerialCollision:
                continue  # RFC 5280 4.1.2.2: serials are unique per CA; draw another
            except EntityNotEnrollable as exc:
                # A concurrent request with the same code claimed the entity first.
                raise ScepFailure(
                    FailInfo.BAD_REQUEST,
                    "the enrollment code has already been used; ask an operator to reset it",
                    detail=exc.detail,
                ) from None
            except EntityExists as exc:
                # RA mode must not take over an end entity an operator registered.
                raise ScepFailure(
                    FailInfo.BAD_REQUEST,
                    "this name belongs to a registered end entity",
                    detail=exc.detail,
                ) from None
            except LatestCertificateChanged as exc:
                # The policies' checks, repeated atomically: a concurrent request for the
                # same end entity (on any replica) was issued first.
                raise ScepFailure(
                    FailInfo.BAD_REQUEST,
                    "the end entity already holds a valid certificate; renew with it"
                    if exc.expected is None
                    else "a newer certificate exists; renew with that one",
                    detail=exc.detail,
                ) from None
            except PendingNotApproved:
                # A concurrent poll of the same approved request issued first: answer with
                # that certificate (the key is the same), not with a second one.
                return await self._issued_for_pending(ctx.pending_id)
            self._metrics.inc("scep_certificates_issued_total", alias=alias.name, ca=keys.ca.name)
            log.info(
                "issued serial=%x subject=%s entity=%s transaction=%s ca=%s request=%s%s",
                serial,
                record.subject_dn,
                ctx.username,
                ctx.request.transaction_id,
                keys.ca.name,
                ctx.request.message_type.name,
                f" renews={ctx.renewal_of.serial:x}" if ctx.renewal_of else "",
            )
            return cert
        raise ScepFailure(FailInfo.BAD_REQUEST, "could not allocate a serial number")

    @staticmethod
    def _expect_latest(ctx: EnrollmentContext) -> ExpectLatest | None:
        if ctx.renewal_of is not None:
            return ExpectLatest(ctx.renewal_of.serial, ctx.now)
        if ctx.upsert_entity is not None:  # RA mode: one valid certificate per end entity
            return ExpectLatest(None, ctx.now)
        return None  # CA mode: the one-time code (claim_entity) already guards it

    async def _issued_for_pending(self, pending_id: int | None) -> x509.Certificate:
        pending = await self._store.get_pending(pending_id) if pending_id is not None else None
        if pending is not None and pending.issued_serial is not None:
            record = await self._store.get_certificate(pending.ca, pending.issued_serial)
            if record is not None:
                return x509.load_der_x509_certificate(record.der)
        raise ScepFailure(
            FailInfo.BAD_REQUEST,
            "the request is no longer approved",
            detail=f"pending request {pending_id}: {pending.status if pending else 'gone'}",
        )

    async def _get_crl(
        self, alias: AliasRuntime, keys: ScepKeys, request: PkiRequest, reply: ReplyTo
    ) -> Answer:
        """GetCRL (RFC 8894 3.3.5): the CRL of the CA that issued the named certificate."""
        wanted = request.issuer_and_serial
        assert wanted is not None  # decode fills it for GetCRL
        for served in alias.keys:
            if served.ca.subject == wanted.issuer:
                record = await self._store.get_certificate(served.ca.name, wanted.serial)
                # A rollover keeps the CA name and DN: the CRL is the issuing key's.
                if record is not None and issued_by(record.der, served.ca.issuer):
                    crl = await self._crls.current(served.ca)
                    return await self._success(alias, keys, request, reply, [], crls=[crl])
        raise ScepFailure(FailInfo.BAD_CERT_ID, "no such certificate at this CA")

    async def _get_cert(
        self, alias: AliasRuntime, keys: ScepKeys, request: PkiRequest, reply: ReplyTo
    ) -> Answer:
        wanted = request.issuer_and_serial
        assert wanted is not None  # decode fills it for GetCert
        record = await self._store.find_certificate_by_issuer_dn(
            wanted.issuer.rfc4514_string(), wanted.serial
        )
        cert = x509.load_der_x509_certificate(record.der) if record else None
        # GetCert returns a certificate to its holder only: the request must be signed with
        # the certificate's key. Otherwise answer exactly as for an unknown certificate.
        if cert is None or cert.public_key() != request.signer.public_key:
            raise ScepFailure(FailInfo.BAD_CERT_ID, "no such certificate for this requester")
        return await self._success(alias, keys, request, reply, [cert])

    async def _success(
        self,
        alias: AliasRuntime,
        keys: ScepKeys,
        request: PkiRequest,
        reply: ReplyTo,
        certificates: list[x509.Certificate],
        *,
        crls: list[bytes] | None = None,
    ) -> Answer:
        cipher = self._cipher(alias, request)
        body = encode.success(
            reply,
            keys.signer,
            recipient=request.signer,
            cipher=cipher,
            certificates=[c.public_bytes(serialization.Encoding.DER) for c in certificates],
            crls=crls or [],
            random=self._random(encode.random_bytes_needed(cipher)),
            now=self._clock(),
        )
        return Answer(body, "SUCCESS")

    def _answer_pending(self, keys: ScepKeys, reply: ReplyTo) -> Answer:
        body = encode.pending(
            reply, keys.signer, random=self._random(encode.NONCE_BYTES), now=self._clock()
        )
        return Answer(body, "PENDING")
