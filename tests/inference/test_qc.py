"""Quality control on hand-made cases: each flag raised by the one thing it names, the soft Dice and the
boundary entropy computed by hand, the verdict the worst severity, and qc.json / qc.csv from a real run."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import ndimage

from attnseg.data import Geometry, Image
from attnseg.data.preprocess import otsu_threshold
from attnseg.data.training_fingerprint import (
    PERCENTILES,
    SAMPLE_SIZE,
    IntensityMeasures,
    border_share,
    case_fingerprint,
    intensity_measures,
    mask_measures,
    standardized,
    summarize,
    voxel_sample,
)
from attnseg.inference.qc import (
    FAIL_FACTOR,
    FLAG_FACTOR,
    HANDLED_FACTOR,
    INTENSITY_FAIL_MULTIPLE,
    CaseQC,
    Flag,
    Votes,
    _intensity_flags,
    assess_case,
    boundary_entropy,
    header_flags,
    mutual_dice,
    predicted_dice,
    soft_dice,
)
from attnseg.inference.qc_report import csv_text, ordered

VALUES, NAMES = [0, 1], ["background", "ball"]


def ball_case(seed: int, radius: float = 4.0, scale: float = 100.0, shape=(24, 24, 24)) -> tuple[Image, np.ndarray]:
    """A bright ball (the label) in a dimmer body, in air; a little noise."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    centre = np.array(shape, dtype=float)[:, None, None, None] / 2
    distance = np.sqrt(((grid - centre) ** 2).sum(0))
    label = (distance <= radius).astype(np.uint8)
    body = distance <= 10
    array = np.where(label, 2.0, np.where(body, 1.0, 0.0)) * scale + rng.normal(0, 2, shape)
    return Image(array[None].astype(np.float32), Geometry.create((1.0, 1.0, 1.0))), label


@pytest.fixture(scope="module")
def fingerprint() -> dict:
    cases = []
    for seed, radius in enumerate((3.5, 4.0, 4.5, 4.0)):
        image, label = ball_case(seed, radius)
        cases.append(case_fingerprint(f"c{seed}", image, label, VALUES, NAMES))
    return summarize(cases, NAMES, ["MR"])


def one_hot_probabilities(label: np.ndarray, sure: float = 1.0) -> np.ndarray:
    p1 = np.where(label == 1, sure, 1 - sure).astype(np.float32)
    return np.stack([1 - p1, p1])


def codes(qc: CaseQC) -> set[str]:
    return {f.code for f in qc.flags}


def test_the_fingerprint_holds_the_training_ranges(fingerprint):
    ball = fingerprint["classes"]["ball"]
    # the voxel counts of balls of radius 3.5 and 4.5 at 1 mm: the smallest and largest volume (ml)
    assert ball["volume_ml"]["min"] == pytest.approx(ball_case(0, 3.5)[1].sum() / 1000)
    assert ball["volume_ml"]["max"] == pytest.approx(ball_case(2, 4.5)[1].sum() / 1000)
    assert ball["max_components"] == 1 and ball["ever_empty"] is False
    assert fingerprint["spacing"] == {"min": [1.0, 1.0, 1.0], "max": [1.0, 1.0, 1.0]}
    assert fingerprint["intensity"]["threshold"] >= 0.1


def test_a_clean_case_is_ok(fingerprint):
    image, label = ball_case(9, 4.0)
    qc = assess_case("clean", image, label, one_hot_probabilities(label), VALUES, NAMES, fingerprint)
    assert qc.flags == [] and qc.verdict == "ok"
    assert qc.predicted_dice == pytest.approx(1.0)


def test_intensities_rescaled_raise_the_intensity_flag(fingerprint):
    image, label = ball_case(9, 4.0, scale=300.0)
    qc = assess_case("bright", image, label, one_hot_probabilities(label), VALUES, NAMES, fingerprint)
    assert "intensity" in codes(qc) and qc.verdict == "check"  # the shape of the distribution is the same
    assert qc.predicted_dice == pytest.approx(HANDLED_FACTOR)  # a scaling: the normalisation undoes it
    # standardised percentiles are blind to a scaling and a shift, not to an inversion (another contrast)
    percentiles = [[0.0, 10.0, 30.0, 50.0, 60.0, 90.0, 100.0]]
    assert standardized([[3 * v + 7 for v in percentiles[0]]])[0] == pytest.approx(standardized(percentiles)[0])
    assert standardized(percentiles)[0] == pytest.approx([-0.625, -0.5, -0.25, 0.0, 0.125, 0.5, 0.625])
    inverted = standardized([[100 - v for v in reversed(percentiles[0])]])[0]
    assert inverted == pytest.approx([-0.625, -0.5, -0.125, 0.0, 0.25, 0.5, 0.625])


