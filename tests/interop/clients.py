"""Drive real third-party SCEP clients against a SCEP server, for the interop tests.

Two client lineages are driven, both as the installed Debian binaries:

* micromdm ``scepclient`` 2.1.0 (package ``scep``): :func:`scepclient_enroll`,
  :func:`scepclient_renew`;
* certmonger 0.79.17 (package ``certmonger``), through its real daemon on a
  private socket, without D-Bus: :class:`Certmonger`; plus a thin wrapper
  around its ``scep-submit`` helper for GetCACaps/GetCACert: :func:`scep_submit`.

Everything here was checked against micromdm's ``scepserver`` 2.1.0 behind a
recording proxy, with the URL form ``http://127.0.0.1:<port>/scep/<alias>/pkiclient.exe``.
What each client sent, as observed:

* scepclient: GetCACert then GetCACaps, both GET with no ``message``
  parameter; PKIOperation as POST with ``Content-Type: application/octet-stream``
  and ``User-Agent: Go-http-client/1.1`` (POST because POSTPKIOperation or
  SCEPStandard is advertised); content encryption DES-CBC (even though AES
  was advertised); RSA PKCS#1 v1.5 key transport; digest SHA-1 with the
  SignerInfo signatureAlgorithm ``sha1WithRSAEncryption``. PKCSReq (19) is
  signed by a self-signed ``CN=SCEP SIGNER, O=scep-client``; RenewalReq (17) by
  the old certificate. transactionID = base64(SHA-1(public key)), so enrollment
  and renewal share it.
* certmonger: GetCACaps and GetCACert with ``message=0`` (then ``message=1``
  because a single ``application/x-x509-ca-cert`` came back), no User-Agent;
  PKIOperation ALWAYS as GET ``?operation=PKIOperation&message=<url-encoded
  base64>`` (ignores POSTPKIOperation), right after another GetCACaps;
  content encryption AES-256-CBC, RSA PKCS#1 v1.5 key transport, digest
  SHA-256 with SignerInfo signatureAlgorithm ``rsaEncryption``. Always PKCSReq
  (19): the first one signed by a self-signed certificate with the CSR subject;
  with ``Renewal`` advertised, resubmit and rekey are signed by the current
  CA-issued certificate. transactionID is a long decimal number derived from
  the key: a resubmit (same key) REPEATS it, a rekey gets a new one.

scepserver 2.1.0 answered every CertRep with DES-CBC and SHA-1.

The module only starts processes it owns, always in their own session, and
kills their whole process group on timeout or exit.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

__all__ = [
    "CERTMONGER",
    "CERTMONGER_FAILINFO_TEXT",
    "GETCERT",
    "SCEPCLIENT",
    "SCEP_SUBMIT",
    "TERMINAL_STATES",
    "Certmonger",
    "CertmongerError",
    "ClientRun",
    "RequestStatus",
    "ScepSubmitStatus",
    "scep_submit",
    "scepclient_enroll",
    "scepclient_renew",
    "tool_available",
]

SCEPCLIENT: Final = "/usr/bin/scepclient"
CERTMONGER: Final = "/usr/sbin/certmonger"
GETCERT: Final = "/usr/bin/getcert"
# Debian installs the helper under /usr/lib/certmonger, not /usr/libexec/certmonger.
SCEP_SUBMIT: Final = "/usr/lib/certmonger/scep-submit"

# The C locale keeps certmonger's gettext-translated messages (ca-error) verbatim.
_C_LOCALE: Final = {"LC_ALL": "C", "LANG": "C"}


def tool_available(path: str) -> bool:
    """True if the client binary at ``path`` exists and is executable (for skip markers)."""
    return os.access(path, os.X_OK)


# --------------------------------------------------------------------------- processes


def _kill_group(pgid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _run(
    cmd: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in its own session; on timeout kill its process group and re-raise."""
    proc = subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=None if env is None else dict(env),
        cwd=cwd,
        start_new_session=True,
        encoding="utf-8",
        errors="replace",
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(list(cmd), timeout, output=out, stderr=err) from None
    except BaseException:
        _kill_group(proc.pid)
        proc.wait()
        raise
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------- scepclient


