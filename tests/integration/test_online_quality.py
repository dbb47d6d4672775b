"""The online quality check on what the real router logged: Recommend answers and the
events a product service reported through RecordOutcomes, joined and measured by the CLI
as the CronJob runs it, judged against the pipeline's evaluation.json and pushed to a
real Pushgateway."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import grpc
import pytest

from recsys.v1 import outcomes_pb2, outcomes_pb2_grpc, recommend_pb2, recommend_pb2_grpc
from tests.conftest import ROOT
from tests.integration.helpers import extra_router, scraped
from tools.stack import service_env

ROUTER = "services/router"
USERS = [str(u) for u in range(1, 121)]
LABEL_SECONDS = 8  # the labels of an answer: what its user rated in the next 8 seconds


def event(n: int, answer, item: str, kind, value: float = 0.0, request_id: str = ""):
    return outcomes_pb2.OutcomeEvent(
        event_id=f"{answer.request_id}-{kind}-{item}", request_id=request_id, user_id=USERS[n],
        item_id=item, type=kind, value=value)


def test_the_check_measures_what_the_router_logged_and_pushes_it(stack, trained, tmp_path,
                                                                 pushgateway):
    workdir, _ = trained
    exposures, outcomes = tmp_path / "exposures", tmp_path / "outcomes"
    router = extra_router(stack, f"exposure_log_dir={exposures}",
                          f"outcome_log_dir={outcomes}", "exposure_fsync_seconds=0")
    answers, shown, engaged, rated = [], 0, set(), {}
    try:
        with grpc.insecure_channel(router.address(ROUTER)) as channel:
            recommend = recommend_pb2_grpc.RecommendServiceStub(channel)
            report = outcomes_pb2_grpc.OutcomeServiceStub(channel)
            for n, user in enumerate(USERS):
                answer = recommend.Recommend(recommend_pb2.RecommendRequest(
                    user_id=user, num_results=10), timeout=10)
                items = [i.item_id for i in answer.items]
                # the product shows five, the user clicks the second of every third
                # answer and rates, without a request id, the first of every other
                events = [event(n, answer, item, outcomes_pb2.IMPRESSION,
                                request_id=answer.request_id) for item in items[:5]]
                shown += 5
                if n % 3 == 0:
                    events.append(event(n, answer, items[1], outcomes_pb2.CLICK,
                                        request_id=answer.request_id))
                    engaged.add((answer.request_id, items[1]))
                # a ranked answer's first item is rated about as predicted (the
                # ranking model holds its promise and the check exits 0)
                rating = (float(min(5, max(1, round(answer.items[0].score))))
                          if answer.model_versions.ranking else 5.0 if n % 4 == 0 else 2.0)
                item = items[0] if n % 2 == 0 else "not-served"
                events.append(event(n, answer, item, outcomes_pb2.RATING, rating))
                if n % 2 == 0:
                    engaged.add((answer.request_id, items[0]))
                    rated[answer.request_id] = (rating, answer.items[0].score)
                recorded = report.RecordOutcomes(
                    outcomes_pb2.RecordOutcomesRequest(events=events), timeout=10)
                assert recorded.accepted == len(events)
                answers.append(answer)
    finally:
        router.stop()
    assert not any(a.fallback for a in answers)
    time.sleep(LABEL_SECONDS + 1)  # every answer's labels are in

    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.monitoring.quality_check", "--workdir",
         str(workdir), "--exposures", str(exposures), "--outcomes", str(outcomes),
         "--until", "now", "--label-days", str(LABEL_SECONDS / 86_400), "--min-samples",
         "10", "--out", str(out), "--pushgateway", pushgateway],
        cwd=ROOT, env=service_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads((out / "quality.json").read_text())
    figures = document["figures"]
    assert document["responses"] == len(USERS)

    def figure(scope, metric, **key):
        found = [f for f in figures if f["scope"] == scope and f["metric"] == metric
                 and all(f.get(k) == v for k, v in key.items())]
        assert len(found) == 1, (scope, metric, key)
        return found[0]

    versions = {a.model_versions.retrieval for a in answers}
    assert len(versions) == 1
    retrieval = {"model": "retrieval", "version": versions.pop()}
    assert figure("version", "ctr", **retrieval)["value"] == pytest.approx(
        len(engaged) / shown)
    # the delayed labels: half the users rated their first item, on unranked answers
    unranked = [n for n, a in enumerate(answers) if a.model_versions.ranking == 0]
    recall = figure("delayed", "hit_rate_at_10", **retrieval)
    assert recall["samples"] == len(unranked)
    assert recall["value"] == pytest.approx(sum(n % 2 == 0 for n in unranked) / len(unranked))
    ranked = [a for a in answers if a.model_versions.ranking and a.request_id in rated]
    if ranked:  # the two_stage arm's answers: the ranking model's predicted ratings
        rmse = figure("delayed", "rmse", model="ranking",
                      version=ranked[0].model_versions.ranking)
        errors = [(rated[a.request_id][0] - rated[a.request_id][1]) ** 2 for a in ranked]
        assert rmse["value"] == pytest.approx(math.sqrt(sum(errors) / len(errors)), rel=1e-3)
    # the retrieval promise was measured over 14 days of labels, not 8 seconds
    statuses = {v["status"] for v in document["verdicts"] if v["model"] == "retrieval"}
    assert statuses in ({"not comparable"}, {"no promise"})

    series = scraped(pushgateway, "recsys_online_quality")
    labels = (("arm", ""), ("experiment", ""), ("job", "recsys_online_quality"),
              ("metric", "ctr"), ("model", "retrieval"), ("scope", "version"),
              ("source", ""), ("version", str(retrieval["version"])))
    assert series[("recsys_online_quality", labels)] == pytest.approx(len(engaged) / shown)
    assert series[("recsys_online_quality_last_run_timestamp_seconds",
                   (("job", "recsys_online_quality"),))] > time.time() - 60
