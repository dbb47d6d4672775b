"""tools.model_labels: the operator's edits of models.config, and what it refuses."""
import subprocess
import sys

import pytest

from libs import model_config
from tests.conftest import ROOT
from tools import model_labels

CONFIG = """# shipped with the stack
model_config_list {
  config { name: "retrieval" base_path: "repo/retrieval" model_platform: "tensorflow" }
  config { name: "ranking" base_path: "repo/ranking" model_platform: "tensorflow"
           model_version_policy { specific { versions: 1 } }
           version_labels { key: "stable" value: 1 } }
}
"""


@pytest.fixture
def config(tmp_path):
    for model, versions in (("ranking", (1, 2, 3)), ("retrieval", (4, 5))):
        for version in versions:
            (tmp_path / "repo" / model / str(version)).mkdir(parents=True)
    path = tmp_path / "models.config"
    path.write_text(CONFIG)
    return path


def run(config, *args) -> int:
    return model_labels.main(["--config", str(config), *args])


def served(config) -> dict:
    """What the model server reads from the file: model -> (versions, labels)."""
    return {s.name: (s.policy, s.versions, s.labels)
            for s in model_config.read_sources(config)}


def test_a_canary_is_labelled_promoted_and_the_next_one_rolled_back(config):
    retrieval = served(config)["retrieval"]
    assert run(config, "set", "ranking", "canary", "2") == 0
    assert served(config)["ranking"] == ("specific", (1, 2), {"stable": 1, "canary": 2})
    assert run(config, "promote", "ranking") == 0
    # canary still names 2, so users sent to it see no change; 1 unloads
    assert served(config)["ranking"] == ("specific", (2,), {"stable": 2, "canary": 2})
    assert run(config, "set", "ranking", "canary", "3") == 0
    assert run(config, "rollback", "ranking") == 0
    assert served(config)["ranking"] == ("specific", (2,), {"stable": 2})
    assert run(config, "rollback", "ranking") == 0  # again: nothing left to roll back
    assert served(config)["retrieval"] == retrieval  # the other model is untouched
    text = config.read_text()
    assert text.startswith("# shipped with the stack\n")
    assert [p.name for p in config.parent.iterdir() if p.is_file()] == ["models.config"]


def test_a_latest_policy_turns_specific_keeping_what_it_loads(config):
    assert run(config, "set", "retrieval", "stable", "4") == 0
    assert served(config)["retrieval"] == ("specific", (4, 5), {"stable": 4})
    assert run(config, "load", "ranking", "3") == 0
    assert served(config)["ranking"] == ("specific", (1, 3), {"stable": 1})


def test_show_lists_policies_labels_and_versions_on_disk(config, capsys):
    assert run(config, "show") == 0
    out = capsys.readouterr().out
    assert "specific: [1]" in out and "labels: {stable: 1}" in out
    assert "on_disk: [1, 2, 3]" in out and "latest: 1" in out


@pytest.mark.parametrize("args, words", [
    (["set", "scoring", "canary", "2"],
     "field 'model': {config} has no model 'scoring' (it has retrieval, ranking)"),
    (["set", "ranking", "canary", "7"],
     "field 'version': model 'ranking' has no version 7 in {repo}/ranking (it has [1, 2, 3])"),
    (["set", "ranking", "canary", "two"], "field 'version' must be a positive integer"),
    (["set", "ranking", "can ary", "2"], "field 'label' must be a label such as stable"),
    (["promote", "ranking"], "field 'version_labels': model 'ranking' has no 'canary' label"),
    (["rollback", "retrieval"],
     "field 'version_labels': model 'retrieval' has no 'stable' label"),
])
def test_a_refused_change_names_the_field_exits_2_and_leaves_the_file(config, capsys,
                                                                        args, words):
    before = config.read_bytes()
    assert run(config, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert words.format(config=config, repo=config.parent / "repo") in err
    assert config.read_bytes() == before


def test_versions_are_not_checked_when_the_base_path_is_elsewhere(config):
    config.write_text(CONFIG.replace("repo/ranking", "/models/ranking"))
    assert run(config, "set", "ranking", "canary", "7") == 0
    assert served(config)["ranking"][2] == {"stable": 1, "canary": 7}


def test_a_broken_config_is_one_line_not_a_traceback(tmp_path):
    path = tmp_path / "models.config"
    path.write_text("model_config_list { config { name: ")
    result = subprocess.run([sys.executable, "-m", "tools.model_labels", "--config",
                             str(path), "promote", "ranking"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {path}: not a valid TF Serving model config")
    assert result.stderr.count("\n") == 1