@dataclass(frozen=True)
class ClientRun:
    """One run of a client binary.

    ``certificate_pem`` is the certificate file's content if the client wrote
    a new one during this run (scepclient writes it only on SUCCESS), else None.
    """

    returncode: int
    stdout: str
    stderr: str
    certificate_pem: bytes | None
    command: tuple[str, ...] = ()
    key_file: Path | None = None
    certificate_file: Path | None = None

    @property
    def ok(self) -> bool:
        """The client exited 0 and wrote a certificate."""
        return self.returncode == 0 and self.certificate_pem is not None

    @property
    def fail_info(self) -> str | None:
        """scepclient's failInfo name from a FAILURE CertRep, e.g. ``"badRequest"``."""
        match = _SCEPCLIENT_FAILURE.search(self.stdout)
        return match["fail_info"] if match else None

    @property
    def fail_info_code(self) -> int | None:
        """scepclient's failInfo number from a FAILURE CertRep, e.g. ``2``."""
        match = _SCEPCLIENT_FAILURE.search(self.stdout)
        return int(match["fail_info_code"]) if match else None

    @property
    def message_type(self) -> str | None:
        """The request type named in scepclient's failure line: ``PKCSReq`` or ``RenewalReq``."""
        match = _SCEPCLIENT_FAILURE.search(self.stdout)
        return match["message_type"] if match else None


# scepclient prints exactly one line on stdout for a FAILURE CertRep and exits 1:
#   PKCSReq (19) request failed, failInfo: badRequest (2)
#   RenewalReq (17) request failed, failInfo: badRequest (2)
# failInfo names: badAlg (0), badMessageCheck (1), badRequest (2), badTime (3), badCertID (4).
_SCEPCLIENT_FAILURE: Final = re.compile(
    r"^(?P<message_type>\w+) \((?P<message_type_code>\d+)\) request failed, "
    r"failInfo: (?P<fail_info>\w+) \((?P<fail_info_code>\d+)\)\s*$",
    re.MULTILINE,
)

SCEPCLIENT_KEY_FILE: Final = "key.pem"
SCEPCLIENT_CERT_FILE: Final = "cert.pem"
# scepclient caches these next to the private key (dirname(-private-key)):
# csr.pem is REUSED if present (its subject and challengePassword win over the
# flags) and self.pem (the self-signed "SCEP SIGNER") is removed only on success.
_SCEPCLIENT_CACHE_FILES: Final = ("csr.pem", "self.pem")


def _scepclient(
    server_url: str,
    workdir: Path,
    *,
    common_name: str,
    challenge: str | None,
    key_size: int,
    timeout: float,
    extra_args: Sequence[str],
    debug: bool,
) -> ClientRun:
    workdir = workdir.resolve()
    key_file = workdir / SCEPCLIENT_KEY_FILE
    cert_file = workdir / SCEPCLIENT_CERT_FILE
    for name in _SCEPCLIENT_CACHE_FILES:
        (workdir / name).unlink(missing_ok=True)
    before = _read_or_none(cert_file)
    cmd = [
        SCEPCLIENT,
        "-server-url",
        server_url,
        "-private-key",
        str(key_file),
        "-certificate",
        str(cert_file),
        "-cn",
        common_name,
        "-keySize",
        str(key_size),
    ]
    if challenge is not None:
        cmd += ["-challenge", challenge]
    if debug:
        cmd.append("-debug")
    cmd += list(extra_args)
    done = _run(cmd, timeout=timeout, cwd=workdir, env={**os.environ, **_C_LOCALE})
    after = _read_or_none(cert_file)
    return ClientRun(
        returncode=done.returncode,
        stdout=done.stdout,
        stderr=done.stderr,
        certificate_pem=after if after is not None and after != before else None,
        command=tuple(cmd),
        key_file=key_file,
        certificate_file=cert_file,
    )


