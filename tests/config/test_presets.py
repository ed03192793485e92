"""Vendor presets: defaults with reasons, always overridable by the alias file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.cli import main
from gateway.config import loader
from gateway.config.model import AliasConfig
from gateway.config.presets import PRESETS
from tests.conftest import body_of, running_gateway

MINIMAL = Path(__file__).parent / "cases" / "good" / "minimal"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_value_is_valid_for_the_schema(preset: str) -> None:
    data = {"preset": preset, "ca": "Root", **{k: v.value for k, v in PRESETS[preset].items()}}
    assert loader.schema_issues("alias", "x.yaml", data) == []
    assert all(v.reason for v in PRESETS[preset].values())


def test_schema_lists_exactly_the_presets() -> None:
    assert set(loader.schema("alias")["properties"]["preset"]["enum"]) == set(PRESETS)


def _load(tmp_path: Path, alias_yaml: str) -> AliasConfig:
    directory = tmp_path / "cfg"
    shutil.copytree(MINIMAL, directory)
    (directory / "aliases" / "scep.yaml").write_text(alias_yaml)
    return loader.load(directory).aliases["scep"]


def test_preset_sets_values_and_the_file_overrides(tmp_path: Path) -> None:
    jamf = _load(tmp_path / "a", "preset: jamf\nca: Root\n")
    assert jamf.include_ca_certificate is False
    assert jamf.origins["include_ca_certificate"].startswith("preset jamf: Jamf Pro fails")
    overridden = _load(tmp_path / "b", "preset: jamf\nca: Root\ninclude_ca_certificate: true\n")
    assert overridden.include_ca_certificate is True
    assert overridden.origins["include_ca_certificate"] == "file"


def test_nested_preset_values_merge_with_the_file(tmp_path: Path) -> None:
    apple = _load(tmp_path, "preset: apple\nca: Root\nrenewal: {allow_same_key: true}\n")
    assert apple.renewal.enabled is True  # from the preset
    assert apple.renewal.allow_same_key is True  # from the file


def test_mobileiron_identifier_selects_the_own_ca(tmp_path: Path) -> None:
    alias = _load(tmp_path, "preset: mobileiron\nca: Root\nunknown_ca_identifier: reject\n")
    assert alias.ca_identifiers == ("MobileIronSCEP",)
    assert alias.unknown_ca_identifier == "reject"


@pytest.mark.asyncio
async def test_mobileiron_identifier_is_served_the_own_ca(
    tmp_path: Path, shared_data_dir: Path
) -> None:
    alias = "preset: mobileiron\nca: ManagementCA\nunknown_ca_identifier: reject\n"
    async with running_gateway(tmp_path, shared_data_dir, {"aliases/mi.yaml": alias}) as gw:
        url = "/scep/mi/pkiclient.exe?operation=GetCACert&message="
        served = await gw.client.get(url + "MobileIronSCEP")
        assert served.status_code == 200
        own = await gw.ca_certificate()
        assert await body_of(served) == own.public_bytes(serialization.Encoding.DER)
        assert (await gw.client.get(url + "SomethingElse")).status_code == 404


def test_explain_prints_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "cfg"
    shutil.copytree(MINIMAL, directory)
    (directory / "aliases" / "scep.yaml").write_text("preset: cisco-ios\nca: Root\n")
    code = main(
        ["check-config", str(directory), "--data-dir", str(tmp_path / "d"), "--explain", "scep"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    line = next(row for row in out.splitlines() if row.strip().startswith("response_digest:"))
    assert '"mirror"' in line
    assert "# preset cisco-ios: old IOS signs with SHA-1" in line
