"""A burst whose images still wait in their subscription's history while depth and pose arrive ahead: the
pairing keeps at least input_depth stamps waiting, so no side input is evicted before its image comes, and the
bound still holds beyond that (issue 13: 82 pairing drops in a burst of 100)."""
from moonseg3r_ros.ros.inputs import pairing_capacity
from moonseg3r_ros.ros.node_config import NodeConfig
from moonseg3r_ros.ros.worker import StampPairing


def run_burst(config: NodeConfig, frames: int, lead: int) -> tuple[int, int, int]:
    """Side inputs of each stamp arrive `lead` stamps before its image. (paired, images dropped, pending)."""
    dropped_images = []
    pairing = StampPairing(["image", "depth", "pose"], pairing_capacity(config),
                           on_drop=lambda stream, value: dropped_images.append(value) if stream == "image" else None)
    for i in range(frames + lead):
        if i < frames:
            pairing.add("depth", i, "d")
            pairing.add("pose", i, "p")
        if i >= lead:
            pairing.add("image", i - lead, i - lead)
    return pairing.stats.paired, len(dropped_images), pairing.pending()


def test_side_inputs_wait_for_images_up_to_input_depth():
    config = NodeConfig()
    config.sync.buffer_size, config.input_depth = 30, 50
    assert pairing_capacity(config) == 50
    assert run_burst(config, frames=100, lead=40) == (100, 0, 0)  # 40 stamps ahead: all paired


def test_the_pairing_stays_bounded_and_counts_what_it_evicts():
    config = NodeConfig()
    config.sync.buffer_size, config.input_depth = 30, 5
    paired, dropped, pending = run_burst(config, frames=100, lead=40)
    assert pending <= 30
    assert paired == 30 and dropped == 70  # side inputs 40 stamps ahead of a 30-stamp buffer: evicted, and
    assert paired + dropped == 100  # every image of those stamps is counted as dropped unpaired
