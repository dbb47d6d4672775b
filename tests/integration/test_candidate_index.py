"""The retrieval version's candidate index through the running candidate service: the
pipeline writes it beside the SavedModel, and searching it with the version's query
embedding gives what that version's own top-k gives."""
from __future__ import annotations

import csv

import grpc
import numpy as np

from libs import candidate_index, feature_spec
from libs.serving_client import predict_method, predict_request, to_ndarray
from recsys.v1 import candidate_pb2, candidate_pb2_grpc
from services.candidate.candidates import query_inputs
from tests.integration.helpers import catalog_items, newest_version, rated_items

AT = 900_000_000  # the request's moment, the same for the service and the direct call


def test_the_pushed_version_carries_an_index_of_the_whole_catalog(trained):
    workdir, _ = trained
    version = newest_version(workdir, "retrieval")
    directory = (workdir / "model_repo" / "retrieval" / str(version) / "assets.extra"
                 / candidate_index.DIRECTORY)
    index = candidate_index.CandidateIndex.load(directory, approximate=True)
    assert set(index.item_ids) == catalog_items(workdir)
    assert index.cells.ntotal == len(index.item_ids)


def model_top_k(stack, workdir, user: str, version: int, n: int) -> list[str]:
    """The version's own brute-force top-k (its serving_default), minus the user's items."""
    rated = rated_items(workdir, user)
    request = predict_request("retrieval", version)
    with open(workdir / "data" / "raw" / "users.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["user_id"] == user)
    profile = {n: feature_spec.coerce(n, row[n]) for n in feature_spec.USER_FEATURES}
    for name, tensor in query_inputs(profile, rated, AT, n + len(rated)).items():
        request.inputs[name].CopyFrom(tensor)
    with grpc.insecure_channel(stack.address("services/model_server")) as channel:
        found = predict_method(channel)(request, timeout=10)
    ids = [i.decode() for i in to_ndarray(found.outputs["item_ids"])[0]]
    return [i for i in ids if i not in rated][:n]


def test_the_service_answers_what_the_versions_own_top_k_answers(trained, stack):
    workdir, _ = trained
    version = newest_version(workdir, "retrieval")
    with grpc.insecure_channel(stack.address("services/candidate")) as channel:
        candidates = candidate_pb2_grpc.CandidateServiceStub(channel)
        for user in ("1", "2", "3", "4", "5"):
            found = candidates.GetCandidates(candidate_pb2.CandidateRequest(
                user_id=user, num_candidates=30, sources=["two_tower"],
                context={"timestamp_seconds": AT}), timeout=10)
            expected = model_top_k(stack, workdir, user, version, 30)
            served = [i.item_id for i in found.items]
            assert found.model_version == version and not found.fallback
            assert served[:10] == expected[:10] and len(set(served) & set(expected)) >= 29
            scores = [i.score for i in found.items]
            assert np.all(np.diff(scores) <= 1e-6)
            excluded = served[:5]
            again = candidates.GetCandidates(candidate_pb2.CandidateRequest(
                user_id=user, num_candidates=30, sources=["two_tower"],
                exclude_item_ids=excluded, context={"timestamp_seconds": AT}), timeout=10)
            assert len(again.items) == 30 and not set(excluded) & {
                i.item_id for i in again.items}