def scepclient_enroll(
    server_url: str,
    workdir: Path,
    *,
    common_name: str,
    challenge: str | None,
    key_size: int = 2048,
    timeout: float = 60,
    extra_args: Sequence[str] = (),
    debug: bool = True,
) -> ClientRun:
    """Enroll with micromdm's scepclient (a PKCSReq, messageType 19).

    Runs, with ``workdir`` as the current directory::

        /usr/bin/scepclient -server-url <server_url> -private-key <workdir>/key.pem
            -certificate <workdir>/cert.pem -cn <common_name> -keySize <key_size>
            [-challenge <challenge>] [-debug] [extra_args...]

    ``server_url`` is used AS IS: scepclient appends ``?operation=...`` to it and
    adds no ``/pkiclient.exe``, so pass the full endpoint, e.g.
    ``http://127.0.0.1:<port>/scep/<alias>/pkiclient.exe`` (micromdm's own
    scepserver serves exactly ``/scep``).

    The key (PKCS#1 ``RSA PRIVATE KEY`` PEM, created if missing, mode 0644 under
    umask 022) is
    ``workdir/key.pem``; the issued certificate (PEM, written only on SUCCESS)
    is ``workdir/cert.pem``. A pre-existing key is reused, but it must be PKCS#1:
    a PKCS#8 ``PRIVATE KEY`` (what certmonger writes) fails with ``unmatched type
    or headers`` on stdout. The CSR subject is ``C=US, O=scep-client, OU=MDM,
    CN=<common_name>`` unless ``extra_args`` pass ``-country/-organization/-ou``;
    the challenge goes into the CSR's challengePassword attribute. Stale
    ``csr.pem``/``self.pem`` caches in ``workdir`` are deleted first so that the
    flags take effect.

    SUCCESS: exit 0, stdout empty; stderr (logfmt) contains::

        level=info pkiStatus=SUCCESS msg="server returned a certificate."

    FAILURE CertRep (e.g. a wrong challenge against scepserver): exit 1 and
    stdout is exactly ``PKCSReq (19) request failed, failInfo: badRequest (2)``
    (see :attr:`ClientRun.fail_info`). A non-200 HTTP answer gives ``http
    request failed with status <status>, msg: <body>``. On PENDING scepclient
    sleeps 30 s and polls forever; ``timeout`` bounds that (the process group is
    killed and :class:`subprocess.TimeoutExpired` raised).

    Raises :class:`FileExistsError` if ``workdir/cert.pem`` exists, because
    scepclient would then send a RenewalReq instead; use :func:`scepclient_renew`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if (workdir / SCEPCLIENT_CERT_FILE).exists():
        msg = f"{workdir / SCEPCLIENT_CERT_FILE} exists: scepclient would send a RenewalReq"
        raise FileExistsError(msg)
    return _scepclient(
        server_url,
        workdir,
        common_name=common_name,
        challenge=challenge,
        key_size=key_size,
        timeout=timeout,
        extra_args=extra_args,
        debug=debug,
    )


def scepclient_renew(
    server_url: str,
    workdir: Path,
    *,
    common_name: str,
    challenge: str | None = None,
    timeout: float = 60,
    extra_args: Sequence[str] = (),
    debug: bool = True,
) -> ClientRun:
    """Renew with micromdm's scepclient: a RenewalReq (messageType 17), SAME key.

    Same command line as :func:`scepclient_enroll`, in a ``workdir`` that already
    holds ``key.pem`` and ``cert.pem`` from an earlier enrollment. Given an
    existing ``-certificate`` file scepclient sends RenewalReq (17) instead of
    PKCSReq, signed by that certificate and its key (no self-signed signer), with
    the same transactionID as the enrollment (it is derived from the public
    key). The CSR is rebuilt from ``common_name``/``challenge``; the challenge is
    only in the CSR (pass None to leave it out). On SUCCESS the new certificate
    replaces ``cert.pem`` and :attr:`ClientRun.certificate_pem` holds it; on
    FAILURE stdout is e.g. ``RenewalReq (17) request failed, failInfo:
    badRequest (2)`` and ``cert.pem`` is left unchanged. (scepserver refuses
    renewal of a DN that exists and is not within ``-allowrenew`` days of expiry:
    ``DN /C=US/O=scep-client/OU=MDM/CN=... already exists`` in its log, badRequest
    on the wire.)
    """
    for name in (SCEPCLIENT_KEY_FILE, SCEPCLIENT_CERT_FILE):
        if not (workdir / name).is_file():
            msg = f"renewal needs {workdir / name} from an earlier enrollment"
            raise FileNotFoundError(msg)
    return _scepclient(
        server_url,
        workdir,
        common_name=common_name,
        challenge=challenge,
        key_size=2048,
        timeout=timeout,
        extra_args=extra_args,
        debug=debug,
    )


# --------------------------------------------------------------------------- certmonger

# What certmonger's scep-submit prints, and so what ``getcert list`` shows as
# ``ca-error`` with status CA_REJECTED, for each failInfo of a FAILURE CertRep
# (0-3 and a missing failInfo seen in the 0.79.17 binary; badRequest observed
# against scepserver with a wrong challenge; 4 falls through to the generic text
# in certmonger's source).
CERTMONGER_FAILINFO_TEXT: Final[Mapping[str, str]] = {
    "badAlg": "Unrecognized or unsupported algorithm identifier in client request.",
    "badMessageCheck": "Integrity check of client request failed at server.",
    "badRequest": "Transaction either is not permitted or is not supported by server.",
    "badTime": "Clock skew too great.",
    "badCertID": 'Server returned failure code "4".',
    "": "Unspecified failure at server.",
}

# States in which a request stays until something (time, resubmit) changes it.
TERMINAL_STATES: Final = frozenset(
    {
        "MONITORING",
        "CA_REJECTED",
        "CA_UNREACHABLE",
        "CA_UNCONFIGURED",
        "NEED_GUIDANCE",
        "NEED_CA",
        "NEED_SCEP_RSA_CLIENT_KEY",
        "NEED_KEY_GEN_PERMS",
        "NEED_KEY_GEN_PIN",
        "NEED_KEY_GEN_TOKEN",
        "NEED_KEYINFO_READ_PIN",
        "NEED_KEYINFO_READ_TOKEN",
        "NEED_CSR_GEN_PIN",
        "NEED_CSR_GEN_TOKEN",
        "NEED_SCEP_GEN_PIN",
        "NEED_SCEP_GEN_TOKEN",
        "NEED_CERTSAVE_PERMS",
        "NEED_CERTSAVE_PIN",
        "NEED_CERTSAVE_TOKEN",
    }
)

# AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
_MAX_SOCKET_PATH: Final = 100
_LOCATION: Final = re.compile(r"location='([^']*)'")
_NEW_REQUEST: Final = re.compile(r'New signing request "([^"]+)" added')


class CertmongerError(RuntimeError):
    """A getcert command failed, or the daemon did not come up; carries the log tail."""


@dataclass(frozen=True)
class RequestStatus:
    """One ``getcert list -i <id>`` snapshot of a request.

    ``fields`` holds every ``key: value`` line as printed (``status``,
    ``ca-error``, ``stuck``, ``CA``, ``issuer``, ``subject``, ``expires``,
    ``key usage``, ``eku``, ...); ``raw`` is the whole output.
    """

    request_id: str
    status: str
    ca_error: str | None
    stuck: bool
    ca: str | None
    key_file: Path | None
    certificate_file: Path | None
    subject: str | None
    issuer: str | None
    fields: Mapping[str, str] = field(default_factory=dict)
    raw: str = ""

    @property
    def certificate_pem(self) -> bytes | None:
        """The certificate file's current content (None if certmonger wrote none)."""
        return None if self.certificate_file is None else _read_or_none(self.certificate_file)