def test_noise_and_a_bias_field_raise_their_own_flags(fingerprint):
    image, label = ball_case(9, 4.0)
    rng = np.random.default_rng(0)
    noisy = Image(image.array + rng.normal(0, 60, image.array.shape).astype(np.float32), image.geometry)
    qc = assess_case("noisy", noisy, label, one_hot_probabilities(label), VALUES, NAMES, fingerprint)
    assert "noise" in codes(qc) and "inhomogeneity" not in codes(qc)
    ramp = np.linspace(0.4, 1.6, 24)[:, None, None]  # x0.4 at one side of the scan, x1.6 at the other
    biased = Image((image.array * ramp).astype(np.float32), image.geometry)
    qc = assess_case("biased", biased, label, one_hot_probabilities(label), VALUES, NAMES, fingerprint)
    assert "inhomogeneity" in codes(qc) and "noise" not in codes(qc)


def test_spacing_and_field_of_view_outside_training(fingerprint):
    image, label = ball_case(9, 4.0)
    coarse = Image(image.array, Geometry.create((1.0, 1.0, 3.0)))
    qc = assess_case("coarse", coarse, label, one_hot_probabilities(label), VALUES, NAMES, fingerprint)
    assert {"spacing", "size"} <= codes(qc)
    assert any("axis 2: 3 mm" in f.message for f in qc.flags if f.code == "spacing")


def test_an_impossible_header_fails():
    image, _ = ball_case(0)
    sheared = Image(image.array, Geometry.create((1.0, 1.0, 1.0), direction=[[1, 0.5, 0], [0, 1, 0], [0, 0, 1]]))
    flags = header_flags(sheared)
    assert [f.code for f in flags] == ["impossible_header"] and flags[0].severity == "fail"


def test_implausible_masks(fingerprint):
    image, label = ball_case(9, 4.0)
    empty = np.zeros_like(label)
    qc = assess_case("empty", image, empty, one_hot_probabilities(empty), VALUES, NAMES, fingerprint)
    assert "empty" in codes(qc) and qc.verdict == "fail"
    two = label.copy()
    two[0:2, 0:2, 10:12] = 1  # a second piece, in the corner: on the border too
    qc = assess_case("two", image, two, one_hot_probabilities(two), VALUES, NAMES, fingerprint)
    assert {"components", "border"} <= codes(qc)
    huge = np.zeros_like(label)
    huge[4:20, 4:20, 4:20] = 1  # 4096 voxels = 4.1 ml, far above 1.5 x the largest ball (~0.38 ml)
    qc = assess_case("huge", image, huge, one_hot_probabilities(huge), VALUES, NAMES, fingerprint)
    assert "volume" in codes(qc)


def test_soft_dice_and_boundary_entropy_by_hand():
    # two voxels in the mask with p=0.5 and 1.0, one outside with p=0.5: 2*1.5 / (2.0 + 2) = 0.75
    probabilities = np.array([[0.5, 0.0, 0.5, 1.0], [0.5, 1.0, 0.5, 0.0]])
    classes = np.array([1, 1, 0, 0])
    assert soft_dice(probabilities, classes) == {1: pytest.approx(0.75)}
    # boundary voxels: 1 and 2 (where the class changes); entropies 0 and 1 (uniform over 2 classes)
    assert boundary_entropy(probabilities, classes) == pytest.approx(0.5)


def test_mutual_dice_and_predicted_dice():
    a = np.array([1, 1, 0, 0])
    b = np.array([1, 0, 0, 0])
    assert mutual_dice([a, b], 2) == pytest.approx(2 / 3)
    estimate, (low, high) = predicted_dice({1: 0.9}, [Flag("x", "check", "")], agreement=0.8)
    assert estimate == pytest.approx(0.8 * 0.85)
    assert low == pytest.approx(estimate - (1 - estimate) / 2) and high == pytest.approx(estimate + (1 - estimate) / 2)


def test_border_share_counts_the_masks_voxels_on_any_face():
    mask = np.zeros((5, 5), dtype=bool)
    mask[0:3, 2] = True  # 3 voxels, one of them on the first row
    assert border_share(mask) == pytest.approx(1 / 3)
    mask[:] = False
    mask[2, 2] = True
    assert border_share(mask) == 0.0


