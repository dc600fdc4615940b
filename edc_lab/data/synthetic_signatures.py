"""Steps 2 and 3 of a synthetic scene: what each class looks like, its clear-sky reflectance and its SAR
backscatter, with the within-class loadings, the sensor noise, the speckle and the SAR scaling to [0, 1].

The signals
-----------
**Optical reflectance** (blue, green, red, nir) is the class spectrum
(:data:`OPTICAL_MEAN`) plus within-class texture (crop vigour, canopy,
bare-soil/grass mixing, building/street pattern: :data:`OPTICAL_LOADING` times
the ``detail`` of :func:`edc_lab.data.synthetic_land_cover.land_cover`) and
sensor noise (:data:`OPTICAL_NOISE`). Vegetation is bright in NIR, water is dark.

**SAR backscatter** (VV, VH) in dB is the class mean (:data:`SAR_MEAN_DB`) plus
the same within-class structure (:data:`SAR_LOADING_DB`) (water ≈ −22 dB VV,
city bright by double bounce, forest high VH by volume scattering), with
multiplicative Gamma speckle of ENL 4 (:data:`SPECKLE_LOOKS`), then clipped and
scaled to [0, 1] with the M3M-CR convention (VV: [−25, 0] dB, VH: [−32.5, 0] dB,
linear to [0, 1]: :data:`SAR_DB_RANGE`). How one scene combines them is
:func:`edc_lab.data.synthetic_assembly.scene_arrays`.

Which classes separate where (designed so that fusion matters)
--------------------------------------------------------------
Per-pixel Fisher ratio ``J = d^T (S_a + S_b)^-1 d`` (d: difference of the
class means, S: class covariances; > 1 separates well, ≈ 0 not at all) on
clear optical (4 bands) and on SAR (VV, VH), measured on seeds 21-23 at 256²:

=================  =====================  =====================  =============
pair               optical                SAR                    J opt / J sar
=================  =====================  =====================  =============
farmland – others  yes (NDVI: NIR, red)   **no** (same σ0)       17.6 / 0.00
village – others   **no** (same spectrum) yes (double bounce)    0.00 / 2.7
road – others      **no** (same spectrum) yes (smooth: dark)     0.01 / 7.9
village – road     **no**                 yes                    0.02 / 16.6
village – forest   yes (canopy)           **weak** (both bright) 41.5 / 0.20
water – road       yes (NIR)              **weak** (both dark)   197 / 1.7
farmland – forest  yes (darker canopy)    yes (VH volume)        10.4 / 3.3
city – village     yes (bright, low NIR)  partly (brighter)      7.9 / 1.4
water – others     yes                    yes                    196 / 17.3
=================  =====================  =====================  =============

A nearest-class-mean classifier on single pixels reaches a balanced accuracy
of about 0.69 on the optical alone, 0.60 on the SAR alone and 0.95 on both.
So under a thick cloud the SAR still finds villages, roads, water, forest and
the city, but farmland and others become one blur; without the SAR, villages
and roads vanish into the bare ground. ``tests/test_synthetic.py`` asserts
these orderings. At 5 m a village (roofs, courtyards, trees) and a narrow
road (mixed with its verges) really do look much like bare or grassy ground;
making them *identical* in the optical is our simplification, to make the
lesson sharp.

Whose idea: the SAR scaling is M3M-CR's (used by EDC, arXiv 2603.20811, and by
its predecessor CloudSeg); the spectra, the backscatter and the separability
design are our choice.
"""

from __future__ import annotations

import numpy as np

#: Clear-sky surface reflectance per class: (class, band) with bands blue, green, red, nir.
OPTICAL_MEAN = np.array(
    [
        [0.045, 0.085, 0.060, 0.320],  # farmland: green crops, high NIR
        [0.115, 0.120, 0.125, 0.160],  # city: bright grey roofs and concrete, low NIR
        [0.085, 0.105, 0.120, 0.210],  # village: like others (roofs, courtyards, trees mixed)
        [0.070, 0.075, 0.050, 0.025],  # water: dark, darkest in NIR
        [0.030, 0.055, 0.035, 0.290],  # forest: dark visible canopy, high NIR
        [0.085, 0.105, 0.120, 0.210],  # road: like others (narrow, mixed with verges)
        [0.085, 0.105, 0.120, 0.210],  # others: bare soil and grass
    ],
    dtype=np.float32,
)

#: How the within-class structure ``detail`` (about -1..1) changes reflectance: (class, band).
OPTICAL_LOADING = np.array(
    [
        [-0.010, 0.010, -0.025, 0.080],  # farmland: crop vigour (more green/NIR, less red)
        [0.030, 0.030, 0.030, 0.025],  # city: building roofs bright, streets dark
        [-0.010, 0.000, -0.020, 0.030],  # village: same mixing direction as others
        [0.005, 0.010, 0.010, 0.005],  # water: turbidity
        [0.005, 0.010, 0.005, 0.040],  # forest: canopy density
        [-0.010, 0.000, -0.020, 0.030],  # road: same as others
        [-0.010, 0.000, -0.020, 0.030],  # others: bare soil <-> grass
    ],
    dtype=np.float32,
)

#: Per-pixel optical noise standard deviation per class (reflectance units).
OPTICAL_NOISE = np.array([0.006, 0.012, 0.008, 0.003, 0.008, 0.008, 0.008], dtype=np.float32)

#: Mean backscatter per class, dB: (class, polarization) with polarizations VV, VH.
SAR_MEAN_DB = np.array(
    [
        [-12.0, -19.0],  # farmland: rough soil + crop, like others
        [-3.0, -9.5],  # city: double bounce (wall-ground corner reflectors)
        [-7.0, -14.0],  # village: weaker double bounce (small, low houses)
        [-22.0, -29.0],  # water: specular, dark
        [-8.5, -13.5],  # forest: volume scattering, high VH
        [-19.0, -26.0],  # road: smooth asphalt, dark
        [-12.0, -19.0],  # others: bare soil and grass
    ],
    dtype=np.float32,
)

#: How ``detail`` changes backscatter (dB per unit detail): (class, polarization).
SAR_LOADING_DB = np.array(
    [[1.5, 1.5], [5.0, 3.5], [3.0, 2.0], [1.0, 1.0], [1.0, 1.0], [0.5, 0.5], [1.5, 1.5]],
    dtype=np.float32,
)

#: Equivalent number of looks of the Gamma speckle.
SPECKLE_LOOKS: float = 4.0
#: M3M-CR's SAR scaling: dB range per polarization mapped linearly to [0, 1].
SAR_DB_RANGE: dict[str, tuple[float, float]] = {"VV": (-25.0, 0.0), "VH": (-32.5, 0.0)}

# Per-class tables laid out (quantity, class) so that ``np.take(TABLE, label, axis=1)``
# gives (quantity, S, S) per-pixel values (``take`` is several times faster than ``TABLE[:, label]``).
OPTICAL_MEAN_T = np.ascontiguousarray(OPTICAL_MEAN.T)
OPTICAL_LOADING_T = np.ascontiguousarray(OPTICAL_LOADING.T)
SAR_MEAN_DB_T = np.ascontiguousarray(SAR_MEAN_DB.T)
SAR_LOADING_DB_T = np.ascontiguousarray(SAR_LOADING_DB.T)
for _table in (OPTICAL_MEAN, OPTICAL_LOADING, OPTICAL_NOISE, SAR_MEAN_DB, SAR_LOADING_DB,
               OPTICAL_MEAN_T, OPTICAL_LOADING_T, SAR_MEAN_DB_T, SAR_LOADING_DB_T):
    _table.setflags(write=False)  # shared constants: read-only
