"""Synthetic cloudy optical–SAR scenes: the embedded default data of edc_lab.

The idea in plain words
-----------------------
To learn what optical–SAR fusion buys under clouds you need scenes where it
matters, instantly and without a download. A synthetic scene is drawn in four
steps, all seeded (``numpy.random.default_rng(seed)``, same seed, same scene):
a land-cover map with WHU-OPT-SAR's seven classes, optical reflectance and SAR
backscatter from per-class signatures, and clouds on the optical image. The
signatures are designed so that fusion matters: each sensor confuses classes
the other separates (under a thick cloud the SAR still finds villages, roads,
water, forest and the city, but farmland and others become one blur; without
the SAR, villages and roads vanish into the bare ground).

Where each part lives
---------------------
One idea per file; this module re-exports their names, so notebooks, tests
and ``build_dataset`` import them from ``edc_lab.data.synthetic``:

* :mod:`edc_lab.data.synthetic_land_cover`: step 1, the landscape and its
  within-class structure (``land_cover``, ``smooth_fields``, the class indices
  ``FARMLAND`` ... ``OTHERS``);
* :mod:`edc_lab.data.synthetic_signatures`: steps 2 and 3, the per-class
  spectra and backscatter, speckle and the SAR scaling, with the measured
  separability of the class pairs by optical and by SAR (``OPTICAL_MEAN``,
  ``SAR_MEAN_DB``, ``SPECKLE_LOOKS``, ``SAR_DB_RANGE``, ...);
* :mod:`edc_lab.data.synthetic_assembly`: the four steps in order, and the
  ``"context"`` family whose spectra carry a per-scene shift (``scene_arrays``,
  ``synthetic_scene``, ``SceneArrays``, ``context_gains``, ``CONTEXT_GAIN``,
  ``SCENE_FAMILIES``, ``PIXEL_SIZE_M``, ``SCENE_CRS``);
* :mod:`edc_lab.data.synthetic_dataset`: the torch dataset and its speed
  (``SyntheticScenes``, ``scene_seed``).

Whose idea is it
----------------
The class set and the 5 m grid are WHU-OPT-SAR's; the SAR scaling is
M3M-CR's (both used by EDC, arXiv 2603.20811, and by its predecessor CloudSeg).
The scene generator, its numbers and the separability design are our choice.
"""

from edc_lab.data.synthetic_assembly import (
    CONTEXT_GAIN,
    PIXEL_SIZE_M,
    SCENE_CRS,
    SCENE_FAMILIES,
    SceneArrays,
    context_gains,
    scene_arrays,
    synthetic_scene,
)
from edc_lab.data.synthetic_dataset import SyntheticScenes, scene_seed
from edc_lab.data.synthetic_land_cover import (
    CITY,
    FARMLAND,
    FOREST,
    OTHERS,
    ROAD,
    VILLAGE,
    WATER,
    land_cover,
    smooth_fields,
)
from edc_lab.data.synthetic_signatures import (
    OPTICAL_LOADING,
    OPTICAL_LOADING_T,
    OPTICAL_MEAN,
    OPTICAL_MEAN_T,
    OPTICAL_NOISE,
    SAR_DB_RANGE,
    SAR_LOADING_DB,
    SAR_LOADING_DB_T,
    SAR_MEAN_DB,
    SAR_MEAN_DB_T,
    SPECKLE_LOOKS,
)

__all__ = [
    "FARMLAND",
    "CITY",
    "VILLAGE",
    "WATER",
    "FOREST",
    "ROAD",
    "OTHERS",
    "land_cover",
    "smooth_fields",
    "OPTICAL_MEAN",
    "OPTICAL_LOADING",
    "OPTICAL_NOISE",
    "SAR_MEAN_DB",
    "SAR_LOADING_DB",
    "SPECKLE_LOOKS",
    "SAR_DB_RANGE",
    "OPTICAL_MEAN_T",
    "OPTICAL_LOADING_T",
    "SAR_MEAN_DB_T",
    "SAR_LOADING_DB_T",
    "PIXEL_SIZE_M",
    "SCENE_CRS",
    "SCENE_FAMILIES",
    "CONTEXT_GAIN",
    "SceneArrays",
    "context_gains",
    "scene_arrays",
    "synthetic_scene",
    "scene_seed",
    "SyntheticScenes",
]