def _parse_list(request_id: str, text: str) -> RequestStatus:
    fields: dict[str, str] = {}
    last: str | None = None
    seen = False
    for line in text.splitlines():
        if line.startswith("Request ID "):
            if seen:
                break
            seen = True
            continue
        if not seen:
            continue
        if line.startswith("\t") and ":" in line:
            key, _, value = line.strip().partition(":")
            last = key.strip()
            fields.setdefault(last, value.strip())
        elif last is not None and line.strip():
            fields[last] += "\n" + line.strip()  # a value that spans lines
    if not seen or "status" not in fields:
        msg = f"certmonger does not track a request {request_id!r}:\n{text}"
        raise KeyError(msg)

    def location(key: str) -> Path | None:
        match = _LOCATION.search(fields.get(key, ""))
        return Path(match[1]) if match else None

    return RequestStatus(
        request_id=request_id,
        status=fields["status"],
        ca_error=fields.get("ca-error"),
        stuck=fields.get("stuck") == "yes",
        ca=fields.get("CA"),
        key_file=location("key pair storage"),
        certificate_file=location("certificate"),
        subject=fields.get("subject") or None,
        issuer=fields.get("issuer") or None,
        fields=fields,
        raw=text,
    )


def _parse_record(text: str) -> dict[str, str]:
    """certmonger's own store format: ``key=value`` lines, continuations start with a space."""
    record: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if line.startswith(" ") and last is not None:
            record[last] += "\n" + line[1:]
        elif "=" in line:
            last, _, value = line.partition("=")
            record[last] = value
    return record


