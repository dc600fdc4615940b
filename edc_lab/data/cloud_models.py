"""Named cloud models: the options of ``add_clouds`` that training, evaluation and experiments share.

``add_clouds`` (``edc_lab.data.clouds``) has four knobs that decide how much of the ground a
cloud hides: the opacity of the cloud cores (``thickness``), the share of thin, see-through
cloud among the cloudy pixels (``thin_fraction``), a scene-wide haze veil outside the mask
(``haze``) and cloud shadows (``shadows``). Two settings have names:

* ``"realistic"`` (the default everywhere): cores of opacity 0.2-1.0 drawn per scene, 80 % of
  cloudy pixels thin, haze of opacity 0-0.8 drawn per scene, shadows. Its statistics span the real
  M3M-CR tile's (notebook 01). Most cloudy pixels still show the ground (at cover 0.6 the mean
  opacity inside the mask is about 0.4), and much of the damage comes from the haze, which is
  outside the mask: a mask-driven mechanism such as DCHF's reliability can do little about it.
* ``"opaque"``: the controlled setting of the DCHF experiment (``benchmarks/RESULTS.md``): cores
  fully opaque (thickness 1), 10 % thin edges, no haze, shadows. Under the mask the optical image
  holds no information about the ground; outside it, it is untouched except in shadows. So the
  cloud mask says exactly where the optical image is unreliable, which is what DCHF's reliability
  is meant to know.

``cloud_model(name, **overrides)`` returns the options as a dict for ``add_clouds``,
``synthetic_scene``, ``SyntheticScenes`` and ``build_dataset(clouds=...)``.

Whose idea: the knobs are ``add_clouds``'s (ours); the named models are edc_lab's choice.
"""

from __future__ import annotations

from typing import Any

from edc_lab.data.clouds import DEFAULT_HAZE, DEFAULT_THICKNESS, DEFAULT_THIN_FRACTION, unit_range

__all__ = ["CLOUD_MODELS", "CLOUD_OPTIONS", "cloud_model"]

#: the options a cloud model sets
CLOUD_OPTIONS: tuple[str, ...] = ("thickness", "thin_fraction", "haze", "shadows")

CLOUD_MODELS: dict[str, dict[str, Any]] = {
    "realistic": {"thickness": DEFAULT_THICKNESS, "thin_fraction": DEFAULT_THIN_FRACTION, "haze": DEFAULT_HAZE,
                  "shadows": True},
    "opaque": {"thickness": 1.0, "thin_fraction": 0.1, "haze": 0.0, "shadows": True},
}


def cloud_model(name: str = "realistic", **overrides: Any) -> dict[str, Any]:
    """The ``add_clouds`` options of cloud model ``name``, with ``overrides`` (None values are skipped).

    >>> cloud_model("opaque")["haze"]
    0.0
    >>> cloud_model("realistic", haze=0.0)["thin_fraction"]
    0.8
    """
    if name not in CLOUD_MODELS:
        raise ValueError(f"cloud_model: expected a name in {tuple(CLOUD_MODELS)}, found {name!r}")
    unknown = sorted(set(overrides) - set(CLOUD_OPTIONS))
    if unknown:
        raise ValueError(f"cloud_model: unknown option(s) {unknown}; expected some of {CLOUD_OPTIONS}")
    options = {**CLOUD_MODELS[name], **{key: value for key, value in overrides.items() if value is not None}}
    for key in ("thickness", "haze"):
        value = options[key]
        options[key] = tuple(float(v) for v in value) if isinstance(value, (tuple, list)) else float(value)
        unit_range(key, options[key], owner="cloud_model")
    fraction = options["thin_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"cloud_model: expected thin_fraction in [0, 1], found {fraction!r}")
    options["thin_fraction"] = float(fraction)
    if not isinstance(options["shadows"], bool):
        raise ValueError(f"cloud_model: expected shadows True or False, found {options['shadows']!r}")
    return options
