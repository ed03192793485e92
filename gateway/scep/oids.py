"""Object identifiers SCEP adds to CMS (RFC 8894 3.2.1, Table 1)."""

from __future__ import annotations

# RFC 8894 3.2.1: id-VeriSign 2.16.840.1.113733, id-pki 1, id-attributes 9
MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
PKI_STATUS = "2.16.840.1.113733.1.9.3"
FAIL_INFO = "2.16.840.1.113733.1.9.4"
SENDER_NONCE = "2.16.840.1.113733.1.9.5"
RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
# RFC 8894 3.2.1.4: id-pkix 24 1 (step-ca once shipped a wrong OID here, PR #1794)
FAIL_INFO_TEXT = "1.3.6.1.5.5.7.24.1"
