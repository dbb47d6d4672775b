"""What a pipeline run leaves on the machine besides its workdir."""
from __future__ import annotations


def test_a_pipeline_run_leaves_no_files_in_the_temp_dir(trained):
    # TFX used to copy itself (49 MB) into the temp dir on every Beam component and leave
    # it there: a few hundred runs filled the disk.
    workdir, _ = trained
    left = [str(p) for p in (workdir / "tmp").rglob("*") if p.is_file()]
    assert not left, f"the run left files in its temp dir: {left[:5]}"
