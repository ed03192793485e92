"""Item 10a: an alias can refuse single-DES request content; by default DES is accepted.

micromdm's scepclient encrypts with nothing but single DES (DESIGN.md section 10), so the
default keeps accepting it; `refuse_single_des: true` answers such a request with a signed
FAILURE badAlg (RFC 8894 2.9 deprecates DES) and issues nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import FailInfo
from gateway.scep.messages import PkiStatus
from tests.conftest import running_gateway
from tests.support import CONFIG_EXAMPLE, Device

pytestmark = pytest.mark.asyncio

STRICT = (CONFIG_EXAMPLE / "aliases/ra.yaml").read_text() + "refuse_single_des: true\n"


async def test_alias_refuses_single_des_and_default_accepts_it(
    tmp_path: Path, shared_data_dir: Path
) -> None:
    async with running_gateway(
        tmp_path, shared_data_dir, {"aliases/strict.yaml": STRICT}
    ) as gateway:
        secret = (shared_data_dir / "ra-demo.secret").read_text().strip()
        store = gateway.services.store

        device = Device("des-refused")
        body = device.pkcsreq(secret, gateway.recipients("strict"), cipher="des")
        reply = device.read(await gateway.pki(body, "strict"))
        assert reply.status is PkiStatus.FAILURE
        assert reply.fail_info == FailInfo.BAD_ALG
        assert reply.fail_info_text == "single DES is not accepted"
        assert await store.count_certificates() == 0

        # The same alias takes 3DES and AES.
        for i, cipher in enumerate(("tripledes_3key", "aes128_cbc", "aes256_cbc")):
            device = Device(f"strict-{cipher}")
            body = device.pkcsreq(
                secret, gateway.recipients("strict"), cipher=cipher, transaction_id=f"s{i}"
            )
            assert device.read(await gateway.pki(body, "strict")).status is PkiStatus.SUCCESS

        # The default (the `ra` alias, which does not set the option) still accepts DES.
        device = Device("des-default")
        body = device.pkcsreq(secret, gateway.recipients("ra"), cipher="des", transaction_id="d")
        reply = device.read(await gateway.pki(body, "ra"))
        assert reply.status is PkiStatus.SUCCESS
        assert await store.count_certificates() == 4
