"""`scep-gateway check-config`: every good case loads, every bad case says exactly what is wrong.

Each bad case directory holds the configuration and `expected.txt`, the exact output.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from gateway.cli import main

CASES = Path(__file__).parent / "cases"
GOOD = sorted(p.name for p in (CASES / "good").iterdir())
BAD = sorted(p.name for p in (CASES / "bad").iterdir())


def _check(directory: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["check-config", str(directory), "--data-dir", str(directory / "data"), *extra])
    out = capsys.readouterr().out
    return code, out.replace(f"{directory}/", "")


@pytest.mark.parametrize("case", GOOD)
def test_good_case_loads(case: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    directory = tmp_path / case
    shutil.copytree(CASES / "good" / case, directory)
    code, out = _check(directory, capsys)
    assert code == 0, out
    assert out.startswith("ok: ")
    # check-config never writes: the CAs `create` would make exist only in memory.
    assert not (directory / "data").exists()


@pytest.mark.parametrize("case", BAD)
def test_bad_case_reports_exactly(
    case: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / case
    shutil.copytree(CASES / "bad" / case, directory)
    monkeypatch.chdir(directory)
    code = main(["check-config", ".", "--data-dir", "data"])
    out = capsys.readouterr().out
    assert code == 1
    assert out == (CASES / "bad" / case / "expected.txt").read_text()


def _yaml_files(case: str) -> list[str]:
    root = CASES / "good" / case
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml"))


@pytest.mark.parametrize(
    ("case", "file"), [(case, file) for case in GOOD for file in _yaml_files(case)]
)
def test_good_case_with_one_unknown_key_is_bad(
    case: str, file: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    directory = tmp_path / case
    shutil.copytree(CASES / "good" / case, directory)
    with (directory / file).open("a") as handle:
        handle.write("\nunexpected_key: 1\n")
    code, out = _check(directory, capsys)
    assert code == 1
    # The key itself is not quoted (it could be a secret); its position is.
    last = len(yaml.safe_load((directory / file).read_text()))
    assert out.startswith(f"{file}:$: unknown field (the {last}")
    assert out.count("\n") == 1
    assert "unexpected_key" not in out


def test_config_example_is_a_good_case(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    directory = tmp_path / "example"
    shutil.copytree(Path(__file__).parents[2] / "config.example", directory)
    code, out = _check(directory, capsys)
    assert code == 0, out


def test_explain_shows_effective_values_and_origins(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    directory = tmp_path / "full"
    shutil.copytree(CASES / "good" / "full", directory)
    code, out = _check(directory, capsys, "--explain", "routers")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "alias routers (aliases/routers.yaml)"
    assert any(
        line.split()[:2] == ["chain_order:", '"root_first"'] and "# file" in line for line in lines
    )
    assert "    authorize: authorize.subject_pattern" in lines
    assert "    authenticate: challenge.end_entity" in lines


def test_explain_unknown_alias_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    directory = tmp_path / "minimal"
    shutil.copytree(CASES / "good" / "minimal", directory)
    code, out = _check(directory, capsys, "--explain", "nope")
    assert code == 1
    assert out == "no alias 'nope'\n"
