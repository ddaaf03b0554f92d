import numpy as np
import pytest

from attnseg.data.geometry import Geometry
from attnseg.visualize.attention_figure import GATE_COLOUR_LABEL, GUIDED_COLOUR_LABEL, gate_figure, guided_figure
from attnseg.visualize.drawing import HEAT_MAP
from attnseg.visualize.orientation import slice_view

LABELS = {"background": 0, "liver": 1}
VIEW = slice_view(Geometry.create([0.7, 0.7, 2.0]))


def _plane(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((24, 20))


def test_gate_figure_one_row_per_slice_one_panel_per_gate_and_head_one_colour_bar():
    maps = {f"gate level{lv} head{h}": [_plane(lv * 10 + h + r) for r in range(2)] for lv in (2, 3) for h in (1, 2)}
    prediction = (_plane(0) > 0.5).astype(np.uint8)
    figure = gate_figure([_plane(1), _plane(2)], [prediction, prediction], maps, VIEW, [4, 9], LABELS, title="t")
    panels = [axis for axis in figure.axes if axis.get_label() != "<colorbar>"]
    assert len(panels) == 2 * 5
    assert [panels[i].get_title() for i in (0, 5)] == ["axial slice 4", "axial slice 9"]
    assert [axis.get_title() for axis in panels[1:5]] == list(maps)
    (colour_bar,) = [axis for axis in figure.axes if axis.get_label() == "<colorbar>"]
    assert colour_bar.get_ylabel() == GATE_COLOUR_LABEL
    heat = panels[1].images[-1]
    assert heat.get_cmap().name == HEAT_MAP and heat.get_clim() == (0.0, 1.0)
    np.testing.assert_array_equal(heat.get_array(), maps["gate level2 head1"][0])
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["liver"]


def test_guided_figure_rows_are_scales_then_the_average():
    kinds = ("position", "channel", "combined")
    maps = {f"step{t} scale{s} {k}": _plane(s * t) for t in (1, 2) for s in (1, 2, 3, 4) for k in kinds}
    predictions = {f"scale{s} prediction": np.full((24, 20), s % 2, np.uint8) for s in (1, 2, 3, 4)}
    predictions["prediction"] = np.ones((24, 20), np.uint8)
    figure = guided_figure(_plane(0), maps, predictions, VIEW, 7, LABELS)
    panels = [axis for axis in figure.axes if axis.get_label() != "<colorbar>"]
    columns = 2 * 3 + 1
    assert len(panels) == 5 * columns
    assert [axis.get_title() for axis in panels[:columns]] == [
        *(f"scale 1, step {t}: {k}" for t in (1, 2) for k in kinds),
        "scale 1 prediction",
    ]
    assert panels[3 * columns + 4].get_title() == "scale 4, step 2: channel"
    last = panels[4 * columns :]
    assert last[0].get_title() == "axial slice 7"
    assert last[-1].get_title() == "average of the scales (output)"
    assert not any(axis.get_visible() for axis in last[1:-1])
    (colour_bar,) = [axis for axis in figure.axes if axis.get_label() == "<colorbar>"]
    assert colour_bar.get_xlabel() == GUIDED_COLOUR_LABEL
    with pytest.raises(ValueError, match="unexpected map name"):
        guided_figure(_plane(0), {"gate level2 head1": _plane(1)}, predictions, VIEW, 7, LABELS)
