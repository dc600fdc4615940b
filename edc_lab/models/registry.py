"""``build_model``: every model of edc_lab by name, with overrides.

``build_model("edc_tiny")`` builds EDC's CPU-teaching size; ``build_model("edc_base",
windows=(7, 7))`` changes one size; ``build_model("optical_only", scale="base")``
builds a baseline at another EDC size (baselines and ablations default to the
``tiny`` size, the one that trains in minutes on a CPU). The returned model
carries ``build_args``, a JSON-serialisable dict such that
``build_model(**model.build_args)`` rebuilds it (checkpoints store it), and
``has_cloud_removal``.

Names: ``edc_tiny``, ``edc_small``, ``edc_base`` (EDC, ``edc.py``);
``optical_only``, ``sar_only``, ``early_fusion``, ``dense_edc``,
``edc_no_dchf``, ``edc_no_cr`` (``baselines.py``); ``cloudseg_ref`` (the
CloudSeg-sized reference for the efficiency comparison, ``cloudseg.py``).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

from torch import nn

from edc_lab.models.baselines import SINGLE_STREAM_INPUTS, VARIANTS, SingleStreamModel
from edc_lab.models.cloudseg import CloudSegConfig, CloudSegRef
from edc_lab.models.edc import EDC, EDC_CONFIGS, EDCConfig

__all__ = ["MODEL_NAMES", "SCALES", "build_model", "model_config"]

MODEL_NAMES: tuple[str, ...] = (
    "edc_tiny",
    "edc_small",
    "edc_base",
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


def model_config(name: str, **overrides) -> EDCConfig | CloudSegConfig:
    """The configuration ``build_model(name, **overrides)`` would use, without building the model."""
    _check_name(name)
    overrides = dict(overrides)
    if name == "cloudseg_ref":
        unknown = sorted(set(overrides) - set(CloudSegConfig.field_names()))
        if unknown:
            raise ValueError(
                f"cloudseg_ref: unknown override(s) {unknown}; valid: {', '.join(CloudSegConfig.field_names())}"
            )
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
    return replace(base, **{**overrides, **fixed})


def build_model(name: str, in_optical: int = 4, in_sar: int = 2, num_classes: int = 7, **overrides) -> nn.Module:
    """Build model ``name`` for ``in_optical`` optical bands, ``in_sar`` SAR channels and ``num_classes`` classes.

    ``overrides`` change fields of its config (``EDCConfig`` or ``CloudSegConfig``),
    e.g. ``widths=(16, 32, 64, 96)``; baselines and ablations also take
    ``scale="tiny" | "small" | "base"``. Unknown names or fields raise ``ValueError``
    listing the valid ones.
    """
    _check_name(name)
    for what, value in (("in_optical", in_optical), ("in_sar", in_sar), ("num_classes", num_classes)):
        _check_count(what, value)
    _check_override_sizes(name, overrides)
    config = model_config(name, **overrides)
    if name == "cloudseg_ref":
        model = CloudSegRef(in_optical, in_sar, num_classes, config, name=name)
    elif name in SINGLE_STREAM_INPUTS:
        model = SingleStreamModel(SINGLE_STREAM_INPUTS[name], in_optical, in_sar, num_classes, config, name=name)
    else:
        model = EDC(in_optical, in_sar, num_classes, config, name=name)
    build_args = {"name": name, "in_optical": in_optical, "in_sar": in_sar, "num_classes": num_classes}
    build_args.update({key: list(value) if isinstance(value, tuple) else value for key, value in overrides.items()})
    try:
        json.dumps(build_args)
    except TypeError as error:
        raise ValueError(f"build_model: overrides must be JSON values (numbers, strings, lists): {error}") from None
    model.build_args = build_args
    return model