def test_border_share_and_mask_measures_count_each_border_voxel_once():
    labels = np.zeros((4, 1, 3), dtype=np.uint8)  # an axis of one voxel: both its faces are the same slice
    labels[1:3, 0, 1] = 2
    labels[0, 0, 0] = 1
    measures = mask_measures(labels, (1.0, 1.0, 1.0), [0, 1, 2], ["background", "a", "b"])
    assert measures.border_share == {"a": 1.0, "b": 1.0} and measures.volume_ml == {"a": 0.001, "b": 0.002}
    rng = np.random.default_rng(0)
    labels = (rng.random((9, 7, 5)) < 0.3).astype(np.uint8) * rng.integers(1, 3, (9, 7, 5)).astype(np.uint8)
    measures = mask_measures(labels, (1.0, 2.0, 1.0), [0, 1, 2], ["background", "a", "b"])
    inner = np.zeros_like(labels, dtype=bool)
    inner[1:-1, 1:-1, 1:-1] = True
    for value, name in ((1, "a"), (2, "b")):
        mask = labels == value
        assert measures.border_share[name] == pytest.approx((mask & ~inner).sum() / mask.sum())
        assert measures.components[name] == ndimage.label(mask)[1]
        assert measures.volume_ml[name] == pytest.approx(mask.sum() * 2 / 1000)


def _exact_intensity_measures(
    channel: np.ndarray, threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray, float, list[float], float]:
    """The measures' definitions on every voxel: (sorted body values, sorted neighbour differences in the
    body, the 1-99 percentile range, the medians of the first and last third of axis 0's body, Otsu's)."""
    threshold = otsu_threshold(channel.ravel()) if threshold is None else threshold
    body = channel > threshold
    steps = []
    for axis in range(channel.ndim):
        first = [slice(None)] * channel.ndim
        second = [slice(None)] * channel.ndim
        first[axis], second[axis] = slice(0, -1), slice(1, None)
        inside = body[tuple(first)] & body[tuple(second)]
        steps.append(np.abs(channel[tuple(second)] - channel[tuple(first)])[inside])
    low, high = np.percentile(channel, [1.0, 99.0])
    third = channel.shape[0] // 3
    ends = [float(np.median(channel[part][body[part]])) for part in (slice(0, third), slice(-third, None))]
    return np.sort(channel[body]), np.sort(np.concatenate(steps)), float(high - low), ends, threshold


def _rank(sorted_values: np.ndarray, value: float) -> float:
    """Where ``value`` falls among ``sorted_values`` (0 to 1; ties: the middle of their ranks)."""
    left, right = np.searchsorted(sorted_values, value, "left"), np.searchsorted(sorted_values, value, "right")
    return (left + right) / 2 / len(sorted_values)


def test_intensity_measures_from_a_sample_stay_within_their_stated_bound():
    """On a scan larger than the sample: every body percentile, and the noise (a median), fall within the
    rank bound the docstring states of the whole scan's, and the drift within 5% of it; on a scan of at
    most SAMPLE_SIZE voxels, every number is the exact one."""
    shape = (96, 80, 40)  # 307,200 voxels: a sample of SAMPLE_SIZE of them
    assert np.prod(shape) > 4 * SAMPLE_SIZE
    grid = (np.indices(shape) + 0.5) / np.array(shape)[:, None, None, None] - 0.5
    radius = np.sqrt((grid**2).sum(0)) * 2  # 1 on the faces' centres: an ellipsoid body filling the scan
    tissue = np.where(radius < 0.4, 2.0, np.where(radius < 0.95, 1.0, 0.0)) * 100
    ramp = np.linspace(0.7, 1.3, shape[0])[:, None, None]  # a bias field along axis 0, for the drift
    noise = np.random.default_rng(3).normal(0, 8, shape)
    channel = (tissue * ramp + noise).astype(np.float32)
    measured = intensity_measures(channel[None])
    body, steps, scale, ends, _ = _exact_intensity_measures(channel)
    # the DKW bound at 1 - 1e-6 for SAMPLE_SIZE body voxels (the noise has more pairs than that)
    assert len(body) > SAMPLE_SIZE
    bound = np.sqrt(np.log(2 / 1e-6) / (2 * SAMPLE_SIZE))
    assert 0.02 < bound < 0.022
    for percentile, value in zip(PERCENTILES, measured.body_percentiles[0], strict=True):
        assert abs(_rank(body, value) - percentile / 100) <= bound, percentile
    assert abs(_rank(steps, measured.noise * scale) - 0.5) <= bound
    exact_drift = abs(ends[0] - ends[1]) / scale
    assert exact_drift > 0.05 and measured.drift == pytest.approx(exact_drift, rel=0.05)

    small = channel[:25, :25, :25]  # 15,625 voxels: all of them
    assert small.size <= SAMPLE_SIZE
    measured = intensity_measures(small[None])
    body, steps, scale, _, _ = _exact_intensity_measures(small)
    assert measured.body_percentiles[0] == pytest.approx(list(np.percentile(body, PERCENTILES)))
    assert measured.noise == pytest.approx(float(np.median(steps)) / scale)


