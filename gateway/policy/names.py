"""Subject and SAN rules: which names a certificate may carry (docs/security.md, "names").

Pure functions, no I/O. Requested names are checked for syntax first (``check_*``), then
matched against the allow-list patterns of a certificate profile (``parse_*_pattern`` at
config time, ``*_matches`` at request time). Everything compares parsed values, never raw
strings: a glob over the whole text lets ``*`` cross label boundaries, and a NUL, a ``/`` or
an ``@`` hide the real host from it.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

import idna
from cryptography import x509

# RFC 1035 2.3.4 (RFC 5890 2.3.1: a label is at most 63 octets, a name at most 253 in text
# form without the root's trailing dot).
MAX_LABEL = 63
MAX_NAME = 253
# RFC 5321 4.5.3.1.1.
MAX_LOCAL_PART = 64

_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\Z")
# RFC 5322 3.2.3 dot-atom: atext runs separated by single dots (no quoted local parts).
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")
# RFC 3986 2: the characters a URI may contain (unreserved, reserved and "%").
_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*\Z")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# RFC 3986 appendix B, with the authority required.
_URI = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):(?://([^/?#]*))?(.*)\Z", re.DOTALL)
_PORT = re.compile(r"[0-9]{1,5}\Z")

WILDCARD = "*"  # the whole leftmost label: exactly one label
DEEP_WILDCARD = "**"  # the whole leftmost label: one or more labels


class NameRefused(ValueError):
    """A requested name (or a configured pattern) that breaks the rules; the message says why.

    The message may quote the value: it goes to the operator's log (escaped there), and for a
    pattern into a config error, never to the client.
    """


def control_character(text: str) -> str | None:
    """The first C0, DEL or C1 control character in ``text``, if any.

    A NUL ends the string for C code that checks names (``victim.bank.com\\0.example.com``);
    the other controls forge lines in logs and UIs that show the name.
    """
    for char in text:
        code = ord(char)
        if code < 0x20 or 0x7F <= code <= 0x9F:
            return char
    return None


def _no_controls(text: str, what: str) -> None:
    char = control_character(text)
    if char is not None:
        raise NameRefused(f"{what} contains the control character U+{ord(char):04X}")


def _check_label(label: str) -> None:
    if not label:
        raise NameRefused("empty label")
    if len(label) > MAX_LABEL:
        raise NameRefused(f"label longer than {MAX_LABEL} octets")
    if not _LDH_LABEL.match(label):
        raise NameRefused("a label is not letters, digits and inner hyphens")
    if label.startswith("xn--"):
        # An A-label must decode to a valid IDNA 2008 U-label (RFC 5891 5.4) and encode back
        # to itself: else two spellings name one host, or a "xn--" label names none.
        # `idna` implements IDNA 2008; the stdlib codec is IDNA 2003.
        try:
            again = idna.alabel(idna.ulabel(label)).decode("ascii")
        except (UnicodeError, ValueError):
            raise NameRefused("an A-label is not valid IDNA 2008") from None
        if again != label:
            raise NameRefused("an A-label does not encode back to itself")


def _labels(text: str, what: str) -> list[str]:
    """The lower-cased labels of a DNS name in preferred name syntax (RFC 5280 4.2.1.6)."""
    _no_controls(text, what)
    if not text.isascii():
        raise NameRefused(f"{what} is not ASCII: internationalised labels go as A-labels (xn--)")
    if len(text) > MAX_NAME:
        raise NameRefused(f"{what} is longer than {MAX_NAME} octets")
    if text.endswith("."):
        raise NameRefused(f"{what} ends with a dot")
    # RFC 4343: DNS names compare case-insensitively, ASCII only.
    return text.lower().split(".")


def check_dns_name(name: str, *, allow_wildcard: bool = False) -> tuple[str, ...]:
    """The labels of a requested dNSName, or NameRefused.

    A wildcard is only the whole leftmost label (``*.example.com``, RFC 6125 6.4.3 as the
    CA/Browser Forum requires it), and only where the profile allows wildcards.
    """
    labels = _labels(name, "the DNS name")
    first = 1 if labels[0] == WILDCARD else 0
    if first and not allow_wildcard:
        raise NameRefused("wildcard DNS names are not allowed by this profile")
    if first and len(labels) < 3:
        raise NameRefused("a wildcard needs at least two labels after it")
    for label in labels[first:]:
        if "*" in label:
            raise NameRefused("a wildcard must be the whole leftmost label")
        _check_label(label)
    if labels[-1].isdigit():
        # RFC 3696 2: a top-level domain is never all-numeric; this is an IPv4 address
        # pretending to be a DNS name.
        raise NameRefused("the last label is all digits")
    return tuple(labels)


@dataclass(frozen=True)
class DnsPattern:
    """``host.example.com`` (exactly), ``*.example.com`` (one label under example.com) or
    ``**.example.com`` (one or more labels under it). Never example.com itself."""

    wildcard: str  # "", WILDCARD or DEEP_WILDCARD
    suffix: tuple[str, ...]

    def matches(self, labels: tuple[str, ...]) -> bool:
        """Whether the (checked) name's labels are allowed; a requested ``*`` label is only
        covered by a wildcard of the pattern, never by a literal label."""
        n = len(self.suffix)
        if not self.wildcard:
            return labels == self.suffix
        if self.wildcard == WILDCARD:
            return len(labels) == n + 1 and labels[1:] == self.suffix
        return len(labels) > n and labels[len(labels) - n :] == self.suffix


def parse_dns_pattern(text: str) -> DnsPattern:
    labels = _labels(text, "the pattern")
    wildcard = labels[0] if labels[0] in (WILDCARD, DEEP_WILDCARD) else ""
    suffix = labels[1:] if wildcard else labels
    if wildcard and not suffix:
        raise NameRefused("a wildcard needs at least one label after it")
    for label in suffix:
        if "*" in label:
            raise NameRefused("a wildcard must be the whole leftmost label")
        _check_label(label)
    return DnsPattern(wildcard, tuple(suffix))


def dns_matches(labels: tuple[str, ...], patterns: tuple[DnsPattern, ...]) -> bool:
    return any(p.matches(labels) for p in patterns)


@dataclass(frozen=True)
class Email:
    local: str
    domain: tuple[str, ...]


def _split_email(text: str, what: str) -> tuple[str, str]:
    _no_controls(text, what)
    local, at, domain = text.rpartition("@")
    if not at or not local or "@" in local:
        raise NameRefused(f"{what} is not local-part@domain")
    return local, domain


def _check_local(local: str) -> None:
    if len(local) > MAX_LOCAL_PART or not _DOT_ATOM.match(local):
        raise NameRefused("the local part is not a dot-atom of at most 64 octets")


def check_email(value: str) -> Email:
    """A requested rfc822Name (RFC 5280 4.2.1.6: a Mailbox, RFC 5321 4.1.2), or NameRefused.

    Quoted local parts and address literals are refused: no device needs them, and they are
    where mail parsers disagree.
    """
    local, domain = _split_email(value, "the email address")
    _check_local(local)
    return Email(local, check_dns_name(domain))


@dataclass(frozen=True)
class EmailPattern:
    """``*@DOMAIN`` (any local part) or ``local@DOMAIN``; DOMAIN is a DNS pattern."""

    local: str | None  # None: any
    domain: DnsPattern

    def matches(self, email: Email) -> bool:
        # RFC 5280 7.5: the local part is case-sensitive, the domain is not.
        return (self.local is None or self.local == email.local) and self.domain.matches(
            email.domain
        )


def parse_email_pattern(text: str) -> EmailPattern:
    local, domain = _split_email(text, "the pattern")
    if local != "*":
        _check_local(local)
        if "*" in local:
            raise NameRefused("the local part is `*` (any) or a literal without `*`")
    return EmailPattern(None if local == "*" else local, parse_dns_pattern(domain))


Host = tuple[str, ...] | ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Uri:
    scheme: str  # lower case
    host: Host | None  # DNS labels or an IP literal; None: no authority (`urn:...`)
    port: int | None
    rest: str  # path, query and fragment as sent; with an authority an empty path reads "/"


@dataclass(frozen=True)
class _Parts:
    scheme: str
    host: str | None
    port: str | None
    rest: str


def _split_uri(text: str, what: str) -> _Parts:
    _no_controls(text, what)
    if not text.isascii() or not _URI_CHARS.match(text) or _PERCENT.search(text):
        raise NameRefused(f"{what} has characters RFC 3986 does not allow")
    found = _URI.match(text)
    if found is None:
        raise NameRefused(f"{what} is not scheme:rest (RFC 3986 3)")
    scheme, authority, rest = found.groups()
    if authority is None:
        if not rest:
            raise NameRefused(f"{what} has nothing after the scheme")
        return _Parts(scheme.lower(), None, None, rest)
    if "@" in authority:
        # RFC 3986 3.2.1: userinfo. `https://x.example.com@attacker.net/` is a URI for
        # attacker.net; refused rather than trusted to every relying party's parser.
        raise NameRefused(f"{what} has userinfo")
    if authority.startswith("["):
        host, close, after = authority[1:].partition("]")
        if not close:
            raise NameRefused(f"{what} has an unterminated IPv6 literal")
        host = "[" + host + "]"
    else:
        host, colon, after = authority.partition(":")
        after = colon + after
    if not host:
        raise NameRefused(f"{what} has no host")
    port: str | None = None
    if after:
        if not after.startswith(":") or not after[1:]:
            raise NameRefused(f"{what} has a malformed port")
        port = after[1:]
    if "%" in host:
        raise NameRefused(f"{what} has a percent-encoded host")
    # RFC 3986 6.2.3: with an authority, an empty path and "/" are the same.
    if not rest.startswith("/"):
        rest = "/" + rest
    return _Parts(scheme.lower(), host, port, rest)


def _host(host: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP literal ``host`` is, if it is one (RFC 3986 3.2.2)."""
    if host.startswith("["):
        try:
            return ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise NameRefused(f"{what} has an invalid IPv6 literal") from None
    if host.replace(".", "").isdigit():
        try:
            return ipaddress.IPv4Address(host)
        except ValueError:
            raise NameRefused(f"{what} has an invalid IPv4 address") from None
    return None


