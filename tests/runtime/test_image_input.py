"""A camera frame's JPEG on the wire instead of the float32 tensor: the edge makes the same model input from
it (``images.load_image``), refuses what is not an image or not an image input, and stays healthy; the
client sends it when a request starts at the input; the elastic decision charges the JPEG's bytes."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from dnnsplit.errors import UsageError
from dnnsplit.images import frame_jpeg, load_frames, load_image
from dnnsplit.runtime import route
from dnnsplit.runtime.client import CollaborativeClient
from dnnsplit.runtime.server import ServeSettings, serving
from dnnsplit.runtime.wire import CONTENT_TYPE, JPEG_TYPE, decode, image_headers
from dnnsplit.splitting.manifest import Manifest

SHAPE = (1, 3, 32, 32)


def _picture(size: int = 48, seed: int = 3) -> Image.Image:
    """A smooth picture (a JPEG codes it well, as it does a camera frame) with some texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([np.sin(6 * x + c) * np.cos(4 * y - c) for c in range(3)], axis=-1) * 100 + 128
    rgb += rng.normal(0, 6, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def test_an_image_from_bytes_is_the_tensor_from_its_file(tmp_path: Path) -> None:
    path = tmp_path / "frame.png"
    _picture().save(path)
    np.testing.assert_array_equal(load_image(path.read_bytes(), SHAPE), load_image(path, SHAPE))
    # A JPEG file goes on the wire as itself; anything else is encoded (quality 90), close to the original.
    jpeg = tmp_path / "frame.jpg"
    jpeg.write_bytes(_jpeg(_picture()))
    assert frame_jpeg(jpeg.read_bytes()) == jpeg.read_bytes()
    coded = frame_jpeg(path.read_bytes())
    assert coded.startswith(b"\xff\xd8\xff") and len(coded) < path.stat().st_size
    assert np.abs(load_image(coded, SHAPE) - load_image(path, SHAPE)).mean() < 0.05
    frames = load_frames(tmp_path, SHAPE)  # a folder: every image, in name order, with its JPEG
    assert frames.tensors.shape == (2, 3, 32, 32) and frames.jpegs == (jpeg.read_bytes(), coded)
    assert load_frames(tmp_path / "frame.png", SHAPE).jpegs == (coded,)
    with pytest.raises(UsageError, match="cannot read the image bytes"):
        load_image(b"\xff\xd8\xff not really a jpeg", SHAPE)


def _post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}/v1/infer", content=body, headers=headers)


def test_the_edge_decodes_a_jpeg_frame_as_the_client_would(edge_only: Path, whole) -> None:
    manifest = Manifest.load(edge_only)
    body = _jpeg(_picture())
    meta = {"manifest": route.digest(manifest), "start": "0"}
    with serving(edge_only, ServeSettings(tier="edge")) as edge:
        answer = _post(edge.url, body, image_headers(meta))
        assert answer.status_code == 200, answer.text
        tensors, _ = decode(answer.content)
        np.testing.assert_allclose(tensors["logits"], whole(load_image(body, SHAPE)), rtol=1e-5, atol=1e-6)
        # not an image: 400 naming it; the server goes on
        bad = _post(edge.url, b"\xff\xd8\xff" + b"\x00" * 500, image_headers(meta))
        assert bad.status_code == 400 and bad.json()["code"] == "bad_image"
        assert "cannot read the image bytes" in bad.json()["error"]
        worse = _post(edge.url, body, {"content-type": JPEG_TYPE, "x-dnnsplit-metadata": "[1]"})
        assert worse.status_code == 400 and worse.json()["code"] == "bad_metadata"
        other = _post(edge.url, body, image_headers({"manifest": "0" * 16}))
        assert other.status_code == 409
        assert httpx.get(f"{edge.url}/healthz").json()["served"] == 1
        assert _post(edge.url, body, image_headers(meta)).status_code == 200
    with serving(edge_only, ServeSettings(tier="edge", max_body_mb=0.001)) as small:
        assert _post(small.url, body, image_headers(meta)).status_code == 413  # over --max-body-mb
        assert httpx.get(f"{small.url}/healthz").status_code == 200


