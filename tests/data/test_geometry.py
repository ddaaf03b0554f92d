import json

import nibabel as nib
import numpy as np
import pytest

from attnseg.data.geometry import Geometry, ras_lps_flip


def test_affine_is_direction_times_spacing_plus_origin(oblique):
    affine = oblique.affine
    assert affine.shape == (4, 4)
    np.testing.assert_allclose(affine[:3, :3], oblique.direction_matrix @ np.diag(oblique.spacing))
    np.testing.assert_allclose(affine[:3, 3], oblique.origin)
    np.testing.assert_allclose(affine[3], [0, 0, 0, 1])
    # a voxel index maps to the same world point through the affine and index_to_world
    index = np.array([2.0, 5.0, 1.5])
    np.testing.assert_allclose((affine @ [*index, 1])[:3], oblique.index_to_world(index))
    np.testing.assert_allclose(oblique.world_to_index(oblique.index_to_world(index)), index, atol=1e-12)


def test_from_affine_inverts_affine(oblique):
    assert Geometry.from_affine(oblique.affine).allclose(oblique, atol=1e-12)
    assert Geometry.from_ras_affine(oblique.ras_affine).allclose(oblique, atol=1e-12)


def test_ras_conversion_negates_x_and_y():
    g = Geometry.create([1.0, 2.0, 3.0], [10.0, 20.0, 30.0])
    ras = g.ras_affine
    np.testing.assert_allclose(ras[:3, 3], [-10.0, -20.0, 30.0])
    np.testing.assert_allclose(np.diag(ras)[:3], [-1.0, -2.0, 3.0])
    np.testing.assert_allclose(ras_lps_flip(ras), g.affine)


def test_matches_nibabel_orientation_of_a_ras_image():
    # nibabel's canonical RAS affine: axes point Right, Anterior, Superior
    g = Geometry.from_ras_affine(np.diag([1.0, 1.0, 1.0, 1.0]))
    assert g.orientation() == "RAS"
    assert "".join(nib.aff2axcodes(g.ras_affine)) == "RAS"
    lps = Geometry.create([1, 1, 1])
    assert lps.orientation() == "LPS" and "".join(nib.aff2axcodes(lps.ras_affine)) == "LPS"


def test_json_round_trip(oblique):
    data = json.loads(json.dumps(oblique.to_dict()))
    assert data["convention"] == "LPS"
    back = Geometry.from_dict(data)
    assert back == oblique
    with pytest.raises(ValueError, match="convention"):
        Geometry.from_dict({**data, "convention": "RAS"})


def test_allclose_and_differences(oblique):
    moved = Geometry.create(oblique.spacing, np.add(oblique.origin, [0, 0, 2e-6]), oblique.direction)
    assert not oblique.allclose(moved)
    assert oblique.allclose(moved, atol=1e-5)
    assert oblique.differences(moved)[0].startswith("origin")
    assert not oblique.allclose(Geometry.create([1.0, 1.0]))


def test_shifted_origin_is_the_world_position_of_the_start_voxel(oblique):
    crop = oblique.shifted([0, 0, 4])
    np.testing.assert_allclose(crop.origin, oblique.index_to_world([0, 0, 4]))
    # voxel (1, 2, 0) of the crop is voxel (1, 2, 4) of the original
    np.testing.assert_allclose(crop.index_to_world([1, 2, 0]), oblique.index_to_world([1, 2, 4]))


def test_two_dimensional_geometry():
    g = Geometry.create([0.5, 0.25], [1.0, 2.0])
    assert g.affine.shape == (3, 3)
    assert Geometry.from_ras_affine(g.ras_affine) == g


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spacing": [1.0, 0.0, 1.0]}, r"spacing must be positive and finite, got \(1\.0, 0\.0, 1\.0\)"),
        (
            {"spacing": [1.0, 1.0, 1.0], "origin": [0.0, 0.0]},
            r"inconsistent geometry: spacing \(1\.0, 1\.0, 1\.0\), origin \(0\.0, 0\.0\)",
        ),
        ({"spacing": [1.0]}, r"Geometry supports 2 or 3 spatial dimensions, got spacing \(1\.0,\)"),
        ({"spacing": [1.0, float("nan"), 1.0]}, r"spacing must be positive and finite, got \(1\.0, nan, 1\.0\)"),
        ({"spacing": [1.0, 1.0], "origin": [0.0, float("inf")]}, r"origin and direction must be finite"),
    ],
)
def test_invalid_geometry_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Geometry.create(**kwargs)
