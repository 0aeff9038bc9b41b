"""The demo/replay picture (tools/render.py): no empty panels, a legend of the largest instances with their
colours, PNG size from the panels shown."""
import numpy as np
from PIL import Image

from moonseg3r_ros.tools.render import legend_entries, render_comparison


def test_legend_lists_the_largest_instances_with_their_colours():
    ids = np.array([0, 0, 3, 3, 3, 5, 7, 7])
    colors = {3: np.array([1.0, 0, 0]), 7: np.array([0, 1.0, 0])}
    entries = legend_entries(ids, colors, limit=2)
    assert [label for label, _ in entries] == ["id 3 (3 pts)", "id 7 (2 pts)"]
    np.testing.assert_array_equal(entries[0][1], [1.0, 0, 0])


def test_a_panel_without_points_in_view_is_left_out(tmp_path):
    rng = np.random.default_rng(0)
    vertices = rng.uniform(0, 1, (600, 3))
    labels = np.where(vertices[:, 0] < 0.5, 1001, 1002).astype(np.int64)
    vertex_ids = np.where(vertices[:, 0] < 0.5, 1, 2)
    far_map = rng.uniform(50, 51, (200, 3)).astype(np.float32)  # outside the zoom on the annotated objects
    colors = {1: np.array([1.0, 0, 0]), 2: np.array([0, 0, 1.0])}
    path = render_comparison(tmp_path / "a.png", vertices, labels, vertex_ids, far_map, np.ones(200, np.int32),
                             colors)
    assert Image.open(path).size == (int(2 * 4.2 * 110), int(8.8 * 110))  # GT + prediction panels only
    near_map = vertices[:200].astype(np.float32)
    path = render_comparison(tmp_path / "b.png", vertices, labels, vertex_ids, near_map, np.ones(200, np.int32),
                             colors)
    assert Image.open(path).size == (int(3 * 4.2 * 110), int(8.8 * 110))
