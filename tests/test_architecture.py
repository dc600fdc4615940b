"""Architecture views: the shape table agrees with the real forward pass, leaves the model as it was,
and the diagram follows the model's configuration."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from edc_lab.models import build_model  # noqa: E402
from edc_lab.viz.architecture import (  # noqa: E402
    DIAGRAM_MODELS,
    format_shape_table,
    plot_architecture,
    shape_frame,
    shape_table,
)


def _inputs(height, width):
    return torch.rand(1, 4, height, width), torch.rand(1, 2, height, width)


def _rows_by_block(rows):
    return {row["block"]: row for row in rows}


def _no_hooks(model):
    return all(
        not module._forward_hooks and not module._forward_pre_hooks and not module._forward_hooks_with_kwargs
        for module in model.modules()
    )


@pytest.mark.parametrize("size", [(64, 64), (70, 54)])
def test_shape_table_matches_the_forward_pass(size):
    model = build_model("edc_tiny").eval()
    optical, sar = _inputs(*size)
    rows = shape_table(model, optical, sar)
    with torch.no_grad():
        outputs, encoded = model(optical, sar), model.encoder(optical, sar)
    blocks = _rows_by_block(rows)
    assert blocks["optical stem"]["stride"] == blocks["sar stem"]["stride"] == 4
    assert "cross stage 1" not in blocks and "cross stem" not in blocks
    for k in range(1, 5):
        stride = 2 ** (k + 1)
        grid = (-(-size[0] // stride), -(-size[1] // stride))  # ceil(H / s), ceil(W / s)
        for stream in ("optical", "sar", "cross") if k > 1 else ("optical", "sar"):  # X starts after stage 1
            row = blocks[f"{stream} stage {k}"]
            assert row["stride"] == stride and row["outputs"][-2:] == grid
            assert row["outputs"] == tuple(encoded[stream][k - 1].shape)
        assert blocks[f"optical stage {k}"]["outputs"][-2:] == tuple(outputs["features"][k - 1].shape[-2:])
        # the fusion row's outputs are (O_k, S_k, X_k, info): the encoder's corrected features
        fusion = blocks[f"DCHF {k}"]["outputs"]
        assert fusion[:3] == [tuple(encoded[name][k - 1].shape) for name in ("optical", "sar", "cross")]
        fusion_inputs = blocks[f"DCHF {k}"]["inputs"]
        assert len(fusion_inputs) == 3 and (fusion_inputs[2] is None) == (k == 1)  # X_1 does not exist yet
        discrepancy = blocks[f"D_{k} (discrepancy)"]
        assert discrepancy["outputs"][0] == tuple(outputs["discrepancy"][k - 1].shape) == (1, 1, *grid)
        assert discrepancy["stride"] == stride and discrepancy["within"] == f"encoder.fusions.{k - 1}"
        if k > 1:
            assert blocks[f"optical downsample to stage {k}"]["outputs"][-2:] == grid
    logits, pyramid = blocks["segmentation head"]["outputs"]
    assert logits == tuple(outputs["logits"].shape) and blocks["segmentation head"]["stride"] == 1
    assert pyramid == [tuple(feature.shape) for feature in outputs["features"]]
    assert blocks["cloud-removal head"]["outputs"] == tuple(outputs["cloudfree"].shape)
    # rows come in the order the blocks started: stems first, each DCHF right before its map, heads last
    assert [row["block"] for row in rows[:2]] == ["optical stem", "sar stem"]
    assert [row["block"] for row in rows[-2:]] == ["segmentation head", "cloud-removal head"]


@pytest.mark.parametrize("name", ["edc_tiny", "edc_no_dchf", "edc_no_cr", "early_fusion"])
def test_top_level_rows_partition_the_parameters(name):
    model = build_model(name)
    rows = shape_table(model, *_inputs(32, 32))
    top_level = [row for row in rows if not row["within"]]
    assert sum(row["params"] for row in top_level) == sum(p.numel() for p in model.parameters())
    for row in rows:
        module = model.get_submodule(row["name"])
        assert row["params"] == sum(p.numel() for p in module.parameters())
        assert row["type"] == type(module).__name__
    assert any(row["block"] == "plain sum 1" and row["params"] == 0 for row in rows) == (name == "edc_no_dchf")
    assert any(row["block"] == "cloud-removal head" for row in rows) == (name != "edc_no_cr")


def test_shape_table_leaves_hooks_modes_and_statistics_as_they_were():
    model = build_model("edc_tiny").train()
    model.encoder.sar_stem.eval()  # mixed flags must come back as they were, not as model.train()
    kept = model.segmentation_head.register_forward_hook(lambda *args: None)  # the user's own hook stays
    norm = model.encoder.optical_stem.layers[1]
    running_mean = norm.running_mean.clone()
    rows = shape_table(model, *_inputs(64, 64))
    assert len(rows) > 0
    assert list(model.segmentation_head._forward_hooks) == [kept.id]
    kept.remove()
    assert _no_hooks(model)
    assert model.training and not model.encoder.sar_stem.training and model.encoder.optical_stem.training
    assert torch.equal(norm.running_mean, running_mean)  # ran in eval mode: BatchNorm statistics untouched
    assert all(param.grad is None for param in model.parameters())


def test_hooks_are_removed_and_mode_restored_when_the_forward_raises():
    model = build_model("edc_tiny").train()
    with pytest.raises(ValueError, match="optical"):
        shape_table(model, torch.rand(1, 3, 64, 64), torch.rand(1, 2, 64, 64))  # wrong optical channel count
    assert _no_hooks(model) and model.training

    def broken(*args, **kwargs):
        raise RuntimeError("head failed")

    model.segmentation_head.forward = broken  # fails after the encoder's hooks have all run
    with pytest.raises(RuntimeError, match="head failed"):
        shape_table(model, *_inputs(64, 64))
    assert _no_hooks(model) and all(module.training for module in model.modules())


def test_shape_table_refuses_a_model_without_edc_blocks():
    with pytest.raises(ValueError, match="none of edc_lab's blocks"):
        shape_table(nn.Conv2d(4, 4, 1), *_inputs(8, 8))


def test_format_shape_table_and_frame():
    rows = shape_table(build_model("edc_tiny"), *_inputs(64, 64))
    text = format_shape_table(rows, max_width=30)
    lines = text.splitlines()
    assert len(lines) == len(rows) + 2
    assert lines[0].split() == ["block", "type", "inputs", "outputs", "stride", "params"]
    assert set(lines[1]) == {"-"}
    for line, row in zip(lines[2:], rows):
        assert row["block"] in line and line.endswith(f"{row['params']:,}" + (" (in above)" if row["within"] else ""))
    dchf_line = next(line for line in lines if line.startswith("DCHF 1"))
    assert "…" in dchf_line  # DCHF's info dict is cut at max_width
    assert "2 * 1x24x16x16, None" in dchf_line  # (O_1, S_1) and no cross-modal stream yet
    pytest.importorskip("pandas")
    frame = shape_frame(rows)
    assert len(frame) == len(rows) and frame["params"].tolist() == [row["params"] for row in rows]
    assert frame.loc[0, "outputs"] == "1x24x16x16"


def _texts(figure):
    axes = figure.axes[0]
    return [axes.get_title()] + [text.get_text() for text in axes.texts]


def _joined(figure):
    return "\n".join(_texts(figure))


@pytest.mark.parametrize("widths", [None, (16, 32, 48, 64)])
def test_diagram_labels_follow_the_config(widths, tmp_path):
    model = build_model("edc_tiny") if widths is None else build_model("edc_tiny", widths=widths)
    figure = plot_architecture(model)
    text = _joined(figure)
    for k, width in enumerate(model.config.widths, start=1):
        assert f"d{k} = {width} · stride {2 ** (k + 1)}" in text
    if widths is not None:
        assert "d2 = 48" not in text and "d4 = 112" not in text  # edc_tiny's own widths are gone
    parameters = sum(p.numel() for p in model.parameters())
    assert "edc_tiny" in figure.axes[0].get_title() and f"{parameters:,}" in figure.axes[0].get_title()
    assert "HAT" in text and f"window {model.config.windows[0]}" in text
    assert all(f"DCHF {k}" in text and f"D{k}, R{k}" in text for k in range(1, 5))
    assert "cloud-removal head" in text and "FPN segmentation head" in text
    assert figure.dpi >= 100
    assert min(item.get_fontsize() for item in figure.axes[0].texts) >= 8
    figure.savefig(tmp_path / "architecture.png")  # renders without error


def test_diagram_variants():
    no_dchf = _joined(plot_architecture(build_model("edc_no_dchf")))
    assert all(f"plain sum {k}" in no_dchf for k in range(1, 5)) and "DCHF" not in no_dchf and "D1," not in no_dchf
    dense = _joined(plot_architecture(build_model("dense_edc")))
    assert "dense attention" in dense and "HAT" not in dense
    no_cr = _joined(plot_architecture(build_model("edc_no_cr")))
    assert "cloud-removal" not in no_cr and "FPN segmentation head" in no_cr
    assert "gates back into no stream" in no_cr  # the last DCHF feeds only the segmentation head


@pytest.mark.parametrize("name", ["edc_small", "edc_base"])
def test_diagram_of_the_larger_sizes(name):
    with torch.device("meta"):  # sizes only: no memory for the weights
        model = build_model(name)
    text = _joined(plot_architecture(model))
    assert all(f"d{k} = {width}" in text for k, width in enumerate(model.config.widths, start=1))
    assert f"depth {model.config.depths[2]}" in text


def test_diagram_on_given_axes_and_refusals():
    figure, axes = plt.subplots(dpi=120)
    assert plot_architecture(build_model("edc_tiny"), ax=axes) is figure
    assert set(DIAGRAM_MODELS) == {"edc_tiny", "edc_small", "edc_base", "edc_paper", "dense_edc", "edc_no_dchf", "edc_no_cr"}
    for name in ("early_fusion", "optical_only", "sar_only", "cloudseg_ref"):
        with torch.device("meta"):
            model = build_model(name)
        with pytest.raises(ValueError, match=rf"{name}.*not a tri-stream.*edc_tiny"):
            plot_architecture(model)
