"""The benchmark's in-process served order (pipelines/training/served_order.py) is what
the running candidate service answers: same model version, sources, history and time."""
from __future__ import annotations

import grpc

from libs import candidate_sources as cs
from pipelines.data import prepare
from pipelines.training import served_order
from recsys.v1 import candidate_pb2, candidate_pb2_grpc, common_pb2


def test_the_benchmark_serves_what_the_candidate_service_answers(trained, stack):
    workdir, _ = trained
    _, rows = prepare.read_training_set(
        prepare.newest_training_set(workdir / "data" / "training_sets"))
    model_dir = served_order.newest_version(workdir / "model_repo")
    version_sources = cs.CandidateSources.load(model_dir / "assets.extra" / cs.ARTIFACT)
    users = sorted(rows.user_id.unique())[:10]
    expected = served_order.served_lists(model_dir, rows, version_sources, users)
    at = int(rows.timestamp.max()) + 1
    with grpc.insecure_channel(stack.address("services/candidate")) as channel:
        candidates = candidate_pb2_grpc.CandidateServiceStub(channel)
        for user in users:
            found = candidates.GetCandidates(candidate_pb2.CandidateRequest(
                user_id=user, num_candidates=served_order.NUM_CANDIDATES,
                context=common_pb2.Context(timestamp_seconds=at)), timeout=10)
            assert found.model_version == int(model_dir.name) and not found.fallback
            assert [i.item_id for i in found.items][:10] == expected[user], user
