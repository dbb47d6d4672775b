"""The drift check's CLI on bad input: one line on stderr naming what, exit code 2, no
traceback and nothing written; and how it finds the served model's training set."""
import json
import shutil

import pandas as pd
import pytest

from pipelines.monitoring import check, features, served
from pipelines.monitoring.windows import DAY, InputError

T0 = 880_000_000  # autumn 1997, as MovieLens


def land(raw, ratings):
    raw.mkdir(parents=True)
    (raw / "users.csv").write_text("user_id,age,gender,occupation,zip_code\n"
                                   "1,30,F,writer,12345\n2,45,M,student,54321\n")
    (raw / "items.csv").write_text("item_id,title,release_year,genres\n"
                                   "10,A (1990),1990,Drama\n11,B (1995),1995,Comedy|War\n")
    lines = [f"{u},{i},{r},{t}" for u, i, r, t in ratings]
    (raw / "ratings.csv").write_text("user_id,item_id,rating,timestamp\n"
                                     + "\n".join(lines) + "\n")


def run(tmp_path, capsys, *argv):
    code = check.main(["--workdir", str(tmp_path), "--out", str(tmp_path / "out"), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def bad_input(tmp_path, capsys, *argv) -> str:
    code, _, err = run(tmp_path, capsys, *argv)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    return err


def test_no_landed_data_names_the_file(tmp_path, capsys):
    err = bad_input(tmp_path, capsys, "--checks", "features")
    assert f"{tmp_path}/data/raw: no landed users.csv, items.csv, ratings.csv" in err


def test_an_empty_recent_window_is_named(tmp_path, capsys):
    land(tmp_path / "data" / "raw", [(1, 10, 4, T0), (2, 11, 3, T0 + 60)])
    err = bad_input(tmp_path, capsys, "--checks", "features", "--reference-set", "window",
                    "--until", "1998-04-01")
    assert "recent window 1998-03-25T00:00:00Z .. 1998-04-01T00:00:00Z: no landed ratings" \
        in err


def test_a_window_with_too_few_rows_is_not_judged(tmp_path, capsys):
    land(tmp_path / "data" / "raw", [(1, 10, 4, T0 - 10 * DAY), (2, 11, 3, T0 - 60)])
    err = bad_input(tmp_path, capsys, "--checks", "features", "--reference-set", "window",
                    "--until", str(T0))
    assert "recent window" in err and "1 landed ratings" in err
    assert "fewer than min_rows 1000" in err


def test_no_training_set_to_compare_with(tmp_path, capsys):
    land(tmp_path / "data" / "raw", [(1, 10, 4, T0 - 60)])
    err = bad_input(tmp_path, capsys, "--checks", "features", "--until", "latest",
                    "--set", "min_rows=1")
    assert "data/training_sets: no training set" in err


def test_no_exposure_log_and_a_malformed_line(tmp_path, capsys):
    err = bad_input(tmp_path, capsys, "--checks", "predictions")
    assert f"{tmp_path}/exposures: no exposure log directory" in err
    log = tmp_path / "exposures" / "exposures-1997-11-20-host-1.jsonl"
    log.parent.mkdir()
    good = {"timestamp": T0, "fallback": False, "scores": [4.1],
            "model_versions": {"retrieval": 1, "ranking": 1}}
    log.write_text(json.dumps(good) + "\n" + json.dumps({**good, "fallback": "no"}) + "\n")
    err = bad_input(tmp_path, capsys, "--checks", "predictions", "--until", "latest")
    assert f"{log}:2: field 'fallback' must be true or false" in err


def test_no_responses_in_the_reference_window(tmp_path, capsys):
    log = tmp_path / "exposures" / "exposures-1997-11-20-host-1.jsonl"
    log.parent.mkdir()
    log.write_text(json.dumps({"timestamp": T0, "fallback": False, "scores": []}) + "\n")
    err = bad_input(tmp_path, capsys, "--checks", "predictions", "--until", "latest")
    assert "error: reference window 1997-10-16T04:26:40Z .. 1997-11-13T04:26:40Z: " \
           "no responses in" in err


@pytest.mark.parametrize("argv, message", [
    (["--checks", "features,colour"], "--checks 'features,colour': choose from"),
    (["--until", "soon"], "--until 'soon': expected now, latest"),
    (["--recent-days", "0", "--checks", "predictions"], "--recent-days must be positive"),
    (["--set", "thresholds={psi: -1}"], "--set: field 'thresholds': field 'psi' must be "
                                        "positive"),
    (["--set", "colour=red"], "--set: unknown key(s) 'colour'"),
])
def test_bad_flags_and_config(tmp_path, capsys, argv, message):
    (tmp_path / "exposures").mkdir()
    assert message in bad_input(tmp_path, capsys, *argv)


def training_sets(workdir, *spans):
    sets = workdir / "data" / "training_sets"
    for span in spans:
        (sets / f"span-{span}").mkdir(parents=True)
        pd.DataFrame({"timestamp": [span]}).to_parquet(sets / f"span-{span}" /
                                                       "ratings.parquet")
    return sets


def version(workdir, model, number, span=None):
    path = workdir / "model_repo" / model / str(number)
    path.mkdir(parents=True)
    if span is not None:  # the card names where it was trained (another machine)
        (path / "model_card.md").write_text(f"| training set | `/elsewhere/span-{span}` |\n"
                                            f"| span | {span} |\n")


MODELS_CONFIG = """model_config_list {
  config { name: "ranking" base_path: "/models/ranking" model_platform: "tensorflow"
    model_version_policy { specific { versions: 5 versions: 7 } }
    version_labels { key: "stable" value: 5 } version_labels { key: "canary" value: 7 } }
  config { name: "retrieval" base_path: "/models/retrieval" model_platform: "tensorflow"
    model_version_policy { specific { versions: 5 } } version_labels { key: "stable" value: 5 } }
}
"""


def experiments(path, **defaults):
    import yaml
    path.write_text(yaml.safe_dump({"version": "v1", "defaults": defaults, "layers": []}))
    return path


def test_the_served_versions_are_what_the_routers_defaults_and_labels_name(tmp_path):
    for model in ("ranking", "retrieval"):
        for number in (5, 7, 9):  # 9: pushed, not in the config
            version(tmp_path, model, number)
    config = tmp_path / "models.config"
    config.write_text(MODELS_CONFIG)
    newest = served.served_versions(tmp_path)  # no config: the newest in the repository
    assert {m: s.version for m, s in newest.items()} == {"ranking": 9, "retrieval": 9}
    # the config's policy, no defaults: the newest it loads
    assert served.served_versions(tmp_path, config)["ranking"].version == 7
    stable = served.served_versions(tmp_path, config, experiments(
        tmp_path / "e.yaml", ranking_version_label="stable", retrieval_version=9))
    assert (stable["ranking"].version, stable["retrieval"].version) == (5, 9)
    assert "label 'stable'" in stable["ranking"].why
    with pytest.raises(InputError, match="the defaults serve ranking's label 'gold', which"):
        served.served_versions(tmp_path, config, experiments(
            tmp_path / "e.yaml", ranking_version_label="gold"))
    with pytest.raises(InputError, match="ranking version 3 is served"):
        served.served_versions(tmp_path, None, experiments(tmp_path / "e.yaml",
                                                           ranking_version=3))


def test_the_training_sets_the_served_versions_learnt_from(tmp_path):
    sets = training_sets(tmp_path, 100, 200, 300)  # 300 is newest; no one learnt from it
    version(tmp_path, "ranking", 7, span=100)
    version(tmp_path, "retrieval", 7, span=100)
    [(path, models, why)] = features.serving_training_sets(tmp_path)
    assert path == sets / "span-100" and {m.model for m in models} == {"ranking", "retrieval"}
    assert "ranking version 7" in why and "retrieval version 7" in why
    version(tmp_path, "ranking", 8, span=200)  # a newer ranking model, same retrieval
    found = {tuple(m.model for m in models): path
             for path, models, _ in features.serving_training_sets(tmp_path)}
    assert found == {("ranking",): sets / "span-200", ("retrieval",): sets / "span-100"}
    version(tmp_path, "ranking", 9, span=400)
    with pytest.raises(InputError, match="the training set it names is not there"):
        features.serving_training_sets(tmp_path)
    version(tmp_path, "ranking", 10)
    with pytest.raises(InputError, match="no model card"):
        features.serving_training_sets(tmp_path)


def test_with_no_model_the_newest_training_set_is_the_reference(tmp_path):
    sets = training_sets(tmp_path, 100, 200)
    [(path, models, why)] = features.serving_training_sets(tmp_path)
    assert (path, models) == (sets / "span-200", []) and "no model in" in why


def test_features_are_checked_against_each_served_models_training_set(tmp_path, capsys):
    rows = [(1 + i % 2, 10 + i % 2, 1 + i % 5, T0 - i * 600) for i in range(40)]
    land(tmp_path / "data" / "raw", rows)
    sets = training_sets(tmp_path)
    for span, ratings in ((100, rows), (200, rows[:20])):
        frame = pd.DataFrame(ratings, columns=["user_id", "item_id", "rating", "timestamp"])
        frame = frame.astype({"user_id": str, "item_id": str, "rating": float})
        frame["age"], frame["gender"], frame["occupation"] = 30, "F", "writer"
        frame["genres"], frame["release_year"] = "Drama", 1990
        (sets / f"span-{span}").mkdir(parents=True)
        frame.to_parquet(sets / f"span-{span}" / "ratings.parquet")
        (sets / f"span-{span}" / "snapshot.json").write_text(json.dumps({"span": span}))
    version(tmp_path, "ranking", 8, span=200)
    version(tmp_path, "retrieval", 7, span=100)
    code, out, err = run(tmp_path, capsys, "--checks", "features,label", "--until", "latest",
                         "--set", "min_rows=1")
    assert code in (0, 1), err
    report = json.loads((tmp_path / "out" / "drift.json").read_text())
    checks = {r["check"] for r in report["results"]}
    assert checks == {"features", "label", "retrieval_features", "retrieval_label"}
    assert "span-200" in out and "span-100" in out


def test_only_answers_the_ranking_model_scored_count_and_other_days_are_not_read(tmp_path):
    from pipelines.monitoring import predictions
    from pipelines.monitoring.windows import Window

    def line(t, fallback, ranking, scores):
        return json.dumps({"timestamp": t, "fallback": fallback, "scores": scores,
                           "model_versions": {"retrieval": 1, "ranking": ranking}}) + "\n"

    (tmp_path / "exposures-1997-11-20-a-1.jsonl").write_text(
        line(T0, False, 2, [4.5, 4.0]) + line(T0 + 1, True, 0, [300.0])  # popular items
        + line(T0 + 2, False, 0, [0.9]))  # a retrieval-only arm: retrieval scores
    (tmp_path / "exposures-1997-10-01-a-1.jsonl").write_text("not json\n")  # outside
    (tmp_path / "shadow-1997-11-20-a-1.jsonl").write_text("{}\n")  # another record
    window = Window("recent", T0 - 60, T0 + 60)
    served = predictions.read(tmp_path, [window])["recent"]
    assert served.fallbacks == [False, True, False]
    assert served.scores == {2: [4.5, 4.0]} and served.ranking_versions == {2: 1}
    samples = predictions.samples(served)
    assert samples["fallback"].tolist() == [0, 1, 0]


def test_the_scores_compared_are_the_served_ranking_version_s(tmp_path, capsys):
    """A canary (version 3, new scores) answers a share of users: what users get is
    version 2, whose scores did not move, so the check finds no drift in them."""
    exposures = tmp_path / "exposures"
    exposures.mkdir()
    lines = []
    for n in range(400):
        for t, versions in ((T0 - 3 * DAY, [2]), (T0 - DAY / 2, [2, 3])):
            for v in versions:
                scores = [4.0 + (n % 10) / 10] if v == 2 else [1.0 + (n % 10) / 10]
                lines.append(json.dumps({
                    "request_id": f"{t}-{n}-{v}", "timestamp": t + n, "user_id": str(n),
                    "fallback": False, "scores": scores,
                    "model_versions": {"retrieval": 1, "ranking": v}}))
    (exposures / "exposures-1997-11-18-a-1.jsonl").write_text("\n".join(lines) + "\n")
    for v in (2, 3):
        (tmp_path / "model_repo" / "ranking" / str(v)).mkdir(parents=True)
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text("version: v1\ndefaults: {ranking_version: 2}\nlayers: []\n")
    code, out, err = run(tmp_path, capsys, "--checks", "predictions", "--until", str(T0),
                         "--recent-days", "1", "--reference-days", "2", "--set",
                         "min_rows=100", "--experiments", str(experiments))
    assert code == 0, out + err
    assert "ranking version 2's answers only" in out
    # no defaults: the newest, 3, is served, and it answered nobody in the reference days
    code, out, err = run(tmp_path, capsys, "--checks", "predictions", "--until", str(T0),
                         "--recent-days", "1", "--reference-days", "2", "--set",
                         "min_rows=100")
    assert code == 0 and "score: not compared" in out
    # no model repository to say what is served: every version's scores, drift
    shutil.rmtree(tmp_path / "model_repo")
    code, out, err = run(tmp_path, capsys, "--checks", "predictions", "--until", str(T0),
                         "--recent-days", "1", "--reference-days", "2", "--set",
                         "min_rows=100")
    assert code == 1 and "DRIFT" in out


def test_a_push_that_fails_is_exit_2_after_the_report(tmp_path, capsys):
    from tools.stack import free_port

    land(tmp_path / "data" / "raw", [(1, 10, 4, T0 - 20 * DAY), (2, 11, 3, T0 - DAY)])
    code, out, err = run(tmp_path, capsys, "--checks", "features", "--reference-set",
                         "window", "--until", str(T0), "--set", "min_rows=1",
                         "--pushgateway", f"127.0.0.1:{free_port()}")  # nobody listens
    assert code == 2 and "user_id" in out
    assert err.startswith("error: push to the Pushgateway 127.0.0.1:") and "Traceback" not in err
    assert (tmp_path / "out" / "drift.json").is_file()
