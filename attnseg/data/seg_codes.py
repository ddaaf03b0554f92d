"""Coded meanings for segment names: what a DICOM Segmentation says each class *is*.

A DICOM SEG segment carries a segmented-property category (what kind of thing: an anatomical structure,
a morphologically abnormal structure, a tissue) and a type (which thing: liver, lesion), as SNOMED CT
codes, so that a viewer or a PACS can tell what a segment is without reading its free-text label. The
class names of a dataset.json are free text; this table maps the common ones. A name that maps to none
gets the generic pair (category Tissue, type Tissue: SCT 85756007), and the segment label keeps the
class name (docs/dicom.md says so).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Class name (lower case, words joined by "_") -> (category keyword, type keyword) in pydicom's SCT codes.
_ANATOMY = "AnatomicalStructure"
_ABNORMAL = "MorphologicallyAbnormalStructure"
_KNOWN: dict[str, tuple[str, str]] = {
    "organ": (_ANATOMY, "Organ"),
    "liver": (_ANATOMY, "Liver"),
    "spleen": (_ANATOMY, "Spleen"),
    "kidney": (_ANATOMY, "Kidney"),
    "pancreas": (_ANATOMY, "Pancreas"),
    "lung": (_ANATOMY, "Lung"),
    "heart": (_ANATOMY, "Heart"),
    "brain": (_ANATOMY, "Brain"),
    "prostate": (_ANATOMY, "Prostate"),
    "aorta": (_ANATOMY, "Aorta"),
    "stomach": (_ANATOMY, "Stomach"),
    "gallbladder": (_ANATOMY, "Gallbladder"),
    "esophagus": (_ANATOMY, "Esophagus"),
    "trachea": (_ANATOMY, "Trachea"),
    "colon": (_ANATOMY, "Colon"),
    "hippocampus": (_ANATOMY, "Hippocampus"),
    "vertebra": (_ANATOMY, "Vertebra"),
    "bone": ("Tissue", "Bone"),
    "muscle": ("Tissue", "Muscle"),
    "grey_matter": ("Tissue", "GrayMatter"),
    "gray_matter": ("Tissue", "GrayMatter"),
    "white_matter": ("Tissue", "WhiteMatter"),
    "csf": ("Tissue", "CerebrospinalFluid"),
    "cerebrospinal_fluid": ("Tissue", "CerebrospinalFluid"),
    "lesion": (_ABNORMAL, "Lesion"),
    "tumor": (_ABNORMAL, "Neoplasm"),
    "tumour": (_ABNORMAL, "Neoplasm"),
    "neoplasm": (_ABNORMAL, "Neoplasm"),
    "mass": (_ABNORMAL, "Mass"),
}
GENERIC = ("Tissue", "Tissue")


@dataclass(frozen=True)
class SegmentCodes:
    """The category and type codes of one class (pydicom ``Code`` objects), and whether the name was known."""

    category: Any
    type: Any
    known: bool


def segment_codes(class_name: str) -> SegmentCodes:
    """The SNOMED CT category and type for ``class_name`` ("Liver", "white matter", "lesion_1"...).

    The name is lower-cased, runs of non-letters become "_", and a trailing number or side
    ("kidney_left", "lesion_2") is dropped before the look-up; anything else gets :data:`GENERIC`.
    """
    from pydicom.sr.codedict import codes

    key = re.sub(r"[^a-z]+", "_", class_name.lower()).strip("_")
    key = re.sub(r"_(left|right|l|r)$", "", key)
    pair = _KNOWN.get(key)
    category, kind = pair or GENERIC
    return SegmentCodes(getattr(codes.SCT, category), getattr(codes.SCT, kind), pair is not None)
