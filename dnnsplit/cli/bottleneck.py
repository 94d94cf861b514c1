"""`dnnsplit bottleneck`: a trained encoder/decoder at a cut, so an int8, zstd-coded code crosses it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dnnsplit.cli.common import (
    Format,
    ModelArg,
    err,
    guarded,
    human_bytes,
    out,
    print_document,
    progress_bar,
    simple_table,
    takes_model,
)

EXAMPLES = """
Examples:

  dnnsplit train torchvision:resnet18 --num-classes 10 --input-shape 1x3x32x32 --data digits -o r18.pt
  dnnsplit bottleneck r18.pt --at layer1 --channels 8 --output r18-bn/

  dnnsplit bottleneck r18.pt --at layer2 --channels 4 --stride 2 --epochs 20 -o bn/ --fine-tune

  dnnsplit bottleneck r18.pt --at layer1 --channels 16 --lambda 0.05 -o bn/   # learned rate (compressai)

  dnnsplit bottleneck mnv2.pt --at features.3 --channels 8 --data photos/ -o bn/   # an ImageFolder

  dnnsplit split bn/model.onnx --cut code --output segments/   # the int8 code is what crosses
"""


def _data_source(data: str) -> str:
    """``digits``, ``imagefolder:PATH``, or a bare directory (an ImageFolder)."""
    if data == "digits" or data.startswith("imagefolder:") or not Path(data).is_dir():
        return data
    return f"imagefolder:{data}"


@guarded
@takes_model
def bottleneck(
    model: ModelArg,
    at: Annotated[
        str,
        typer.Option(
            "--at",
            help="Module path after which the cut is (e.g. layer1); `dnnsplit branch "
            "MODEL --list-points` lists them.",
            show_default=False,
        ),
    ],
    channels: Annotated[
        int, typer.Option("--channels", help="Channels of the code that crosses the cut.", show_default=False)
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Directory for model.onnx, encoder.onnx, decoder.onnx, bottleneck.yaml and the weights.",
            show_default=False,
        ),
    ],
    rate_lambda: Annotated[
        float,
        typer.Option(
            "--lambda",
            help="Weight of the learned rate (estimated bits per code element) in the "
            "loss: higher, fewer bytes and less accuracy. > 0 needs compressai.",
        ),
    ] = 0.0,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
    data: Annotated[
        str, typer.Option("--data", help="digits (bundled with scikit-learn), imagefolder:PATH or a folder.")
    ] = "digits",
    fine_tune: Annotated[
        bool, typer.Option("--fine-tune", help="Also train the layers after the cut (slower learning rate).")
    ] = False,
    stride: Annotated[int, typer.Option(help="1, or 2: the code also has half the height and width.")] = 1,
    lr: Annotated[float, typer.Option(help="Learning rate (AdamW, cosine schedule).")] = 3e-3,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 64,
    zstd_level: Annotated[int, typer.Option(help="zstd level the code is coded with (1..22).")] = 3,
    threads: Annotated[
        int | None, typer.Option(help="Threads for training (torch), validation and timing (onnxruntime).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an earlier bottleneck in the output (nothing else).")
    ] = False,
    fmt: Annotated[Format, typer.Option("--format", help="How to print the result.")] = Format.table,
    model_opts: Any = None,  # the MODEL flags, given by @takes_model
) -> None:
    """Insert a small encoder after the cut at LAYER (phone side) and a decoder before the rest (edge side),
    and train them by distillation from MODEL with the rest frozen.

    The code that crosses the cut is int8, coded with zstd; its bytes per sample, the test accuracy, the
    agreement with MODEL and the time of each side are measured on the test split and written to
    DIR/bottleneck.yaml, beside DIR/model.onnx (the whole model, the int8 tensor `code` at the cut),
    DIR/encoder.onnx (input -> code), DIR/decoder.onnx (code -> logits) and the trained weights.
    Exit 1 when onnxruntime's encoder -> decoder chain disagrees with PyTorch.
    """
    from dnnsplit.bottleneck.run import BottleneckSettings, make_bottleneck
    from dnnsplit.bottleneck.train import BottleneckTrainSettings
    from dnnsplit.output_dir import BOTTLENECK, claim
    from dnnsplit.training.run import load_for_training

    settings = BottleneckSettings(
        at=at,
        channels=channels,
        stride=stride,
        train=BottleneckTrainSettings(
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            rate_lambda=rate_lambda,
            fine_tune=fine_tune,
            seed=model_opts.seed,
        ),
        zstd_level=zstd_level,
        force=force,
        threads=threads,
    )
    settings.check()
    claim(output, BOTTLENECK, force)
    loaded, splits = load_for_training(model, _data_source(data), model_opts)
    with progress_bar() as update:
        result = make_bottleneck(loaded, splits, output, settings, progress=update)
    doc = result.document
    if fmt != Format.table:
        print_document(doc.to_dict(), fmt.value)
        return
    b, a, t = doc.bytes, doc.accuracy, doc.times_ms
    out.print(
        simple_table(
            f"bottleneck after {doc.at}: {doc.channels} channels, code {doc.code.shape} int8 + zstd "
            f"(test split, {b.samples} samples)",
            ["", "bytes/sample", "vs float32"],
            [
                ("float32 at the cut", human_bytes(b.float32), "1.0x"),
                ("int8 code", human_bytes(b.int8), f"{b.float32 / b.int8:.1f}x"),
                ("int8 + zstd, mean", f"{b.mean:.0f} B", f"{b.reduction:.1f}x"),
                ("int8 + zstd, p95", f"{b.p95:.0f} B", f"{b.float32 / max(b.p95, 1e-9):.1f}x"),
            ],
        )
    )
    out.print(
        f"top-1 {a.top1:.4f} (original {a.base_top1:.4f}, drop {a.drop_points:.2f} points), "
        f"agreement with the original {a.agreement:.4f}"
    )
    out.print(
        f"time here: encode {t.encode:.2f} ms (encoder {t.encoder_onnx:.2f} + zstd {t.zstd_compress:.3f}), "
        f"decode {t.decode:.2f} ms (zstd {t.zstd_decompress:.3f} + decoder {t.decoder_onnx:.2f}); "
        f"trained in {doc.training['seconds']:.0f} s"
    )
    err.print(
        f"wrote {output}/bottleneck.yaml, model.onnx, encoder.onnx, decoder.onnx, {doc.files['checkpoint']}"
    )
