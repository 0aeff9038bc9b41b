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


def test_one_domain_id_rule_for_python_make_and_ci():
    """dds.domain_id_for is the rule; the Makefile and .ci/run state the same one in shell arithmetic."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert dds.domain_id_for(1234) == 10 + 1234 % 90 == dds.DOMAIN_ID_OFFSET + 1234 % dds.DOMAIN_ID_MODULUS
    assert all(10 <= dds.domain_id_for(pid) <= 99 for pid in range(0, 1000, 7))
    pattern = re.compile(r"\$\$?\(\( *\$\$?(?:PPID|\$) *% *(\d+) *\+ *(\d+) *\)\)")
    for name in ("Makefile", ".ci/run"):
        found = pattern.findall((root / name).read_text())
        assert found == [(str(dds.DOMAIN_ID_MODULUS), str(dds.DOMAIN_ID_OFFSET))], (name, found)
    # The shell formula gives what the helper gives for the same pid.
    shell = subprocess.run(["bash", "-c", "echo $$ $(( $$ % 90 + 10 ))"], capture_output=True, text=True, check=True)
    pid, domain = map(int, shell.stdout.split())
    assert dds.domain_id_for(pid) == domain
    cli = subprocess.run([sys.executable, "-m", "moonseg3r_ros.ros.dds", str(pid)], capture_output=True, text=True)
    assert cli.stdout.strip() == str(domain)


def _source_env_sh(**env: str) -> list[str]:
    """Source scripts/env.sh in a bash without the DDS names (plus `env`) -> [domain id, range, profile file]."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    base = {k: v for k, v in os.environ.items() if k not in dds.NAMES}
    show = 'echo "$ROS_DOMAIN_ID|$ROS_AUTOMATIC_DISCOVERY_RANGE|${FASTDDS_DEFAULT_PROFILES_FILE-unset}"'
    done = subprocess.run(["bash", "-c", f"source scripts/env.sh >/dev/null && {show}"], cwd=root,
                          env={**base, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split("|")


def test_env_sh_takes_the_dds_rule_for_a_shell():
    """scripts/env.sh sets what dds.py chooses for a shell (the fixed SHELL_DOMAIN_ID, so that terminals see
    each other) and keeps what the user set; the id is written nowhere in env.sh itself."""
    from pathlib import Path

    assert _source_env_sh() == [str(dds.SHELL_DOMAIN_ID), "LOCALHOST", str(dds.FASTDDS_PROFILE)]
    assert _source_env_sh(ROS_DOMAIN_ID="17", FASTDDS_DEFAULT_PROFILES_FILE="",
                          ROS_AUTOMATIC_DISCOVERY_RANGE="SUBNET") == ["17", "SUBNET", ""]
    assert _source_env_sh(ROS_DOMAIN_ID="") == [str(dds.SHELL_DOMAIN_ID), "LOCALHOST", str(dds.FASTDDS_PROFILE)]
    script = (Path(__file__).resolve().parents[2] / "scripts" / "env.sh").read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert "ROS_DOMAIN_ID" not in code and "LOCALHOST" not in code and "fastdds_profile.xml" not in code


def test_strict_confinement_overrides_the_shell(monkeypatch):
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET")
    monkeypatch.setenv("ROS_STATIC_PEERS", "192.168.1.2")
    monkeypatch.setenv("ROS_DOMAIN_ID", "")
    chosen = dds.confine_dds(strict=True)
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and "ROS_STATIC_PEERS" not in os.environ
    assert os.environ["ROS_DOMAIN_ID"] == str(dds.domain_id_for())
    assert {"ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID"} <= set(chosen)
