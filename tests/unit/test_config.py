from dataclasses import dataclass, field

import pytest

from libs import config


@dataclass
class Inner:
    name: str
    weight: int = 1


@dataclass
class Sample:
    port: int = 1
    ratio: float = 0.5
    enabled: bool = False
    items: list[Inner] = field(default_factory=list)

    def validate(self):
        if self.port < 0:
            raise ValueError("field 'port' must not be negative")


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_file_environment_and_overrides_in_that_order(tmp_path, monkeypatch):
    path = write(tmp_path, "port: 10\nratio: 0.25\nitems: [{name: a, weight: 3}]\n")
    monkeypatch.setenv("SAMPLE_PORT", "20")
    loaded = config.load(Sample, path, env_prefix="SAMPLE", overrides={"enabled": True})
    assert (loaded.port, loaded.ratio, loaded.enabled) == (20, 0.25, True)
    assert loaded.items == [Inner("a", 3)]


@pytest.mark.parametrize("text, words", [
    ("prot: 10\n", "unknown key(s) 'prot'; allowed: enabled, items, port, ratio"),
    ("port: ten\n", "field 'port': must be an integer, got 'ten'"),
    ("port: 1.5\n", "field 'port': must be an integer, got 1.5"),
    ("enabled: maybe\n", "field 'enabled': must be true or false"),
    ("items: [{name: a, wieght: 2}]\n", "unknown key(s) 'wieght'"),
    ("port: -1\n", "field 'port' must not be negative"),
    ("- 1\n", "top level must be a mapping"),
    ("port: [\n", "not valid YAML"),
])
def test_bad_config_is_rejected_naming_file_and_field(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as err:
        config.load(Sample, path)
    assert words in str(err.value) and str(path) in str(err.value)


def test_command_line_reports_bad_config_without_traceback(tmp_path, capsys):
    path = write(tmp_path, "port: 10\n")
    with pytest.raises(SystemExit) as exit_:
        config.from_command_line(Sample, "x", path, "SAMPLE", ["--set", "nope=1"])
    assert exit_.value.code == 2
    assert "invalid configuration" in capsys.readouterr().err


def test_every_service_config_file_is_valid():
    from services.candidate.config import CandidateConfig
    from services.model_server.config import ModelServerConfig
    from services.ranking.config import RankingConfig
    from services.router.config import RouterConfig
    from tests.conftest import ROOT
    for cls, path in [(CandidateConfig, "services/candidate/config.yaml"),
                      (RankingConfig, "services/ranking/config.yaml"),
                      (RouterConfig, "services/router/config.yaml"),
                      (ModelServerConfig, "services/model_server/config.yaml")]:
        loaded = config.load(cls, ROOT / path)
        assert loaded.port > 0
