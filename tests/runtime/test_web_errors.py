"""The browser features' user errors, without a browser: one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_serve_web_without_the_runtime_says_make_web(
    cli, two_tier: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dnnsplit.browser as web

    monkeypatch.setattr(web, "VENDOR", tmp_path / "vendor")
    code, _out, err = cli("serve", two_tier, "--web", "--port", "1")
    assert code == 2 and "make web" in err and "onnxruntime-web" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_browser_profile_without_chromium_says_install_it(
    cli, tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DNNSPLIT_CHROMIUM", str(tmp_path / "no-such-chromium"))
    code, _out, err = cli("profile", tiny_onnx, "--runtime", "browser")
    assert code == 2 and "apt-get install -y chromium" in err and "Traceback" not in err