def test_a_body_in_a_small_part_of_a_large_scan_is_measured_on_all_its_voxels():
    """The top slices of a head: a few thousand body voxels in a large scan. Sampled from the scan, the
    body would get a few dozen voxels; the body's own sample holds every body voxel, so its percentiles
    and noise are the exact ones (with the same threshold: Otsu's on the scan's sample)."""
    shape = (120, 120, 30)  # 432,000 voxels
    distance = np.sqrt(((np.indices(shape) - (np.array(shape)[:, None, None, None] - 1) / 2) ** 2).sum(0))
    rng = np.random.default_rng(1)
    tissue = rng.uniform(100, 150, shape)  # a wide spread: percentiles of a few dozen voxels move a lot
    channel = (np.where(distance < 8, tissue, 0.0) + rng.normal(0, 1, shape)).astype(np.float32)
    measured = intensity_measures(channel[None])
    threshold = otsu_threshold(channel.ravel()[voxel_sample(shape)[0]].astype(np.float64))
    body, steps, _, _, _ = _exact_intensity_measures(channel, threshold)
    assert 1000 < len(body) <= SAMPLE_SIZE and len(body) < channel.size / 100
    assert measured.body_percentiles[0] == pytest.approx(list(np.percentile(body, PERCENTILES)))
    low, high = np.percentile(channel.ravel()[voxel_sample(shape)[0]], [1.0, 99.0])  # the scale: the scan's sample
    assert measured.noise == pytest.approx(float(np.median(steps)) / (high - low))


def test_boundary_entropy_of_a_large_mask_from_the_sample_is_close_to_the_whole_boundarys():
    shape = (96, 80, 40)  # above SAMPLE_SIZE: the sample's boundary voxels
    distance = np.sqrt(((np.indices(shape) - np.array(shape)[:, None, None, None] / 2) ** 2).sum(0))
    classes = (distance < 20).astype(np.uint8) + (distance < 10)
    edges = np.zeros(shape, dtype=bool)
    for axis in range(3):
        changed = np.diff(classes, axis=axis) != 0
        edges |= np.concatenate([changed, np.zeros_like(changed.take([0], axis))], axis)
        edges |= np.concatenate([np.zeros_like(changed.take([0], axis)), changed], axis)
    # sure everywhere but on the inner side of each boundary: a measure that misses either side of a
    # boundary, or reads voxels off it, is far off
    probabilities = np.eye(3, dtype=np.float32)[classes].transpose(3, 0, 1, 2).copy()
    unsure = edges & ((classes == 2) | ((classes == 1) & (distance >= 15)))  # the inner sides
    noisy = np.random.default_rng(0).dirichlet([1.0, 1.0, 1.0], size=int(unsure.sum())).T.astype(np.float32)
    probabilities[:, unsure] = noisy
    p = np.clip(probabilities[:, edges].astype(np.float64), 1e-12, 1)
    exact = float((-(p * np.log(p)).sum(0) / np.log(3)).mean())
    assert 0.2 < exact < 0.5  # a part of the boundary, not all of it
    assert boundary_entropy(probabilities, classes) == pytest.approx(exact, abs=0.02)