def _port(port: str, what: str) -> int:
    if not _PORT.match(port) or int(port) > 65535:
        raise NameRefused(f"{what} has an invalid port")
    return int(port)


def check_uri(value: str) -> Uri:
    """A requested uniformResourceIdentifier (RFC 5280 4.2.1.6: absolute, RFC 3986 syntax)."""
    parts = _split_uri(value, "the URI")
    path = parts.rest.split("?", 1)[0].split("#", 1)[0]
    if any(unquote(segment) in (".", "..") for segment in path.split("/")):
        # RFC 3986 5.2.4: a relying party removes dot segments, so `/devices/../admin` is
        # not under `/devices/`.
        raise NameRefused("the URI has a dot segment in its path")
    host: Host | None = None
    if parts.host is not None:
        ip = _host(parts.host, "the URI")
        host = ip if ip is not None else check_dns_name(parts.host)
    return Uri(
        parts.scheme,
        host,
        None if parts.port is None else _port(parts.port, "the URI"),
        parts.rest,
    )


@dataclass(frozen=True)
class UriPattern:
    """``scheme://HOST[:PORT][REST]``.

    HOST is a DNS pattern or an IP literal; PORT a number or ``*`` (absent: the URI must not
    name a port either); REST a literal path (plus query), or a prefix ending in ``*`` that
    matches anything after it (``/*``: any path, query and fragment).
    """

    scheme: str
    host: DnsPattern | ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int | None  # None: no port, unless any_port
    any_port: bool
    rest: str

    def matches(self, uri: Uri) -> bool:
        if uri.scheme != self.scheme or uri.host is None:
            return False
        if isinstance(self.host, DnsPattern):
            if not isinstance(uri.host, tuple) or not self.host.matches(uri.host):
                return False
        elif uri.host != self.host:
            return False
        if not self.any_port and uri.port != self.port:
            return False
        if self.rest.endswith("*"):
            return uri.rest.startswith(self.rest[:-1])
        return uri.rest == self.rest


