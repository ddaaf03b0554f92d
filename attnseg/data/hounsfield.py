"""CT channels whose numbers are not Hounsfield units.

CT is normalised on a fixed scale (:mod:`attnseg.data.plan`, scheme ``ct``): air about -1000, water 0,
soft tissue 0 to 100. A scan exported with its rescale intercept applied twice (values stored as HU, then
shifted by the intercept again) has its air at about -2048 and its soft tissue below -900: every value the
network sees is 1024 HU off, and nothing fails. The rule that finds it: almost no voxel in the soft-tissue
range, and the air peak far below -1000. The value outside the field of view (a scanner's padding, often
the minimum: -2048, -3024) is left out first, so a correct scan padded with -2048 is not taken for one.
"""

from __future__ import annotations

import numpy as np

CT_CHANNEL = "ct"  # nnU-Net's channel name for CT (any case): the ``ct`` normalisation and this check
SOFT_TISSUE_HU = (-150.0, 250.0)
MIN_SOFT_TISSUE_SHARE = 0.02  # a body CT has tens of per cent there; a wrist in a large field of view a few
AIR_SEARCH_HU = (-2600.0, -600.0)
AIR_BIN_HU = 25.0
AIR_EXPECTED_HU = -1000.0
AIR_TOO_LOW_HU = -1500.0  # halfway between the air of a scan in HU and of one shifted by 1024
SAMPLE_VOXELS = 2_000_000  # a strided sample: the check costs the same on a 512 x 512 x 600 CT


def is_ct_channel(name: str) -> bool:
    """Whether a dataset.json channel name says CT (nnU-Net's convention)."""
    return name.strip().lower() == CT_CHANNEL


def hounsfield_problem(values: np.ndarray) -> str | None:
    """Why a CT channel's values are not Hounsfield units, or None when they look like them."""
    flat = np.asarray(values).ravel()
    flat = flat[:: max(1, flat.size // SAMPLE_VOXELS)]
    body = flat[flat != flat.min()]  # without the padding value outside the field of view
    if body.size == 0:
        return None
    low, high = SOFT_TISSUE_HU
    soft = float(np.count_nonzero((body >= low) & (body <= high))) / body.size
    if soft >= MIN_SOFT_TISSUE_SHARE:
        return None
    peak = _air_peak(body)
    if peak is None or peak > AIR_TOO_LOW_HU:
        return None
    return (
        f"CT values are not Hounsfield units: the air peaks at about {peak:.0f} (expected about "
        f"{AIR_EXPECTED_HU:.0f}) and {soft:.1%} of the voxels lie in the soft-tissue range "
        f"[{low:.0f}, {high:.0f}]: its values look shifted by about {peak - AIR_EXPECTED_HU:.0f} HU; was the "
        "rescale intercept applied twice? Re-export the scan"
    )


def _air_peak(body: np.ndarray) -> float | None:
    """The centre of the most populated 25 HU bin between -2600 and -600 HU (where the air of a scan in HU,
    or shifted by one intercept, lies); None when no voxel is there."""
    start, stop = AIR_SEARCH_HU
    air = body[(body >= start) & (body < stop)]
    if air.size == 0:
        return None
    counts, edges = np.histogram(air, bins=np.arange(start, stop + AIR_BIN_HU, AIR_BIN_HU))
    return float(edges[int(np.argmax(counts))] + AIR_BIN_HU / 2)