def test_votes_give_the_mutual_dice_pooled_over_pairs_and_grids():
    a, b, c = np.array([1, 1, 2, 0]), np.array([1, 0, 2, 2]), np.array([1, 1, 0, 0])
    # class 1: |a|=2 |b|=1 |c|=2, overlaps ab=1 ac=2 bc=1: 2*4 / (3+4+3)
    # class 2: |a|=1 |b|=2 |c|=0, overlap ab=1: 2*1 / (3+1+2)
    assert mutual_dice([a, b, c], 3) == pytest.approx((8 / 10 + 2 / 6) / 2)
    votes = Votes(3)
    for mask in (a, b):
        votes.add(mask)
    coarse = Votes(3)  # another member's grid, voxels of 8 units: its pairs weigh 8 times as much per voxel
    for mask in (np.array([1, 0]), np.array([1, 1])):
        coarse.add(mask)
    pooled = votes.agreement() + coarse.agreement(8.0)
    # class 1: 2*1 + 8*2*1 over (2+1) + 8*(1+2); class 2: 2*1 over 1+2 (none on the coarse grid)
    assert pooled.pairs == 2 and pooled.mutual_dice() == pytest.approx((18 / 27 + 2 / 3) / 2)
    assert Votes(3).agreement().mutual_dice() != Votes(3).agreement().mutual_dice()  # no pairs: NaN


def test_the_verdict_is_the_worst_flag_and_failed_cases_come_first():
    ok = CaseQC("a", [], 0.9)
    check = CaseQC("b", [Flag("size", "check", "s")], 0.8)
    fail = CaseQC("c", [Flag("size", "check", "s"), Flag("empty", "fail", "e")], 0.4)
    assert [c.verdict for c in (ok, check, fail)] == ["ok", "check", "fail"]
    assert [c.case_id for c in ordered([ok, check, fail])] == ["c", "b", "a"]
    rows = list(csv.DictReader(csv_text([ok, check, fail]).splitlines()))
    assert [r["case"] for r in rows] == ["c", "b", "a"] and rows[0]["flags"] == "size empty"


def test_predict_writes_qc_files_from_the_models_fingerprint(trained_model, tiny_dataset, tmp_path):
    from attnseg.inference.predictor import Predictor

    assert (trained_model / "fingerprint.json").exists()
    images = sorted((tiny_dataset / "imagesTr").iterdir())[:2]
    Predictor([trained_model], device="cpu").predict_files(images, tmp_path, progress=False)
    document = json.loads((tmp_path / "qc.json").read_text())
    assert document["summary"]["cases"] == 2
    for case in document["cases"]:
        assert case["verdict"] in ("ok", "check", "fail") and 0 <= case["predicted_dice"] <= 1
        assert math.isfinite(case["measures"]["intensity_distance"])
    assert len((tmp_path / "qc.csv").read_text().splitlines()) == 3
    none = tmp_path / "none"
    Predictor([trained_model], device="cpu", quality_control=False).predict_files(images, none, progress=False)
    assert not (none / "qc.json").exists()


def test_training_keeps_a_temperature_with_the_ece_before_and_after(trained_model):
    calibration = json.loads((trained_model / "calibration.json").read_text())
    assert calibration["temperature"] > 0 and calibration["fitted_on"]
    assert 0 <= calibration["ece_after"] <= 1 and 0 <= calibration["ece_before"] <= 1


def test_evaluate_ranks_predicted_against_true_dice_and_the_report_lists_flagged_cases_first(
    trained_model, tiny_dataset, tmp_path
):
    from attnseg.cli import main
    from attnseg.data import read_image, write_image
    from attnseg.visualize.report import write_report

    out = tmp_path / "pred"
    assert main(["predict", "-m", str(trained_model), "-i", str(tiny_dataset / "imagesTr"), "-o", str(out)]) == 0
    # the references are the predicted masks themselves (true Dice 1), but for one case whose mask is then
    # emptied (true Dice 0); qc.json is told so (verdict fail)
    reference = tmp_path / "reference"
    reference.mkdir()
    for mask in out.glob("*.nii.gz"):
        (reference / mask.name).write_bytes(mask.read_bytes())
    document = json.loads((out / "qc.json").read_text())
    bad = document["cases"][-1]["case"]
    image = read_image(out / f"{bad}.nii.gz")
    write_image(out / f"{bad}.nii.gz", np.zeros_like(image.array), image.geometry, overwrite=True)
    for case in document["cases"]:
        if case["case"] == bad:
            empty = {"code": "empty", "severity": "fail", "message": "no foreground"}
            case.update(verdict="fail", predicted_dice=0.0, flags=[empty])
    (out / "qc.json").write_text(json.dumps(document))
    assert main(["evaluate", str(out), str(reference), "--labels", str(trained_model / "labels.json")]) == 0
    evaluation = json.loads((out / "qc_evaluation.json").read_text())
    assert (evaluation["cases"], evaluation["failures"], evaluation["failures_caught"]) == (5, 1, 1)
    assert evaluation["good_cases"] == 4
    assert {r["case"]: r["true_dice"] for r in evaluation["per_case"]}[bad] == 0.0
    page = write_report(out).read_text()
    table = page[page.index('id="quality-control"') :]
    assert table.index(bad) < min(table.index(c["case"]) for c in document["cases"] if c["case"] != bad)


