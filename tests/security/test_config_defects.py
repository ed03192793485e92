"""Item 9: configuration defects stay configuration errors; first-start keys are made once.

9a: a regular expression that does not compile, and other values the schema admits but the
code could not use (an RFC 4514 subject, an EKU OID, an IP network), are ordinary
``file:path: message`` issues at check-config and at reload time: no traceback, and the
watcher keeps running and applies the next valid edit.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from tests.conftest import running_gateway
from tests.interop.conftest import GATEWAY
from tests.support import copy_config

WAIT_SECONDS = 10

BAD_REGEX = """\
ca: ManagementCA
policies:
  authorize:
    - {type: authorize.subject_pattern, field: CN, pattern: "("}
"""
GOOD_REGEX = BAD_REGEX.replace('pattern: "("', 'pattern: "dev-[0-9]+"')
REGEX_ISSUE = (
    "aliases/guarded.yaml:$.policies.authorize[0].pattern: invalid regular expression: "
    "missing ), unterminated subpattern at position 0"
)


def _check_config(config_dir: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GATEWAY, "check-config", str(config_dir), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_reports_values_the_code_cannot_use(tmp_path: Path) -> None:
    config_dir = copy_config(tmp_path)
    (config_dir / "aliases/guarded.yaml").write_text(BAD_REGEX)
    ca = config_dir / "cas/ManagementCA.yaml"
    ca.write_text(ca.read_text().replace('"CN=ManagementCA,O=scep-gateway demo"', '"CN=a+"'))
    profile = config_dir / "profiles/certificate/odd.yaml"
    profile.write_text(
        "extended_key_usage: [client_auth, 0.40.1]\n"
        "subject_alt_names: {mode: allow_list, allow: {ip: [10.0.0.0/8, 10.0.0.1/33]}}\n"
    )
    result = _check_config(config_dir, tmp_path / "var")
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "cas/ManagementCA.yaml:$.create.subject: not an RFC 4514 distinguished name",
        "profiles/certificate/odd.yaml:$.extended_key_usage[1]: not a valid OID",
        "profiles/certificate/odd.yaml:$.subject_alt_names.allow.ip[1]: "
        "not an IP network in CIDR notation",
    ]
    # With those fixed, the regular expression is the one problem left.
    ca.write_text(ca.read_text().replace('"CN=a+"', '"CN=ManagementCA,O=scep-gateway demo"'))
    profile.unlink()
    result = _check_config(config_dir, tmp_path / "var")
    assert (result.returncode, result.stdout, result.stderr) == (1, REGEX_ISSUE + "\n", "")


@pytest.mark.asyncio
async def test_bad_regex_on_reload_is_an_issue_and_the_next_edit_applies(
    tmp_path: Path, shared_data_dir: Path
) -> None:
    async with running_gateway(tmp_path, shared_data_dir, watch=True) as gateway:
        reloader = gateway.services.reloader
        generation = reloader.state.generation
        alias = gateway.settings.config_dir / "aliases/guarded.yaml"
        alias.write_text(BAD_REGEX)
        async with asyncio.timeout(WAIT_SECONDS):
            state = await reloader.wait_for(lambda s: bool(s.errors))
        assert [str(e) for e in state.errors] == [REGEX_ISSUE]
        assert state.generation == generation
        assert "guarded" not in reloader.current().aliases

        alias.write_text(GOOD_REGEX)
        async with asyncio.timeout(WAIT_SECONDS):
            state = await reloader.wait_for(lambda s: s.generation > generation)
        assert state.errors == ()
        response = await gateway.client.get("/scep/guarded/pkiclient.exe?operation=GetCACaps")
        assert response.status_code == 200