class Certmonger:
    """A private certmonger daemon: own state directories, own socket, no D-Bus.

    Use as a context manager; ``__enter__`` runs (in ``workdir``, new session)::

        /usr/sbin/certmonger -n -L -P <socket> -d <debug_level> -p <workdir>/certmonger.pid

    ``-n`` stays in the foreground and logs to stderr (captured in
    ``workdir/certmonger.log``), ``-L`` listens only on the private socket and
    never touches a bus, ``-P`` is the socket path (an absolute path, D-Bus
    address ``unix:path=<socket>``). The daemon's environment moves all state
    into ``workdir/state`` (none of these is a command-line option)::

        CERTMONGER_CONFIG_DIR=<state>/config       certmonger.conf (written here)
        CERTMONGER_REQUESTS_DIR=<state>/requests   one file per request
        CERTMONGER_CAS_DIR=<state>/cas             one file per CA (+ 4 built-in ones)
        CERTMONGER_LOCAL_CA_DIR=<state>/local      the built-in "local" CA's key
        CERTMONGER_TMPDIR=<state>/tmp
        CERTMONGER_SYSTEM_LOCK_FILE=<state>/lock   else /var/lib/certmonger/lock
        TMPDIR=<state>/tmp  HOME=<state>/home  LC_ALL=C  LANG=C

    ``getcert`` reaches it through ``CERTMONGER_PVT_ADDRESS=unix:path=<socket>``
    (``getcert -s`` means the *session bus*, not a socket). The same state
    variables are passed to getcert too, so nothing can fall back to
    /var/lib/certmonger. ``__exit__`` (and any failure in ``__enter__``) sends
    SIGTERM to the daemon's process group, then SIGKILL after 10 s, which also
    takes its helpers (scep-submit, key generation) with it.

    certmonger quirks found against micromdm's scepserver 2.1.0:

    * certmonger clears the environment of every helper and forked worker
      (it keeps only HOME, PATH, SHELL, TERM, TMPDIR, CERTMONGER_CONFIG_DIR,
      CERTMONGER_LOCAL_CA_DIR, CERTMONGER_PVT_ADDRESS and
      DBUS_SESSION_BUS_ADDRESS), so ``OPENSSL_CONF`` cannot reach them. With
      OpenSSL 3 it therefore cannot decrypt a CertRep enveloped with DES
      (scepserver 2.1.0 always answers DES): the daemon log shows ``Error
      decrypting PKCS#7 with pkey`` / ``error:0308010C:digital envelope
      routines::unsupported`` and the request ends in NEED_GUIDANCE with no
      ca-error. A server must answer certmonger with AES (it sends AES-256-CBC).
      To validate against scepserver anyway, run the daemon in a private mount
      namespace where /etc/ssl/openssl.cnf activates the legacy provider.
    * A CertRep signed by a CA certificate without an RA (scepserver) fails
      verification unless that certificate is pinned with ``-N``
      (``ca_cert_pem_file``): CA_UNREACHABLE, ca-error ``Error: failed to verify
      signature on server response. error:10800075:PKCS7 routines::certificate
      verify error``.
    * A FAILURE CertRep gives CA_REJECTED with the text of
      :data:`CERTMONGER_FAILINFO_TEXT`, e.g. a wrong challenge against scepserver:
      ``Transaction either is not permitted or is not supported by server.``
    * An unreachable CA gives up at once on loopback (connection refused):
      CA_UNCONFIGURED with ca-error ``No RA certificate (-r) given, and no
      default known.`` (GetCACert never succeeded). If the CA certificates are
      known but PKIOperation cannot connect: CA_UNREACHABLE, ``Error 7
      connecting to <url>: Couldn't connect to server.``. Both took under a
      second. certmonger retries CA_UNREACHABLE only much later (the log said
      "Will revisit ... in 604800 seconds"); use :meth:`resubmit`.
    * Against a live loopback server a whole enrollment (key generation
      included) reached MONITORING or CA_REJECTED in 0.3-1.5 s.
    * PKIOperation is always a GET with ``message=<url-encoded base64>``;
      GetCACaps/GetCACert carry ``message=0`` (``ca_identifier`` changes it), and
      a single ``application/x-x509-ca-cert`` answer makes it walk
      ``message=1,2,...``. It ignores the HTTP status of a PKIOperation answer
      and requires ``Content-Type: application/x-pki-message`` (else
      CA_UNREACHABLE ``Server reply was of unexpected MIME type "..."``).
    * The daemon re-fetches GetCACaps/GetCACert for every SCEP CA at start-up.
    * Key files are unencrypted PKCS#8 ``PRIVATE KEY`` PEM, mode 0600; the
      certificate file is one PEM certificate, mode 0600. The challenge is stored
      in clear in the request file (``template_challenge_password=``).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        debug_level: int = 1,
        start_timeout: float = 15,
        command_timeout: float = 30,
    ) -> None:
        self.workdir = workdir.resolve()
        self.state_dir = self.workdir / "state"
        self.config_dir = self.state_dir / "config"
        self.requests_dir = self.state_dir / "requests"
        self.cas_dir = self.state_dir / "cas"
        self.local_ca_dir = self.state_dir / "local"
        self.tmp_dir = self.state_dir / "tmp"
        self.home_dir = self.state_dir / "home"
        self.lock_file = self.state_dir / "lock"
        self.pid_file = self.workdir / "certmonger.pid"
        self.log_file = self.workdir / "certmonger.log"
        self.debug_level = debug_level
        self.start_timeout = start_timeout
        self.command_timeout = command_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._socket_dir: Path | None = None  # a short temp dir, if workdir is too deep
        self.socket_path = self.workdir / "certmonger.sock"

    # ---------------------------------------------------------------- lifecycle

    @property
    def state_env(self) -> dict[str, str]:
        """The variables that move certmonger's state into ``workdir/state``."""
        return {
            "CERTMONGER_CONFIG_DIR": str(self.config_dir),
            "CERTMONGER_REQUESTS_DIR": str(self.requests_dir),
            "CERTMONGER_CAS_DIR": str(self.cas_dir),
            "CERTMONGER_LOCAL_CA_DIR": str(self.local_ca_dir),
            "CERTMONGER_TMPDIR": str(self.tmp_dir),
            "CERTMONGER_SYSTEM_LOCK_FILE": str(self.lock_file),
            "TMPDIR": str(self.tmp_dir),
            "HOME": str(self.home_dir),
            **_C_LOCALE,
        }

    @property
    def address(self) -> str:
        """The D-Bus address getcert needs in ``CERTMONGER_PVT_ADDRESS``."""
        return f"unix:path={self.socket_path}"

    def _base_env(self) -> dict[str, str]:
        drop = ("CERTMONGER_", "DBUS_", "LC_", "LANG")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env.update(self.state_env)
        return env

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the daemon and wait (bounded) until getcert can talk to it."""
        if self._proc is not None:
            msg = "certmonger already started"
            raise RuntimeError(msg)
        for directory in (
            self.workdir,
            self.config_dir,
            self.requests_dir,
            self.cas_dir,
            self.local_ca_dir,
            self.tmp_dir,
            self.home_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        conf = self.config_dir / "certmonger.conf"
        if not conf.exists():
            # No syslog notifications from a test daemon; defaults otherwise.
            conf.write_text(
                "[defaults]\nnotification_method = command\nnotification_destination = /bin/true\n"
            )
        if len(str(self.workdir / "certmonger.sock").encode()) > _MAX_SOCKET_PATH:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="cm-"))
            self.socket_path = self._socket_dir / "sock"
        else:
            self.socket_path = self.workdir / "certmonger.sock"
        self.socket_path.unlink(missing_ok=True)
        cmd = [
            CERTMONGER,
            "-n",
            "-L",
            "-P",
            str(self.socket_path),
            "-d",
            str(self.debug_level),
            "-p",
            str(self.pid_file),
        ]
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._base_env(),
                cwd=self.workdir,
                start_new_session=True,
            )
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                msg = f"certmonger exited with {self._proc.returncode}\n{self.log_tail()}"
                raise CertmongerError(msg)
            if self.socket_path.exists():
                probe = self._getcert(["list-cas"], timeout=5, check=False)
                if probe.returncode == 0:
                    return
            if time.monotonic() > deadline:
                msg = f"certmonger did not answer on {self.socket_path}\n{self.log_tail()}"
                raise CertmongerError(msg)
            time.sleep(0.1)

    def stop(self, timeout: float = 10) -> None:
        """Stop the daemon and everything in its process group. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                _kill_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _kill_group(proc.pid, signal.SIGKILL)
                    proc.wait()
            # Helpers it forked share its process group; sweep any that linger.
            _kill_group(proc.pid, signal.SIGKILL)
        self.socket_path.unlink(missing_ok=True)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def log_text(self) -> str:
        """The daemon's log so far (its stderr, at ``-d debug_level``)."""
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # ---------------------------------------------------------------- getcert

    def _getcert(
        self, args: Sequence[str], *, timeout: float | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = self._base_env()
        env["CERTMONGER_PVT_ADDRESS"] = self.address
        done = _run(
            [GETCERT, *args],
            timeout=self.command_timeout if timeout is None else timeout,
            env=env,
            cwd=self.workdir,
        )
        if check and done.returncode != 0:
            msg = (
                f"getcert {' '.join(args)} exited {done.returncode}\n"
                f"stdout: {done.stdout}\nstderr: {done.stderr}\n{self.log_tail()}"
            )
            raise CertmongerError(msg)
        return done

    def getcert(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``getcert <args>`` against this daemon (for anything not wrapped here)."""
        return self._getcert(args, check=check)

    def add_scep_ca(
        self,
        name: str,
        url: str,
        *,
        ca_cert_pem_file: Path | None = None,
        ra_cert_pem_file: Path | None = None,
        other_certs_pem_file: Path | None = None,
        ca_identifier: str | None = None,
        non_renewal: bool = False,
        wait: bool = True,
        timeout: float = 15,
    ) -> None:
        """Add a SCEP CA: ``getcert add-scep-ca -c <name> -u <url> [-N|-r|-I <pem>] [-i id] [-n]``.

        ``url`` is the full endpoint (``.../pkiclient.exe``); scep-submit appends
        ``?operation=...``. ``ca_cert_pem_file`` is ``-N`` (pins the SCEP CA
        certificate used to verify CertReps), ``ra_cert_pem_file`` is ``-r``,
        ``other_certs_pem_file`` is ``-I``, ``ca_identifier`` is ``-i`` (the
        ``message=`` of GetCACaps/GetCACert, default ``0``), ``non_renewal`` is
        ``-n`` (never sign a rekey PKCSReq with the old certificate even if
        ``Renewal`` is advertised). All certificate files are PEM.

        certmonger fetches GetCACaps and GetCACert in the background. With
        ``wait`` this returns once ``getcert list-cas`` shows the CA certificate
        thumbprint, else raises :class:`TimeoutError` after ``timeout`` seconds;
        pass ``wait=False`` for a CA that is expected to be unreachable.
        """
        args = ["add-scep-ca", "-c", name, "-u", url]
        if ca_cert_pem_file is not None:
            args += ["-N", str(ca_cert_pem_file.resolve())]
        if ra_cert_pem_file is not None:
            args += ["-r", str(ra_cert_pem_file.resolve())]
        if other_certs_pem_file is not None:
            args += ["-I", str(other_certs_pem_file.resolve())]
        if ca_identifier is not None:
            args += ["-i", ca_identifier]
        if non_renewal:
            args.append("-n")
        self._getcert(args)
        if not wait:
            return
        deadline = time.monotonic() + timeout
        while True:
            listed = self._getcert(["list-cas", "-c", name], check=False)
            if "certificate thumbprint" in listed.stdout:
                return
            if time.monotonic() > deadline:
                msg = (
                    f"certmonger did not fetch the certificates of CA {name!r} ({url}) "
                    f"in {timeout}s:\n{listed.stdout}\n{self.log_tail()}"
                )
                raise TimeoutError(msg)
            time.sleep(0.2)

    def ca_record(self, name: str) -> dict[str, str]:
        """certmonger's stored record of CA ``name``.

        Keys include ``ca_capabilities`` (comma-separated, as fetched by
        GetCACaps), ``ca_encryption_cert``, ``ca_encryption_issuer_cert``,
        ``ca_encryption_cert_pool`` (PEM) and ``ca_external_helper``.
        """
        for path in sorted(self.cas_dir.iterdir()):
            if path.name.endswith(".tmp"):
                continue
            with contextlib.suppress(FileNotFoundError):
                record = _parse_record(path.read_text(errors="replace"))
                if record.get("id") == name:
                    return record
        raise KeyError(name)

    def request(
        self,
        ca: str,
        *,
        key_file: Path,
        cert_file: Path,
        subject: str,
        challenge: str | None,
        request_id: str | None = None,
        key_size: int | None = None,
        dns_names: Iterable[str] = (),
        auto_renew: bool = False,
        extra_args: Sequence[str] = (),
    ) -> str:
        """Ask for a certificate; return the request id (nickname).

        Runs ``getcert request -c <ca> -k <key_file> -f <cert_file> -N <subject>
        [-I <request_id>] [-L <challenge>] [-g <key_size>] [-D <dns>]... -R|-r
        [extra_args...]``. ``subject`` is a DN string like ``CN=host,O=Example``.
        An existing ``key_file`` (PEM, PKCS#1 or PKCS#8) is reused, otherwise
        certmonger generates an RSA key there. ``auto_renew`` False passes ``-R``
        so that a short-lived test certificate is not renewed behind the test's
        back. Follow with :meth:`wait`.

        Raises :class:`FileExistsError` if ``cert_file`` exists: certmonger would
        just start tracking that certificate (MONITORING at once, no enrollment).
        """
        key_file = key_file.resolve()
        cert_file = cert_file.resolve()
        if cert_file.exists():
            msg = f"{cert_file} exists: certmonger would track it instead of enrolling"
            raise FileExistsError(msg)
        key_file.parent.mkdir(parents=True, exist_ok=True)
        cert_file.parent.mkdir(parents=True, exist_ok=True)
        args = ["request", "-c", ca, "-k", str(key_file), "-f", str(cert_file), "-N", subject]
        if request_id is not None:
            args += ["-I", request_id]
        if challenge is not None:
            args += ["-L", challenge]
        if key_size is not None:
            args += ["-g", str(key_size)]
        for dns in dns_names:
            args += ["-D", dns]
        args.append("-r" if auto_renew else "-R")
        args += list(extra_args)
        done = self._getcert(args)
        if request_id is not None:
            return request_id
        match = _NEW_REQUEST.search(done.stdout)
        if match is None:
            msg = f"cannot find the request id in: {done.stdout!r}"
            raise CertmongerError(msg)
        return match[1]

    def status(self, request_id: str) -> RequestStatus:
        """One ``getcert list -i <request_id>`` snapshot; KeyError if not tracked."""
        done = self._getcert(["list", "-i", request_id], check=False)
        if done.returncode != 0 and "No request found" in done.stdout:
            # getcert exits 1: "No request found with specified nickname."
            raise KeyError(request_id)
        if done.returncode != 0:
            msg = f"getcert list -i {request_id}: exit {done.returncode} {done.stdout}{done.stderr}"
            raise CertmongerError(msg)
        return _parse_list(request_id, done.stdout)

    def wait(
        self,
        request_id: str,
        *,
        until: Iterable[str] = TERMINAL_STATES,
        timeout: float = 60,
        poll_interval: float = 0.25,
    ) -> RequestStatus:
        """Poll ``getcert list -i <request_id>`` until its status is in ``until``.

        Returns that :class:`RequestStatus` (status, ca-error text, certificate
        path). Raises :class:`TimeoutError` (with the last status and the daemon
        log tail) after ``timeout`` seconds. For a pending request pass e.g.
        ``until={"CA_WORKING"}``.
        """
        wanted = frozenset(until)
        deadline = time.monotonic() + timeout
        while True:
            current = self.status(request_id)
            if current.status in wanted:
                return current
            if time.monotonic() > deadline:
                msg = (
                    f"request {request_id!r} still {current.status} after {timeout}s "
                    f"(waiting for {sorted(wanted)})\n{current.raw}\n{self.log_tail()}"
                )
                raise TimeoutError(msg)
            time.sleep(poll_interval)

    def resubmit(self, request_id: str, *, extra_args: Sequence[str] = ()) -> None:
        """``getcert resubmit -i <id>``: a new CSR with the SAME key, sent again.

        Against a server advertising ``Renewal``, certmonger signs it with the
        current certificate once it has one (a PKCSReq, messageType 19: certmonger
        never sends RenewalReq). The status leaves MONITORING before getcert
        returns, so :meth:`wait` can follow directly.
        """
        self._getcert(["resubmit", "-i", request_id, *extra_args])

    def rekey(
        self, request_id: str, *, key_size: int | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        """``getcert rekey -i <id> [-g bits]``: a NEW key pair, then a new request.

        With ``Renewal`` advertised (and no ``non_renewal``) the PKCSReq is
        signed with the previous certificate and key; once MONITORING again the
        key file holds the new key and the certificate file the new certificate.
        """
        args = ["rekey", "-i", request_id]
        if key_size is not None:
            args += ["-g", str(key_size)]
        self._getcert([*args, *extra_args])

    def stop_tracking(self, request_id: str) -> None:
        """``getcert stop-tracking -i <id>``; the key and certificate files stay."""
        self._getcert(["stop-tracking", "-i", request_id])


# --------------------------------------------------------------------------- scep-submit


class ScepSubmitStatus(enum.IntEnum):
    """Exit codes of certmonger's scep-submit helper (certmonger-scep-submit(8))."""

    ISSUED = 0
    WAIT = 1
    REJECTED = 2
    UNREACHABLE = 3
    UNCONFIGURED = 4
    WAIT_WITH_DELAY = 5
    NEED_SCEP_MESSAGES = 16
    NEED_NEW_KEY = 17


def scep_submit(
    url: str,
    operation: Literal["GetCACaps", "GetCACert"],
    *,
    ca_identifier: str | None = None,
    verbose: int = 0,
    timeout: float = 30,
    extra_args: Sequence[str] = (),
) -> ClientRun:
    """Run certmonger's scep-submit helper directly, for GetCACaps or GetCACert.

    ``/usr/lib/certmonger/scep-submit -u <url> -c|-C [-i <ca_identifier>] [-v...]``.
    ``-c`` sends ``GET <url>?operation=GetCACaps&message=0`` and prints the
    capabilities; ``-C`` sends ``GetCACert&message=0`` (walking ``message=1,2..``
    after a single ``x-x509-ca-cert``), then prints the RA, CA and other
    certificates as PEM. ``-i`` replaces ``0``. Exit codes: :class:`ScepSubmitStatus`.
    PKIOperation needs a pkiMessage that only the daemon builds; use
    :class:`Certmonger` for enrollment. ``certificate_pem`` is always None.
    """
    cmd = [SCEP_SUBMIT, "-u", url, "-c" if operation == "GetCACaps" else "-C"]
    if ca_identifier is not None:
        cmd += ["-i", ca_identifier]
    cmd += ["-v"] * verbose
    cmd += list(extra_args)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTMONGER_")}
    done = _run(cmd, timeout=timeout, env={**env, **_C_LOCALE})
    return ClientRun(
        returncode=done.returncode,
        stdout=done.stdout,
        stderr=done.stderr,
        certificate_pem=None,
        command=tuple(cmd),
    )
