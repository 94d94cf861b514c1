"""Segment files are checked against the manifest before anything loads them (issue 23, point 3).

A segment path out of the directory (``../``, absolute, a symlink), a file changed in place, truncated or
missing: ``run``, ``serve`` and ``infer`` each refuse it in one line, exit 2, and load nothing.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from dnnsplit.errors import UsageError
from dnnsplit.runtime import route
from dnnsplit.splitting.chain import SegmentChain
from dnnsplit.splitting.manifest import Manifest


def _set_file(directory: Path, index: int, name: str) -> None:
    path = directory / "manifest.yaml"
    data = yaml.safe_load(path.read_text())
    data["segments"][index]["file"] = name
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _dotdot(d: Path) -> None:
    shutil.copy(d / "02-edge.onnx", d.parent / "elsewhere.onnx")  # a working model: only the path is wrong
    _set_file(d, 1, "../elsewhere.onnx")


def _absolute(d: Path) -> None:
    _set_file(d, 1, "/etc/passwd")


def _symlink(d: Path) -> None:
    outside = d.parent / "outside.onnx"
    (d / "02-edge.onnx").rename(outside)
    (d / "02-edge.onnx").symlink_to(outside)


def _tampered(d: Path) -> None:
    """Weights changed in place, the file still a valid model of the same size: it would answer otherwise."""
    import onnx
    from onnx import numpy_helper

    path = d / "02-edge.onnx"
    model = onnx.load(str(path))
    weight = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(weight)
    weight.CopyFrom(numpy_helper.from_array(-values, weight.name))
    onnx.save(model, str(path))


def _truncated(d: Path) -> None:
    path = d / "02-edge.onnx"
    path.write_bytes(path.read_bytes()[:500])


def _missing(d: Path) -> None:
    (d / "02-edge.onnx").unlink()


HOSTILE: dict[str, tuple[Callable[[Path], None], str]] = {
    "dotdot": (_dotdot, "leads out of the split directory (via '..'"),
    "absolute": (_absolute, "'/etc/passwd' in"),
    "symlink": (_symlink, "(a symlink to"),
    "tampered": (_tampered, "does not match its sha256"),
    "truncated": (_truncated, "has 500 bytes, the manifest says"),
    "missing": (_missing, "02-edge.onnx is missing"),
}


@pytest.fixture()
def frame(tmp_path: Path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(3).standard_normal((3, 32, 32)).astype(np.float32))
    return path


@pytest.fixture()
def taken_port() -> Iterator[int]:
    """A port something already listens on: a `serve` that got past its segments fails to bind it, in one
    line too, so each check below also asserts which line it printed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _hostile(two_tier: Path, tmp_path: Path, kind: str) -> Path:
    directory = tmp_path / "split" / "segments"
    shutil.copytree(two_tier, directory)
    HOSTILE[kind][0](directory)
    return directory


def _one_line(result: tuple[int, str, str], needle: str) -> None:
    code, _stdout, stderr = result
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in stderr, (code, stderr)
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_run_serve_and_infer_refuse_a_hostile_segment_in_one_line(
    cli, two_tier: Path, tmp_path: Path, kind: str, frame: Path, taken_port: int
) -> None:
    directory = _hostile(two_tier, tmp_path, kind)
    needle = HOSTILE[kind][1]
    _one_line(cli("run", directory, "--input", frame), needle)
    _one_line(cli("serve", directory, "--tier", "edge", "--port", taken_port), needle)
    _one_line(cli("infer", directory, "--edge", f"http://127.0.0.1:{taken_port}", "--input", frame), needle)


def test_a_tampered_mobile_segment_is_refused_by_the_edge_that_serves_it_to_browsers(
    cli, two_tier: Path, tmp_path: Path, taken_port: int
) -> None:
    from dnnsplit.browser import REQUIRED, VENDOR

    if not all((VENDOR / name).is_file() for name in REQUIRED):
        pytest.skip("no vendored onnxruntime-web (make web)")
    directory = tmp_path / "segments"
    shutil.copytree(two_tier, directory)
    mobile = directory / "01-mobile.onnx"
    data = bytearray(mobile.read_bytes())
    data[-1] ^= 0xFF
    mobile.write_bytes(bytes(data))
    # Without --web the edge does not load the phone's segment, and serving it is not its business.
    _one_line(cli("serve", directory, "--port", taken_port), "cannot listen")
    _one_line(cli("serve", directory, "--web", "--port", taken_port), "01-mobile.onnx does not match its sha256")


def test_a_path_inside_the_directory_and_a_symlink_within_it_load(two_tier: Path, tmp_path: Path) -> None:
    directory = tmp_path / "segments"
    shutil.copytree(two_tier, directory)
    (directory / "sub").mkdir()
    (directory / "02-edge.onnx").rename(directory / "sub" / "edge.onnx")
    (directory / "02-edge.onnx").symlink_to(directory / "sub" / "edge.onnx")
    _set_file(directory, 0, "./sub/../01-mobile.onnx")
    chain = SegmentChain.load(directory)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(chain.run(x)[0]["logits"], SegmentChain.load(two_tier).run(x)[0]["logits"])


def test_external_data_is_covered_by_the_manifest_and_the_digest(
    tiny_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Segments over 2 GB keep their weights in FILE.data; the sha256 of FILE alone would not cover them."""
    import dnnsplit.splitting.split as split
    from dnnsplit.splitting.split import SplitSettings, segments_from_cut_lists, split_model

    monkeypatch.setattr(split, "EXTERNAL_DATA_BYTES", 0)  # every segment with external data
    segment_of, tiers = segments_from_cut_lists(tiny_model.graph, [["/stem/stem.2/Relu_output_0"]])
    directory = tmp_path / "external"
    split_model(
        tiny_model.exported.path, tiny_model.graph, segment_of, tiers, tiny_model.model_block(),
        {"cuts": []}, directory, SplitSettings(simplify=False, validate=1),  # validation loads the chain
    )
    manifest = Manifest.load(directory)
    edge = manifest.segments[1]
    data = directory / "02-edge.onnx.data"
    assert data.is_file() and edge.data_sha256 and len(edge.data_sha256) == 64
    assert route.digest(manifest) != route.digest(
        dataclasses.replace(manifest, segments=(manifest.segments[0], dataclasses.replace(edge, data_sha256="0" * 64)))
    )
    weights = bytearray(data.read_bytes())
    weights[len(weights) // 2] ^= 0xFF
    data.write_bytes(bytes(weights))
    with pytest.raises(UsageError, match=r"segment weights .*02-edge.onnx.data do not match their sha256"):
        SegmentChain.load(directory)
    # A manifest from before data_sha256 existed: nothing vouches for the weights, so it is split again.
    dataclasses.replace(
        manifest, segments=(manifest.segments[0], dataclasses.replace(edge, data_sha256=None))
    ).save(directory)
    with pytest.raises(UsageError, match="have no sha256 in manifest.yaml.*split the model again"):
        SegmentChain.load(directory)


def test_a_client_refuses_a_tampered_edge_segment_it_would_fall_back_to(
    two_tier: Path, tmp_path: Path
) -> None:
    from dnnsplit.runtime.client import CollaborativeClient

    directory = _hostile(two_tier, tmp_path, "tampered")
    with pytest.raises(UsageError, match="02-edge.onnx does not match its sha256"):
        CollaborativeClient(directory, "http://127.0.0.1:9")
