import hashlib
import json

import pytest
import yaml

from libs import config as config_lib
from libs.experiments import ExperimentConfig
from services.router.admin_service import serving_from_proto, serving_to_proto
from services.router.experiment_admin import AdminError, AdminTokens, ExperimentDocument

START = {"version": "v0", "layers": [{"name": "main", "experiments": [
    {"key": "depth", "arms": [{"name": "a", "weight": 50, "serves": {"num_candidates": 50}},
                              {"name": "b", "weight": 50, "serves": {}}]}]}]}


def new_experiment(key="popular_test", weight=1, **fields):
    return {"key": key, "arms": [{"name": "popular", "weight": weight,
                                  "serves": {"candidates": "popular"}}],
            "traffic": [0, 10], **fields}


@pytest.fixture
def document(tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump(START))
    return ExperimentDocument(path, tmp_path / "audit.jsonl")


def audit(document) -> list[dict]:
    return [json.loads(line) for line in document.audit_path.read_text().splitlines()]


def refused(code, call, *args, **kwargs) -> str:
    with pytest.raises(AdminError) as err:
        call(*args, **kwargs)
    assert err.value.code == code
    return str(err.value)


def test_create_writes_a_valid_new_version_and_audits_it(document):
    version, layer, after = document.create("alice", "strategy", new_experiment())
    assert version != "v0" and layer == "strategy"
    loaded = config_lib.load(ExperimentConfig, document.path)
    assert loaded.version == version
    assert [layer.name for layer in loaded.layers] == ["main", "strategy"]
    [entry] = audit(document)
    assert (entry["who"], entry["action"], entry["subject"]) == ("alice", "create",
                                                                     "popular_test")
    assert entry["before"] is None and entry["after"]["layer"] == "strategy"
    assert (entry["config_version_before"], entry["config_version_after"]) == ("v0", version)


def test_an_invalid_change_is_refused_and_the_file_is_untouched(document):
    before = document.path.read_text()
    message = refused("INVALID_ARGUMENT", document.create, "alice", "main",
                      new_experiment(weight=0))
    assert "field 'weight' must be positive" in message
    # num_candidates belongs to layer 'main'
    message = refused("INVALID_ARGUMENT", document.create, "alice", "other",
                      {"key": "x", "arms": [{"name": "n", "weight": 1,
                                             "serves": {"num_candidates": 10}}]})
    assert "serving parameter 'num_candidates' is set in layers 'main' and 'other'" in message
    refused("ALREADY_EXISTS", document.create, "alice", "main", new_experiment(key="depth"))
    assert document.path.read_text() == before and not document.audit_path.exists()


def test_reweighting_a_running_experiment_needs_force(document):
    _, experiment = document.get("depth")
    reweighted = {**experiment, "arms": [{**experiment["arms"][0], "weight": 90},
                                         experiment["arms"][1]]}
    message = refused("FAILED_PRECONDITION", document.update, "bob", "main", reweighted)
    assert "re-buckets users" in message and "force" in message
    version, _, after = document.update("bob", "main", reweighted, force=True)
    assert after["arms"][0]["weight"] == 90
    [entry] = audit(document)
    assert entry["before"]["arms"][0]["weight"] == 50 and entry["after"]["arms"][0]["weight"] == 90


def test_changes_that_keep_buckets_need_no_force(document):
    _, experiment = document.get("depth")
    document.update("bob", "main", {**experiment, "allowlist": {"qa-1": "b"}})
    document.set_status("bob", "depth", "paused")
    _, experiment = document.get("depth")
    # paused: nobody is being served its arms, so re-weighting moves no one mid-flight
    document.update("bob", "main", {**experiment, "salt": "fresh"})
    assert document.get("depth")[1]["salt"] == "fresh"


def test_status_moves_and_stop_is_final(document):
    document.set_status("carol", "depth", "paused")
    document.set_status("carol", "depth", "running")
    document.set_status("carol", "depth", "stopped")
    message = refused("FAILED_PRECONDITION", document.set_status, "carol", "depth", "running")
    assert "is stopped" in message
    assert [e["action"] for e in audit(document)] == ["pause", "resume", "stop"]
    refused("NOT_FOUND", document.set_status, "carol", "nope", "paused")


def test_a_change_based_on_an_old_version_is_refused(document):
    document.set_status("carol", "depth", "paused", expected_version="v0")
    message = refused("FAILED_PRECONDITION", document.set_status, "carol", "depth",
                      "running", expected_version="v0")
    assert "re-read it and retry" in message


def test_tokens_identify_editors_and_refuse_others():
    def entry(who, token, role):
        return {"who": who, "sha256": hashlib.sha256(token.encode()).hexdigest(), "role": role}
    tokens = config_lib.from_dict(AdminTokens, {"tokens": [
        entry("alice", "secret-a", "editor"), entry("vic", "secret-v", "viewer")]}, "tokens")
    assert tokens.editor("secret-a") == "alice"
    assert "changes need an editor" in refused("PERMISSION_DENIED", tokens.editor, "secret-v")
    refused("UNAUTHENTICATED", tokens.editor, "guess")
    refused("UNAUTHENTICATED", tokens.editor, "")
    with pytest.raises(config_lib.ConfigError, match="field 'sha256'"):
        config_lib.from_dict(AdminTokens, {"tokens": [{"who": "x", "sha256": "abc"}]}, "t")


def test_a_document_that_cannot_be_written_is_a_clear_refusal(tmp_path):
    # the file system refuses (here: a volume that is not there), not the rules
    missing = ExperimentDocument(tmp_path / "not-mounted" / "experiments.yaml",
                                 tmp_path / "audit.jsonl")
    message = refused("FAILED_PRECONDITION", missing.set_status, "carol", "depth", "paused")
    assert "cannot change the experiment document" in message
    assert "No such file or directory" in message


def test_switching_to_a_label_replaces_the_version_and_back(document):
    document.switch_defaults("ops", {"ranking_version": 3})
    _, defaults = document.switch_defaults("ops", {"ranking_version_label": "stable"})
    assert defaults == {"ranking_version_label": "stable"}
    _, defaults = document.switch_defaults("ops", {"ranking_version": 4})
    assert defaults == {"ranking_version": 4}
    message = refused("INVALID_ARGUMENT", document.switch_defaults, "ops",
                      {"ranking_version": 5, "ranking_version_label": "canary"})
    assert "set ranking_version or ranking_version_label, not both" in message
    assert document.read()["defaults"] == {"ranking_version": 4}


def test_labels_cross_the_admin_api_and_its_cli():
    from tools import experiments as cli
    served = {"ranking_version_label": "canary", "retrieval_version": 3}
    assert serving_from_proto(serving_to_proto(served)) == served
    args = cli.parser().parse_args(["switch", "--ranking-version-label", "stable"])
    assert serving_from_proto(cli.serving(args)) == {"ranking_version_label": "stable"}
