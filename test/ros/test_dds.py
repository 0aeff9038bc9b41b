"""The DDS settings of our tools: user values win, and Fast DDS accepts the shipped profile."""
import os
import subprocess
import sys

from moonseg3r_ros.ros import dds

PUBLISHER = (
    "import rclpy; from std_msgs.msg import String; rclpy.init(); n = rclpy.create_node('dds_profile_probe'); "
    "n.create_publisher(String, 'probe', 10); n.destroy_node(); rclpy.shutdown(); print('created')"
)


def test_confine_dds_sets_only_what_is_missing(monkeypatch):
    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    monkeypatch.setenv("ROS_DOMAIN_ID", "17")
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "")  # explicitly empty: the user opted out
    chosen = dds.confine_dds(lambda: 55)
    assert chosen == ["ROS_AUTOMATIC_DISCOVERY_RANGE"]
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert os.environ["ROS_DOMAIN_ID"] == "17"
    assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] == ""


def test_confine_dds_fills_an_empty_environment(monkeypatch):
    for name in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "FASTDDS_DEFAULT_PROFILES_FILE"):
        monkeypatch.delenv(name, raising=False)
    chosen = dds.confine_dds(lambda: 55)
    assert sorted(chosen) == ["FASTDDS_DEFAULT_PROFILES_FILE", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID"]
    assert os.environ["ROS_DOMAIN_ID"] == "55"
    assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] == str(dds.FASTDDS_PROFILE)
    assert "ROS_DOMAIN_ID=55" in dds.describe()


def _create_publisher_with_profile(profile_path, env) -> subprocess.CompletedProcess:
    env = dict(env, FASTDDS_DEFAULT_PROFILES_FILE=str(profile_path))
    return subprocess.run([sys.executable, "-c", PUBLISHER], env=env, capture_output=True, text=True, timeout=60)


def test_fast_dds_parses_the_shipped_profile(ros_subprocess_env, tmp_path):
    assert dds.FASTDDS_PROFILE.is_file()
    done = _create_publisher_with_profile(dds.FASTDDS_PROFILE, ros_subprocess_env)
    assert done.returncode == 0 and "created" in done.stdout, done.stderr
    assert "XMLPARSER" not in done.stderr, done.stderr
    # The probe can tell: a profile with a misspelt element is reported by Fast DDS's parser.
    broken = tmp_path / "broken.xml"
    broken.write_text(dds.FASTDDS_PROFILE.read_text().replace("heartbeat_period", "heartbeat_periodX"))
    done = _create_publisher_with_profile(broken, ros_subprocess_env)
    assert "XMLPARSER" in done.stderr
