"""`moonseg3r bench scenes` (tools/eval_scenes.py): seeds, the table, and runs that fail without losing others."""
import json

import pytest

from moonseg3r_ros.tools import eval_scenes as es
from moonseg3r_ros.tools import replay as rp


def _row(seed, masks, ap):
    return {"scene": f"tabletop_{seed:04d}", "seed": seed, "masks": masks, "ap": ap, "ap50": ap + 0.1,
            "ap25": ap + 0.2, "instances": 5, "gt_instances": 6, "masks_merged": 2, "masks_total": 40,
            "seconds": 10.0}


def test_parse_seeds():
    assert es.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert es.parse_seeds("1,3,7-8") == [1, 3, 7, 8]
    with pytest.raises(ValueError):
        es.parse_seeds(",")


def test_table_has_rows_and_means():
    text = es.format_rows([_row(0, "ground_truth", 0.5), _row(1, "ground_truth", 0.7), _row(0, "weight_free", 0.2)])
    lines = text.splitlines()
    assert any(line.startswith("tabletop_0001") and "0.700" in line and "2/40" in line for line in lines)
    mean_gt = next(line for line in lines if line.startswith("mean of 2") and "ground_truth" in line)
    assert "0.600" in mean_gt and "0.700" in mean_gt and "0.800" in mean_gt
    assert any(line.startswith("mean of 1") and "weight_free" in line and "0.200" in line for line in lines)


def test_a_failed_run_is_reported_and_the_rest_still_run(monkeypatch, tmp_path, capsys):
    def fake_run(args, seed, masks):
        if seed == 1 and masks == "weight_free":
            raise rp.ReplayError("the node was not active after 300 s")
        return _row(seed, masks, 0.1 * seed)

    monkeypatch.setattr(es, "run_one", fake_run)
    monkeypatch.setattr(rp, "ensure_ros_environment", lambda: None)
    out = tmp_path / "rows.json"
    assert es.main(["--seeds", "0-2", "--masks", "ground_truth,weight_free", "--out", str(tmp_path),
                    "--json", str(out)]) == 1
    data = json.loads(out.read_text())
    assert len(data["rows"]) == 5 and data["failed"] == [
        {"seed": 1, "masks": "weight_free", "error": "the node was not active after 300 s"}]
    printed = capsys.readouterr().out
    assert "tabletop_0002" in printed and "FAILED: seed 1 weight_free" in printed
    assert es.main(["--masks", "sam"]) == 1  # only the no-download sources
