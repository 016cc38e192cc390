"""`har.defaults`: the swept per-dataset defaults, their fallback, and refusal of a damaged file."""
from __future__ import annotations

import json

import pytest

from har import defaults
from har.cli import command_line
from har.errors import BadDataError
from har.experiment import RunConfig
from har.select import FoldSelection, SelectionConfig, UserSplit, stage1_epochs, vote
from har.train import build_parser


def _entry(length=40, channels="robust_tilt", epochs=20):
    return {"window": {"length": length, "step": length // 2, "channels": channels, "max_gap_s": 1.0},
            "epochs": epochs, "chosen_by": "majority", "command": "python -m har.sweep", "commit": "abc",
            "date": "2026-12-01"}


def test_entry_is_used_for_locomotion_and_the_fallback_says_where_it_came_from(tmp_path):
    path = tmp_path / "defaults.json"
    path.write_text(json.dumps({"wisdm2019": _entry()}))
    d = defaults.for_dataset("wisdm2019", path=path)
    assert d.selected and (d.window.length, d.window.step, d.epochs) == (40, 20, 20) and "commit abc" in d.source
    other = defaults.for_dataset("wisdm2019", "all", path=path)  # the sweep only writes locomotion entries
    assert not other.selected and "picked on test users" in other.source
    assert not defaults.for_dataset("wisdm2019-watch", path=path).selected


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", json.dumps({"wisdm2019": {"window": {}}})])
def test_a_damaged_defaults_file_is_one_readable_error(tmp_path, text):
    path = tmp_path / "defaults.json"
    path.write_text(text)
    with pytest.raises(BadDataError) as info:
        defaults.for_dataset("wisdm2019", path=path)
    msg = str(info.value)
    assert "\n" not in msg and ("har.sweep" in msg or "JSON object" in msg)


def test_shipped_defaults_come_from_a_sweep_for_both_devices():
    for name in ("wisdm2019", "wisdm2019-watch"):
        d = defaults.for_dataset(name)
        assert d.selected and "har.sweep" in d.source and d.window.step == d.window.length // 2
        assert RunConfig.for_dataset(name).window == d.window and RunConfig.for_dataset(name).train.epochs == d.epochs


def _fold(i, length, channels, epochs, stage2):
    f = FoldSelection(i, UserSplit((), (), ()), [])
    f.choice = {"length": length, "channels": channels, "epochs": epochs}
    f.stage1 = [{"length": n, "channels": "robust_tilt", "epochs": 12, "mean": m} for n, m in ((40, 0.8), (80, 0.7))]
    f.stage2 = [{"length": length, "channels": channels, "epochs": e, "mean": m} for e, m in stage2]
    return f


def test_vote_breaks_epoch_ties_only_with_folds_at_the_voted_window():
    folds = [_fold(0, 40, "robust_tilt", 6, [(6, 0.8), (20, 0.7)]),
             _fold(1, 40, "robust_tilt", 20, [(6, 0.7), (20, 0.8)]),
             _fold(2, 80, "robust_tilt", 12, [(6, 0.1), (20, 0.99)])]  # another window: must not count
    v = vote(folds)
    assert v["window"]["length"] == 40 and v["epochs"] == 6  # 1-1 tie, equal means, shorter wins
    assert v["votes"] == ["40/robust_tilt/6ep", "40/robust_tilt/20ep", "80/robust_tilt/12ep"]


def test_stage1_budget_is_the_middle_of_the_grid_and_the_stamp_reruns_the_command():
    assert stage1_epochs(SelectionConfig()) == 12 and stage1_epochs(SelectionConfig(epochs=(4, 2))) == 2
    args = build_parser().parse_args(["--dataset", "wisdm2019-watch", "--quick", "--seed", "3"])
    assert command_line("har.train", build_parser, args) == "python -m har.train --dataset wisdm2019-watch --quick --seed 3"