def test_an_image_where_the_request_does_not_start_at_the_input_is_415(two_tier: Path) -> None:
    meta = {"manifest": route.digest(Manifest.load(two_tier))}
    with serving(two_tier, ServeSettings(tier="edge")) as edge:  # starts at segment 1: the skip tensor
        answer = _post(edge.url, _jpeg(_picture()), image_headers(meta))
        assert answer.status_code == 415 and answer.json()["code"] == "not_image_input"
        assert "starts at segment 1" in answer.json()["error"]
        assert httpx.get(f"{edge.url}/healthz").status_code == 200


def test_the_client_sends_the_frames_jpeg_when_it_starts_at_the_input(
    edge_only: Path, whole, tmp_path: Path
) -> None:
    path = tmp_path / "frame.jpg"
    path.write_bytes(_jpeg(_picture()))
    frames = load_frames(path, SHAPE)
    x, image = frames.tensors, frames.jpegs[0]
    with serving(edge_only, ServeSettings(tier="edge")) as edge, CollaborativeClient(edge_only, edge.url) as client:
        sent = client.infer(x, image=image)
        tensor = client.infer(x)
    assert sent.fallback is None and sent.stages.up_bytes == len(image)
    assert tensor.stages.up_bytes > 3 * 32 * 32 * 4 > 3 * len(image)
    # The frame's own JPEG: the edge's tensor is the client's, bit for bit, so is the answer.
    np.testing.assert_array_equal(sent.outputs["logits"], tensor.outputs["logits"])
    np.testing.assert_allclose(sent.outputs["logits"], whole(x), rtol=1e-5, atol=1e-6)


def test_a_request_with_a_tensor_is_still_a_tensor(edge_only: Path, sample: np.ndarray) -> None:
    from dnnsplit.runtime.wire import encode

    meta = {"manifest": route.digest(Manifest.load(edge_only))}
    with serving(edge_only, ServeSettings(tier="edge")) as edge:
        answer = _post(edge.url, encode({"input": sample}, meta), {"content-type": CONTENT_TYPE})
        assert answer.status_code == 200


def test_jpeg_frames_agree_with_tensors_on_the_digits(tiny_checkpoint: Path) -> None:
    """The trained digits CNN on 360 held-out digits, each as a PNG frame: the tensor made from the PNG
    against the one the edge makes from its quality-90 JPEG (what `infer --input-coding jpeg` sends)."""
    from sklearn.datasets import load_digits

    from dnnsplit.models import ModelOptions
    from dnnsplit.onnxrt import ort_session
    from dnnsplit.profiling import prepare_model
    from tests.fixtures.trained import TINY

    prepared = prepare_model(str(tiny_checkpoint), ModelOptions(arch=TINY, input_shape=(1, 3, 16, 16)))
    session = ort_session(prepared.exported.path)
    name = session.get_inputs()[0].name
    digits = load_digits()
    shape = (1, 3, 16, 16)
    tensors, jpegs, labels = [], [], digits.target[-360:]
    for pixels in digits.images[-360:]:
        picture = Image.fromarray((pixels * 255 / 16).astype(np.uint8)).resize((18, 18), Image.BILINEAR)
        png = io.BytesIO()
        picture.convert("RGB").save(png, format="PNG")
        tensors.append(load_image(png.getvalue(), shape))
        jpegs.append(load_image(frame_jpeg(png.getvalue()), shape))
    top = [session.run(None, {name: np.concatenate(x)})[0].argmax(axis=1) for x in (tensors, jpegs)]
    agreement = float((top[0] == top[1]).mean())
    accuracy = [float((t == labels).mean()) for t in top]
    print(f"top-1 agreement {agreement:.3f}; accuracy tensor {accuracy[0]:.3f}, jpeg {accuracy[1]:.3f}")
    assert accuracy[0] > 0.5  # the frames are digits to this model (it was trained on them, not on PNGs)
    assert agreement >= 0.97 and abs(accuracy[0] - accuracy[1]) <= 0.02
