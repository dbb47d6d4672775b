"""The loop's simulated scenario: after the population's taste shifts, the retrained
candidate is promoted and a worse one rolled back, on outcomes; the timeline is written."""
from __future__ import annotations

import json

import pytest

from pipelines.loop import scenario
from tests.conftest import MOVIELENS


@pytest.mark.skipif(not MOVIELENS.is_dir(), reason="MovieLens not present")
def test_a_retrained_candidate_is_promoted_and_a_worse_one_rolled_back(tmp_path, capsys):
    assert scenario.main(["--data-dir", str(MOVIELENS), "--runs", "2",
                          "--out", str(tmp_path)]) == 0
    document = json.loads((tmp_path / "scenario.json").read_text())
    assert (document["right"], document["of"]) == (4, 4)
    shift = document["shift"]
    assert len(shift["items_taking_off"]) == 40 and shift["share_of_recent"] > 0.02
    good = [r for r in document["runs"] if r["kind"] == "good"]
    bad = [r for r in document["runs"] if r["kind"] == "bad"]
    assert all(r["figures"]["canary_mean"] > r["figures"]["stable_mean"] for r in good)
    # a worse candidate is stopped at a look before the end, a good one runs its course
    assert max(r["decided_after_days"] for r in bad) < min(r["decided_after_days"]
                                                           for r in good)
    page = (tmp_path / "timeline.html").read_text()
    assert "<svg" in page and "4 of 4 decisions right" in page
    assert "good candidate (retrained): right in 2 of 2" in capsys.readouterr().out


def test_bad_arguments_exit_2_naming_them(tmp_path, capsys):
    assert scenario.main(["--runs", "0", "--out", str(tmp_path)]) == 2
    assert "--runs must be at least 1" in capsys.readouterr().err
    assert scenario.main(["--data-dir", str(tmp_path / "nowhere"), "--out",
                          str(tmp_path)]) == 2
    assert "nowhere" in capsys.readouterr().err