def parse_uri_pattern(text: str) -> UriPattern:
    parts = _split_uri(text, "the pattern")
    if parts.host is None:
        raise NameRefused("the pattern has no host: write scheme://host[:port][path]")
    if "*" in parts.rest[:-1]:
        raise NameRefused("the pattern's path may hold `*` only at its end")
    ip = _host(parts.host, "the pattern")
    port = parts.port
    return UriPattern(
        parts.scheme,
        ip if ip is not None else parse_dns_pattern(parts.host),
        None if port in (None, "*") else _port(port, "the pattern"),
        port == "*",
        parts.rest,
    )


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An allow-list network; host bits may be set (``10.1.2.3/16`` is 10.1.0.0/16)."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise NameRefused(str(exc)) from None


def ip_allowed(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> bool:
    """By network, family included: an IPv4-mapped IPv6 address (``::ffff:10.1.2.3``) is a
    16-octet iPAddress a relying party compares as IPv6, so a v4 network never allows it."""
    return any(address.version == net.version and address in net for net in networks)


def check_value_text(name: x509.GeneralName) -> None:
    """No control character in any text a general name carries (RFC 5280 4.2.1.6 types)."""
    if isinstance(name, x509.DNSName | x509.RFC822Name | x509.UniformResourceIdentifier):
        _no_controls(name.value, "the name")
    elif isinstance(name, x509.DirectoryName):
        check_subject_text(name.value)
    # otherName (a UPN, say) and registeredID never get here: gateway/scep/csr.py drops them.


def check_subject_text(subject: x509.Name) -> None:
    """No control character in any attribute value of a distinguished name."""
    for attr in subject:
        if isinstance(attr.value, str):
            _no_controls(attr.value, f"the DN attribute {attr.oid.dotted_string}")


NameKey = tuple[frozenset[tuple[str, str | bytes]], ...]


def _fold(text: str) -> str:
    # RFC 4518 2 (string preparation for caseIgnoreMatch), simplified: compatibility
    # normalisation, case folding, and insignificant space folded to single spaces.
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def name_key(name: x509.Name) -> NameKey:
    """A distinguished name as RFC 5280 7.1 compares it: RDN by RDN, each RDN as a set,
    values case- and space-insensitively whatever the string type. cryptography's Name
    equality compares the values exactly, so ``cn=managementca`` would differ from
    ``CN=ManagementCA`` there."""
    return tuple(
        frozenset(
            (a.oid.dotted_string, _fold(a.value) if isinstance(a.value, str) else a.value)
            for a in rdn
        )
        for rdn in name.rdns
    )
