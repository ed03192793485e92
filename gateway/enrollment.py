"""PKIOperation: the use case, and the only place a ScepFailure becomes a FAILURE CertRep."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.ca.profile import issue_request
from gateway.errors import FailInfo, ScepFailure
from gateway.metrics import Metrics
from gateway.policy.context import EnrollmentContext, Pending, PolicyEnv
from gateway.registry import AliasRuntime, ScepKeys
from gateway.scep import decode, encode
from gateway.scep.crypto import DIGESTS, RESPONSE_CIPHER
from gateway.scep.csr import load_name
from gateway.scep.messages import MessageType, PkiRequest, ReplyTo, SignedMessage
from gateway.store import CertificateRecord, EntityNotEnrollable, SerialCollision, Store

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
    ) -> None:
        self._store = store
        self._metrics = metrics or Metrics()
        self._clock = clock
        self._random = random
        self._serials = serials
        self._env = PolicyEnv(store=store, clock=clock, random=random)

    async def pki_operation(self, alias: AliasRuntime, body: bytes) -> Answer:
        # Unparseable: nobody to answer to, MalformedRequest -> HTTP 400 at the edge.
        message = decode.read_signed_message(body)
        keys = alias.keys[0]
        reply = ReplyTo(message.transaction_id, message.sender_nonce, self._digest(alias, message))
        try:
            request = await asyncio.to_thread(
                decode.open_request, message, [k.decrypter for k in alias.keys]
            )
            keys = alias.keys[request.recipient_index]
            self._check_time(alias, request)
            return await self._dispatch(alias, keys, request, reply)
        except ScepFailure as failure:
            log.info(
                "FAILURE alias=%s transaction=%s failInfo=%s: %s",
                alias.name,
                message.transaction_id,
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

    def _check_time(self, alias: AliasRuntime, request: PkiRequest) -> None:
        skew = alias.config.max_signing_time_skew_seconds
        if skew is None or request.signing_time is None:
            return
        if abs((self._clock() - request.signing_time).total_seconds()) > skew:
            raise ScepFailure(
                FailInfo.BAD_TIME,
                "signingTime is too far from the server's clock",
                detail=f"signingTime={request.signing_time.isoformat()}",
            )

    async def _dispatch(
        self, alias: AliasRuntime, keys: ScepKeys, request: PkiRequest, reply: ReplyTo
    ) -> Answer:
        if not isinstance(request.signer.public_key, rsa.RSAPublicKey):
            # RFC 8894 3.1: answers are encrypted to the signer's key by RSA key transport.
            raise ScepFailure(FailInfo.BAD_ALG, "the signer certificate must carry an RSA key")
        kind = request.message_type
        if kind in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
            return await self._enroll(alias, keys, request, reply)
        if kind is MessageType.GET_CERT:
            return await self._get_cert(alias, keys, request, reply)
        if kind is MessageType.CERT_POLL:
            # POLL-01: nothing is pending in CA mode; a poll for an unknown request is refused.
            raise ScepFailure(FailInfo.BAD_CERT_ID, "no pending request with this transactionID")
        raise ScepFailure(
            FailInfo.BAD_REQUEST, "GetCRL is not offered here; use the CRL distribution point"
        )

    async def _signer_record(self, request: PkiRequest) -> CertificateRecord | None:
        """The certificate we issued that signed this request (a renewal candidate), if any."""
        signer = request.signer
        try:
            issuer = load_name(asn1_x509.Name.load(signer.issuer_der)).rfc4514_string()
        except ValueError:
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
            return self._answer_pending(keys, reply)
        issued = await self._issue(alias, keys, outcome)
        chain = [issued]
        if alias.config.include_ca_certificate:
            chain.append(keys.ca.certificate)
        return await self._success(alias, keys, request, reply, chain)

    async def _issue(
        self, alias: AliasRuntime, keys: ScepKeys, ctx: EnrollmentContext
    ) -> x509.Certificate:
        csr = ctx.request.csr
        if csr is None or ctx.subject is None:
            raise ScepFailure(FailInfo.BAD_REQUEST, "no subject for the certificate")
        for _ in range(_SERIAL_ATTEMPTS):
            serial = self._serials()
            cert = await asyncio.to_thread(
                keys.ca.issuer.issue,
                issue_request(
                    alias.certificate_profile,
                    subject=ctx.subject,
                    public_key=csr.public_key,
                    serial=serial,
                    now=ctx.now,
                    subject_alt_names=ctx.subject_alt_names,
                ),
            )
            record = CertificateRecord(
                ca=keys.ca.name,
                serial=serial,
                subject_dn=cert.subject.rfc4514_string(),
                issuer_dn=cert.issuer.rfc4514_string(),
                username=ctx.username,
                transaction_id=ctx.request.transaction_id,
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                der=cert.public_bytes(serialization.Encoding.DER),
                issued_at=ctx.now,
            )
            try:
                await self._store.record_issuance(record, claim_entity=ctx.claim_entity)
            except SerialCollision:
                continue  # RFC 5280 4.1.2.2: serials are unique per CA; draw another
            except EntityNotEnrollable as exc:
                # A concurrent request with the same code claimed the entity first.
                raise ScepFailure(
                    FailInfo.BAD_REQUEST,
                    "the enrollment code has already been used; ask an operator to reset it",
                    detail=exc.detail,
                ) from None
            self._metrics.inc("scep_certificates_issued_total", alias=alias.name, ca=keys.ca.name)
            log.info(
                "issued serial=%x subject=%s entity=%s transaction=%s ca=%s",
                serial,
                record.subject_dn,
                ctx.username,
                ctx.request.transaction_id,
                keys.ca.name,
            )
            return cert
        raise ScepFailure(FailInfo.BAD_REQUEST, "could not allocate a serial number")

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
    ) -> Answer:
        cipher = self._cipher(alias, request)
        body = await asyncio.to_thread(
            encode.success,
            reply,
            keys.signer,
            recipient=request.signer,
            cipher=cipher,
            certificates=[c.public_bytes(serialization.Encoding.DER) for c in certificates],
            random=self._random(encode.random_bytes_needed(cipher)),
            now=self._clock(),
        )
        return Answer(body, "SUCCESS")

    def _answer_pending(self, keys: ScepKeys, reply: ReplyTo) -> Answer:
        body = encode.pending(
            reply, keys.signer, random=self._random(encode.NONCE_BYTES), now=self._clock()
        )
        return Answer(body, "PENDING")
