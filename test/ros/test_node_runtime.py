"""Parameters changed while the node runs reach its pipeline: keyframe selection, pruning and a map threshold set
through the node's set_parameters service change what the next frames publish."""
import pytest

from moonseg3r_ros.data.synthetic import SceneSpec, generate_scene
from moonseg3r_ros.ros.testing import ACTIVATE, CAMERA_REMAPS, CONFIGURE, GROUND_TRUTH_PARAMS


@pytest.fixture(scope="module")
def frames():
    scene = generate_scene(SceneSpec(seed=5, num_frames=6, width=128, height=96, num_objects=4))
    return [scene.frames[i] for i in range(6)]


def counter(client, name: str) -> int:
    return int(float(client.diagnostics().get(name, 0)))


def keyframes_mapped(client) -> int:
    """keyframe_count of the newest InstanceMap (activate may also send a latched one, so not a message count)."""
    maps = client["instance_map"]
    return int(maps.last().keyframe_count) if len(maps) else -1


def test_runtime_parameter_changes_reach_the_pipeline(node_process, client, frames):
    params = {**GROUND_TRUTH_PARAMS, "keyframe_interval": 2, "prune_interval": 0, "map.min_instance_points": 1,
              "diagnostics_rate": 5.0}
    proc = node_process("moonseg3r", params, CAMERA_REMAPS)
    client.subscribe_outputs()
    assert client.change_state(CONFIGURE) and client.change_state(ACTIVATE), proc.log()
    client.feed(frames[:4], 10.0)
    assert client.spin_until(lambda: len(client["tf"]) >= 4 and counter(client, "keyframes") == 2, 120), proc.log()
    assert client.spin_until(lambda: keyframes_mapped(client) == 2, 60)
    assert len(client["instance_map"].last().instances) >= 2 and counter(client, "pipeline.instances_pruned") == 0

    changes = {"keyframe_interval": 1, "prune_interval": 1, "map.min_instance_points": 10_000_000}
    results = client.set_parameters(changes)
    assert all(r.successful for r in results), [r.reason for r in results]
    assert client.get_parameters(list(changes)) == list(changes.values())
    client.feed(frames[4:6], 10.4)
    # Both new frames are keyframes now (with interval 2 only the first would be) ...
    assert client.spin_until(lambda: len(client["tf"]) >= 6 and counter(client, "keyframes") == 4, 120), proc.log()
    assert client.spin_until(lambda: keyframes_mapped(client) == 4, 60)
    # ... and pruned at once (prune_interval 0 -> 1: every keyframe): no instance has ten million points.
    assert client["instance_map"].last().instances == []
    assert client.spin_until(lambda: counter(client, "pipeline.instances_pruned") >= 2, 30), client.diagnostics()
    assert proc.alive()
