"""make bench-data at a small size: every stage runs as its own process on generated data
and the report gives what each processed, how fast and its peak memory."""
import json

from pipelines.features import benchmark_at_scale


def test_each_stage_reports_rows_per_second_and_peak_memory(tmp_path, capsys):
    out = tmp_path / "report"
    code = benchmark_at_scale.main(["--events", "4000", "--users", "300", "--items", "500",
                                    "--workdir", str(tmp_path / "work"), "--out", str(out)])
    assert code == 0
    (result,) = json.loads((out / "summary.json").read_text())
    stages = result["stages"]
    assert list(stages) == list(benchmark_at_scale.STAGES)
    assert all(s["ok"] and s["rows_per_second"] > 0 and s["peak_rss_mib"] > 50
               for s in stages.values())
    assert stages["generate"]["rows"] == 4000 + 300 + 500
    assert stages["batch_job"]["rows"] == 4000 + 300 + 500  # every raw row read
    assert stages["training_set"]["rows"] == 4000  # one per label event
    assert "<table" in (out / "report.html").read_text() and (out / "stages.png").exists()
    printed = capsys.readouterr().out
    assert "batch_job: {" in printed and "training set span-" in printed
    assert not (tmp_path / "work" / "4000").exists()  # the data of a size goes after it