def test_spearman_by_hand():
    from attnseg.metrics.qc_agreement import spearman

    assert spearman([0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.9, 0.8]) == pytest.approx(0.8)  # 1 - 6*2/(4*15)
    assert math.isnan(spearman([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]))


def test_the_qc_cost_benchmark_times_the_checks_in_the_run_with_qc_only(trained_model, tiny_dataset, tmp_path):
    from benchmarks.qc_cost import time_share

    images = sorted((tiny_dataset / "imagesTr").iterdir())[:2]
    result = time_share(trained_model, images, tmp_path, repeats=1)
    assert result["checks_cpu"] > 0 and result["without_qc"] > 0 and result["with_qc"] > 0
    assert result["qc_share"] == pytest.approx(result["with_qc"] / result["without_qc"] - 1)
    assert result["checks_cpu_share"] == pytest.approx(result["checks_cpu"] / result["cpu_without_qc"])
    assert not list(tmp_path.iterdir())  # every run's masks removed


def test_flags_of_one_cause_lower_the_predicted_dice_once():
    """Another scanner raises geometry and intensity flags together: each group counts once, with its
    smallest factor; a fail outweighs a check of its group; unrelated groups multiply."""
    geometry = [Flag("orientation", "check", "", HANDLED_FACTOR), Flag("spacing", "check", "", HANDLED_FACTOR)]
    geometry.append(Flag("size", "check", "", HANDLED_FACTOR))
    scanner = [Flag("intensity", "check", ""), Flag("noise", "check", "")]
    assert predicted_dice({1: 0.9}, geometry)[0] == pytest.approx(0.9 * HANDLED_FACTOR)
    assert predicted_dice({1: 0.9}, geometry + scanner)[0] == pytest.approx(0.9 * HANDLED_FACTOR * FLAG_FACTOR)
    failed = [*scanner, Flag("intensity", "fail", "")]
    assert predicted_dice({1: 0.9}, failed)[0] == pytest.approx(0.9 * FAIL_FACTOR)
    separate = [Flag("volume", "check", ""), Flag("components", "check", "")]  # each its own group
    assert predicted_dice({1: 0.9}, separate)[0] == pytest.approx(0.9 * FLAG_FACTOR**2)


def test_an_intensity_distribution_just_past_the_threshold_asks_for_a_check_and_far_past_it_fails():
    """Percentiles whose shape is off (the top ones stretched), at 1.5 and 3 times the training's
    threshold from its median: ``check`` (with the check's factor) and ``fail``; a shift of the same
    distance, whose shape is the training's, is a scaling the normalisation undoes."""
    reference = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0][: len(PERCENTILES)]
    intensity = {
        "reference": [reference],
        "scale": [1.0],
        "threshold": 2.0,
        "shape_reference": standardized([reference]),
        "shape_threshold": 0.01,
    }

    def flag_at(distance: float, stretched: bool) -> Flag:
        n, top = len(reference), len(reference) // 2
        # stretched: the top percentiles move, the others stay; else all shift alike (the training's shape)
        delta = [0.0] * (n - top) + [distance * n / top] * top if stretched else [distance] * n
        percentiles = [[r + d for r, d in zip(reference, delta, strict=True)]]
        measures: dict = {}
        flags = _intensity_flags(IntensityMeasures(percentiles, 0.0, 0.0), intensity, measures)
        assert measures["intensity_distance"] == pytest.approx(distance)
        return flags[0]

    near, far, shifted = flag_at(3.0, True), flag_at(6.0, True), flag_at(6.0, False)
    assert (near.severity, near.factor) == ("check", FLAG_FACTOR)  # 3 > the threshold 2, <= 2 x 2
    assert (far.severity, far.factor) == ("fail", FAIL_FACTOR)  # 6 > INTENSITY_FAIL_MULTIPLE x 2
    assert (shifted.severity, shifted.factor) == ("check", HANDLED_FACTOR)
    assert INTENSITY_FAIL_MULTIPLE == 2.0
