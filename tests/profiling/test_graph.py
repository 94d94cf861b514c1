"""The layer graph: module paths, blocks, MACs and params against torchvision's published table."""

from __future__ import annotations

import pytest

from dnnsplit.models import ModelOptions, export_model, load_model
from dnnsplit.profiling.graph import (
    block_of,
    load_layer_graph,
    module_path_from_node_name,
    strip_call_suffixes,
)

# A dozen families; vgg11 and vit_b_16 are the large ones (~25 s of export together, cached after).
FAMILIES = [
    "resnet18",
    "vgg11",
    "alexnet",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "densenet121",
    "googlenet",
    "squeezenet1_0",
    "shufflenet_v2_x0_5",
    "regnet_y_400mf",
    "convnext_tiny",
    "vit_b_16",
]


def graph_of(name: str):
    exported = export_model(load_model(f"torchvision:{name}"))
    return load_layer_graph(exported.path, exported.input_shape)


def check_against_torchvision(name: str) -> None:
    from dnnsplit.models.torchvision_zoo import default_meta

    meta = default_meta(name)
    graph = graph_of(name)
    assert graph.total_params == meta["num_params"], name
    assert graph.total_macs == pytest.approx(meta["_ops"] * 1e9, rel=0.02), name


@pytest.mark.parametrize("name", FAMILIES)
def test_macs_and_params_match_torchvision(name: str) -> None:
    check_against_torchvision(name)


def test_module_path_from_node_name() -> None:
    assert module_path_from_node_name("/layer2/layer2.1/relu_1/Relu") == "layer2.1.relu_1"
    assert (
        module_path_from_node_name("/features/features.1/conv/conv.0/conv.0.0/Conv") == "features.1.conv.0.0"
    )
    assert module_path_from_node_name("/Flatten") == ""
    assert module_path_from_node_name("Conv_12") == ""


def test_call_suffixes_are_stripped_only_for_repeat_calls() -> None:
    modules = {"layer1.0": {}, "layer1.0.relu": {}, "conv_1": {}}
    assert strip_call_suffixes("layer1.0.relu_1", modules) == "layer1.0.relu"
    assert strip_call_suffixes("conv_1", modules) == "conv_1"  # a module really named conv_1
    assert strip_call_suffixes("layer1.0.relu_1", {}) == "layer1.0.relu_1"


def test_blocks_descend_through_containers() -> None:
    modules = {
        "layer1": {"container": True},
        "layer1.0": {"container": False},
        "layer1.0.conv1": {"container": False},
        "encoder": {"container": False},
        "encoder.layers": {"container": True},
        "encoder.layers.encoder_layer_3": {"container": False},
        "encoder.layers.encoder_layer_3.ln_1": {"container": False},
        "encoder.ln": {"container": False},
        "fc": {"container": False},
    }
    assert block_of("layer1.0.conv1", modules) == "layer1.0"
    assert block_of("encoder.layers.encoder_layer_3.ln_1", modules) == "encoder.layers.encoder_layer_3"
    assert block_of("encoder.ln", modules) == "encoder"
    assert block_of("fc", modules) == "fc"
    assert block_of("features.3.block.0", {}) == "features.3"


def test_tiny_graph_by_hand() -> None:
    loaded = load_model("tests.fixtures.tiny_models:tiny_cnn", ModelOptions(input_shape=(1, 3, 32, 32)))
    exported = export_model(loaded)
    graph = load_layer_graph(exported.path, exported.input_shape)
    by_scope = {layer.scope: layer for layer in graph.layers}
    # stem conv 3->8 (3x3) on 32x32, two 8->8 convs, fc 8->10
    assert by_scope["stem.0"].macs == 8 * 32 * 32 * 3 * 9
    assert by_scope["conv_a"].macs == by_scope["conv_b"].macs == 8 * 32 * 32 * 8 * 9
    assert by_scope["fc"].macs == 80
    assert graph.total_params == sum(p.numel() for p in loaded.module.parameters())
    # the second call of the reused ReLU keeps its own scope but names the real module
    assert by_scope["relu_1"].module == "relu" and by_scope["relu_1"].op == "Relu"
    # the stem's output feeds conv_a and the residual Add: one tensor, two consumers
    stem_out = by_scope["stem.2"].outputs[0]
    assert stem_out.shape == (1, 8, 32, 32) and stem_out.bytes == 8 * 32 * 32 * 4
    assert len(graph.consumers[stem_out.name]) == 2
    assert graph.outputs[0].shape == (1, 10)


def test_onnx_file_without_module_table_counts_initializers(tiny_onnx) -> None:
    import onnx

    model = onnx.load(str(tiny_onnx))
    del model.metadata_props[:]
    graph = load_layer_graph(tiny_onnx)  # with the table
    from dnnsplit.profiling.graph import build_layer_graph

    bare = build_layer_graph(model, (1, 3, 32, 32))
    # BatchNorm is folded into the stem conv at export, so the ONNX file holds fewer numbers than torch.
    assert 0 < bare.total_params < graph.total_params
    assert bare.total_macs == graph.total_macs
    assert block_of("stem.0", {}) == "stem.0"


def test_einsum_macs_are_counted() -> None:
    from dnnsplit.models import ModelOptions
    from dnnsplit.profiling import prepare_model

    prepared = prepare_model("tests.fixtures.tiny_models:tiny_einsum", ModelOptions(input_shape=(1, 2, 4, 4)))
    einsum = [la for la in prepared.graph.layers if la.op == "Einsum"]
    assert len(einsum) == 1
    assert einsum[0].macs == 1 * 4 * 4 * 8  # b * i * j * d: one multiply-add per index combination
