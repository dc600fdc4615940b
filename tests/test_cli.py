"""The ``edc-lab`` dispatcher and ``edc-lab lab`` (localhost, token kept on)."""

import subprocess
import sys

import pytest

from edc_lab import cli, lab


def test_every_sub_command_is_available():
    parser = cli.build_parser()
    help_text = parser.format_help()
    for name in cli.COMMANDS:
        assert name in help_text
    # no sub-command module is missing: each parser got a runner
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, sub_parser in sub.choices.items():
        assert sub_parser.get_default("_missing") is None, f"edc-lab {name}: module missing"
        assert callable(sub_parser.get_default("_run"))


def test_lab_binds_localhost_and_keeps_the_token(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(subprocess, "call", lambda command: seen.setdefault("command", command) and 0)
    assert cli.main(["lab", "--dir", str(tmp_path), "--port", "8899"]) == 0
    command = seen["command"]
    assert command[:3] == [sys.executable, "-m", "jupyterlab"]
    assert "--ServerApp.ip=127.0.0.1" in command
    assert "--ServerApp.port=8899" in command
    assert f"--ServerApp.root_dir={tmp_path}" in command
    assert not any("token" in part.lower() or "password" in part.lower() for part in command)


def test_lab_refuses_a_missing_folder(tmp_path, capsys):
    assert cli.main(["lab", "--dir", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def test_default_lab_folder_is_the_notebooks():
    assert lab.notebooks_dir().name == "notebooks" and lab.notebooks_dir().is_dir()


def test_python_dash_m_form_works():
    result = subprocess.run([sys.executable, "-m", "edc_lab.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "make-data" in result.stdout
