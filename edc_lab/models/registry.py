"""``build_model``: every model of edc_lab by name, with overrides.

``build_model("edc_tiny")`` builds EDC's CPU-teaching size; ``build_model("edc_base",
windows=(7, 7))`` changes one size; ``build_model("optical_only", scale="base")``
builds a baseline at another EDC size (baselines and ablations default to the
``tiny`` size, the one that trains in minutes on a CPU). The returned model
carries ``build_args``, a JSON-serialisable dict such that
``build_model(**model.build_args)`` rebuilds it (checkpoints store it), and
``has_cloud_removal``.

A checkpoint's ``build_args`` are untrusted input, so ``build_model`` checks
them before anything is allocated: names, channel and class counts, every size
field of the config (positive integers, windows and cells of at most
``MAX_WINDOW`` pixels, an MLP of at least one unit, booleans) and finally the
model's parameter count, computed on PyTorch's ``meta`` device (shapes only, no
memory) and refused above ``MAX_PARAMETERS``. The divisibility rules (heads
dividing widths, carriers dividing windows) are the configs' own
(``EDCConfig``, ``CloudSegConfig``).

Names: ``edc_tiny``, ``edc_small``, ``edc_base``, ``edc_paper`` (EDC, ``edc.py``);
``optical_only``, ``sar_only``, ``early_fusion``, ``dense_edc``,
``edc_no_dchf``, ``edc_no_cr`` (``baselines.py``); ``cloudseg_ref`` (the
CloudSeg-sized reference for the efficiency comparison, ``cloudseg.py``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace

import torch
from torch import nn

from edc_lab.models.baselines import SINGLE_STREAM_INPUTS, VARIANTS, SingleStreamModel
from edc_lab.models.cloudseg import CloudSegConfig, CloudSegRef
from edc_lab.models.edc import EDC, EDC_CONFIGS, EDCConfig

__all__ = ["MAX_PARAMETERS", "MAX_WINDOW", "MODEL_NAMES", "SCALES", "build_model", "model_config", "planned_parameters"]

MODEL_NAMES: tuple[str, ...] = (
    "edc_tiny",
    "edc_small",
    "edc_base",
    "edc_paper",
    "optical_only",
    "sar_only",
    "early_fusion",
    "dense_edc",
    "edc_no_dchf",
    "edc_no_cr",
    "cloudseg_ref",
)

#: EDC sizes a baseline or ablation can be built at (``scale=...``)
SCALES: tuple[str, ...] = ("tiny", "small", "base")
DEFAULT_SCALE = "tiny"


def _check_name(name) -> None:
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")


#: sane ranges of the channel and class counts (a checkpoint's build_args are untrusted input:
#: 2·10⁹ classes would otherwise end in a MemoryError deep inside torch)
COUNT_RANGES: dict[str, tuple[int, int]] = {"in_optical": (1, 64), "in_sar": (1, 64), "num_classes": (1, 1000)}
#: the largest integer any size override (widths, depths, heads, windows, ...) may hold
MAX_SIZE_OVERRIDE = 4096
#: the most parameters a model may have (our choice): 8 GB of float32 weights (32 GB with AdamW's
#: two moments and the gradients), ten times cloudseg_ref's 199 M and 25 times edc_base's 78 M.
#: Sizes that pass every field check can still multiply into far more (widths of 4096 with
#: mlp_ratio 4096: 1.7e12 parameters, a 6 TiB allocation), so the count is checked before building
MAX_PARAMETERS = 2_000_000_000
#: the largest attention window, DCHF cell or SegFormer reduction, in pixels of a stage's map (our
#: choice; the shipped sizes use at most 8): every map is padded to a multiple of it, and a window's
#: attention grows with its fourth power, so 4096 would ask for 2.8e14 scores per window
MAX_WINDOW = 64
#: the integer fields of each config and how many values each holds (None: a single integer)
COUNT_FIELDS: dict[str, dict[str, int | None]] = {
    "edc": {"widths": 4, "depths": 4, "heads": 2, "windows": 2, "carriers": None, "fusion_heads": None,
            "fusion_cells": 4, "fpn_dim": None, "cr_dim": None},
    "cloudseg_ref": {"widths": 4, "depths": 4, "heads": 4, "sr_ratios": 4, "decoder_widths": 5, "cr_hidden": None,
                     "cr_widths": 2},
}
#: the integer fields measured in pixels of a stage's map (at most MAX_WINDOW)
PIXEL_FIELDS = ("windows", "fusion_cells", "sr_ratios")
#: the fields that must be True or False (a string such as "no" would be truthy)
BOOL_FIELDS = ("cloud_removal", "cr_residual")


def _check_count(what: str, value) -> None:
    low, high = COUNT_RANGES[what]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"build_model: {what} must be a positive integer, expected one in [{low}, {high}], "
                         f"found {value!r}")


def _check_override_sizes(name: str, overrides: dict) -> None:
    """Refuse numbers in overrides that no model of this package can use (huge, negative, NaN)."""
    for key, value in overrides.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            if not math.isfinite(item) or item < 0 or item > MAX_SIZE_OVERRIDE:
                raise ValueError(
                    f"build_model({name!r}): expected {key} made of finite numbers in [0, {MAX_SIZE_OVERRIDE}], "
                    f"found {value!r}"
                )


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_counts(name: str, values: dict, counts: dict[str, int | None]) -> None:
    """Every integer field: the right number of positive integers; windows and cells at most MAX_WINDOW."""
    for field, length in counts.items():
        value = values.get(field)
        if field == "cr_widths" and value is None:  # optional (deprecated) field
            continue
        expected = "a positive integer" if length is None else f"{length} positive integers"
        items = [value] if length is None else value
        if length is not None and (not isinstance(value, (list, tuple)) or len(value) != length):
            raise ValueError(f"{name}: {field} needs {expected}, found {value!r}")
        if not all(_is_count(item) for item in items):
            raise ValueError(f"{name}: {field} needs {expected}, found {value!r}")
        if field in PIXEL_FIELDS and max(items) > MAX_WINDOW:
            raise ValueError(f"{name}: {field} needs values in [1, {MAX_WINDOW}] (pixels of a stage's map), "
                             f"found {value!r}")


def _check_fields(name: str, values: dict, counts: dict[str, int | None]) -> None:
    """Refuse config values that no block can use, before the config classes (which would divide by them) see them.

    Checked: the integer fields (:func:`_check_counts`), ``mlp_ratio`` (a number
    giving an MLP of at least one unit at the narrowest width) and the booleans.
    """
    _check_counts(name, values, counts)
    ratio, narrowest = values.get("mlp_ratio"), min(values["widths"])
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) \
            or int(narrowest * ratio) < 1:
        raise ValueError(f"{name}: mlp_ratio needs a finite number with int(width * mlp_ratio) >= 1 at the "
                         f"narrowest width {narrowest}, found {ratio!r}")
    for field in BOOL_FIELDS:
        if field in values and not isinstance(values[field], bool):
            raise ValueError(f"{name}: {field} needs true or false, found {values[field]!r}")


def model_config(name: str, **overrides) -> EDCConfig | CloudSegConfig:
    """The configuration ``build_model(name, **overrides)`` would use, without building the model.

    Every field is checked for sense (:func:`_check_fields`) before the config is made.
    """
    _check_name(name)
    overrides = dict(overrides)
    if name == "cloudseg_ref":
        unknown = sorted(set(overrides) - set(CloudSegConfig.field_names()))
        if unknown:
            raise ValueError(
                f"cloudseg_ref: unknown override(s) {unknown}; valid: {', '.join(CloudSegConfig.field_names())}"
            )
        _check_fields(name, {**asdict(CloudSegConfig()), **overrides}, COUNT_FIELDS["cloudseg_ref"])
        return replace(CloudSegConfig(), **overrides)
    if name in EDC_CONFIGS:
        if "scale" in overrides:
            raise ValueError(f"{name}: 'scale' is only for baselines and ablations; {name} is already one size")
        base = EDC_CONFIGS[name]
    else:
        scale = overrides.pop("scale", DEFAULT_SCALE)
        if scale not in SCALES:
            raise ValueError(f"{name}: scale must be one of {', '.join(SCALES)}, found {scale!r}")
        base = EDC_CONFIGS[f"edc_{scale}"]
    fixed = VARIANTS.get(name, {})
    unknown = sorted(set(overrides) - set(EDCConfig.field_names()))
    if unknown:
        valid = list(EDCConfig.field_names()) + (["scale"] if name not in EDC_CONFIGS else [])
        raise ValueError(f"{name}: unknown override(s) {unknown}; valid: {', '.join(valid)}")
    clashes = sorted(field for field in overrides if field in fixed and overrides[field] != fixed[field])
    if clashes:
        raise ValueError(f"{name}: fixes {({field: fixed[field] for field in clashes})}; build another model instead")
    _check_fields(name, {**asdict(base), **overrides, **fixed}, COUNT_FIELDS["edc"])
    return replace(base, **{**overrides, **fixed})


def _construct(name: str, in_optical: int, in_sar: int, num_classes: int, config) -> nn.Module:
    """The model of ``name`` for a checked config (on the current default device)."""
    if name == "cloudseg_ref":
        return CloudSegRef(in_optical, in_sar, num_classes, config, name=name)
    if name in SINGLE_STREAM_INPUTS:
        return SingleStreamModel(SINGLE_STREAM_INPUTS[name], in_optical, in_sar, num_classes, config, name=name)
    return EDC(in_optical, in_sar, num_classes, config, name=name)


def _meta_parameters(name: str, in_optical: int, in_sar: int, num_classes: int, config) -> int:
    with torch.device("meta"):  # shapes only: nothing is allocated
        model = _construct(name, in_optical, in_sar, num_classes, config)
    return sum(parameter.numel() for parameter in model.parameters())


def planned_parameters(name: str, in_optical: int, in_sar: int, num_classes: int, config) -> int:
    """The exact parameter count of ``build_model``'s model for a checked config, allocating nothing.

    Built on the ``meta`` device, and only one or two blocks deep: a stage is
    ``depth`` identical blocks, so the count is linear in each stage's depth.
    With every stage one block deep the count is ``base``; making stage ``k``
    two blocks deep adds one block, ``block_k``; the model has
    ``base + sum_k (depth_k - 1) * block_k``. So depths of 4096 cost no more
    to count than depths of 2.
    """
    shallow = (1,) * len(config.depths)
    base = _meta_parameters(name, in_optical, in_sar, num_classes, replace(config, depths=shallow))
    total = base
    for stage, depth in enumerate(config.depths):
        if depth > 1:
            deeper = shallow[:stage] + (2,) + shallow[stage + 1:]
            block = _meta_parameters(name, in_optical, in_sar, num_classes, replace(config, depths=deeper)) - base
            total += (depth - 1) * block
    return total


def _check_parameter_count(name: str, count: int, overrides: dict) -> None:
    if count > MAX_PARAMETERS:
        sizes = ", ".join(f"{key}={value!r}" for key, value in overrides.items()) or "its default sizes"
        raise ValueError(
            f"build_model({name!r}): expected at most {MAX_PARAMETERS:,} parameters (MAX_PARAMETERS), found "
            f"{count:,} ({count / 1e9:,.1f} G) with {sizes}; choose smaller sizes"
        )


def build_model(name: str, in_optical: int = 4, in_sar: int = 2, num_classes: int = 7, **overrides) -> nn.Module:
    """Build model ``name`` for ``in_optical`` optical bands, ``in_sar`` SAR channels and ``num_classes`` classes.

    ``overrides`` change fields of its config (``EDCConfig`` or ``CloudSegConfig``),
    e.g. ``widths=(16, 32, 64, 96)``; baselines and ablations also take
    ``scale="tiny" | "small" | "base"``. Unknown names or fields raise ``ValueError``
    listing the valid ones; so do sizes no block can use (zero heads, widths or
    dims: ``model_config``) and sizes whose model would hold more than
    ``MAX_PARAMETERS`` parameters (:func:`planned_parameters`), before anything
    is allocated: a checkpoint's ``build_args`` come here unchecked.
    """
    _check_name(name)
    for what, value in (("in_optical", in_optical), ("in_sar", in_sar), ("num_classes", num_classes)):
        _check_count(what, value)
    _check_override_sizes(name, overrides)
    config = model_config(name, **overrides)
    build_args = {"name": name, "in_optical": in_optical, "in_sar": in_sar, "num_classes": num_classes}
    build_args.update({key: list(value) if isinstance(value, tuple) else value for key, value in overrides.items()})
    try:
        json.dumps(build_args)
    except TypeError as error:
        raise ValueError(f"build_model: overrides must be JSON values (numbers, strings, lists): {error}") from None
    _check_parameter_count(name, planned_parameters(name, in_optical, in_sar, num_classes, config), overrides)
    model = _construct(name, in_optical, in_sar, num_classes, config)
    model.build_args = build_args
    return model
