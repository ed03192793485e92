"""Subject DN field names as the configuration spells them (`dn-field.schema.json`)."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

FIELDS: dict[str, x509.ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "L": NameOID.LOCALITY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "C": NameOID.COUNTRY_NAME,
    "STREET": NameOID.STREET_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
    "serialNumber": NameOID.SERIAL_NUMBER,
    "emailAddress": NameOID.EMAIL_ADDRESS,
    "title": NameOID.TITLE,
    "givenName": NameOID.GIVEN_NAME,
    "surname": NameOID.SURNAME,
    "unstructuredName": x509.ObjectIdentifier("1.2.840.113549.1.9.2"),
    "unstructuredAddress": x509.ObjectIdentifier("1.2.840.113549.1.9.8"),
}
NAMES = {oid: name for name, oid in FIELDS.items()}


def field_name(oid: x509.ObjectIdentifier) -> str:
    return NAMES.get(oid, oid.dotted_string)


def values(subject: x509.Name, name: str) -> list[str]:
    return [str(a.value) for a in subject.get_attributes_for_oid(FIELDS[name])]
