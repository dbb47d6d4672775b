"""The candidate service's retrieval call: what it sends the model, what it drops."""
import asyncio

import numpy as np
import pytest

from libs import feature_spec
from libs.feature_store import PopularItems, QueryFeatures, default_user
from libs.serving_client import Prediction, to_ndarray
from recsys.v1 import candidate_pb2
from services.candidate.candidates import CandidateGenerator, InvalidRequest


class Features(PopularItems):
    num_items = 10

    def __init__(self, rated: set[str]):
        super().__init__([("1", 1.0)])
        self.rated = rated

    async def query_features(self, user_id):
        return QueryFeatures({**default_user(user_id), "age": 41}, self.rated)


class Client:
    def __init__(self, ranked: list[str]):
        self.ranked, self.inputs, self.asked = ranked, None, None

    async def predict(self, model, inputs, version=0, label=""):
        self.inputs = {name: to_ndarray(tensor) for name, tensor in inputs.items()}
        self.asked = (version, label)
        return Prediction({"item_ids": np.array([[i.encode() for i in self.ranked]]),
                           "scores": np.array([[1.0] * len(self.ranked)])}, 7)


def test_the_users_rated_items_go_to_the_model_as_its_history_and_are_dropped():
    client = Client(["30", "4", "100", "5"])
    generator = CandidateGenerator(Features({"4", "30", "100"}), client, "retrieval", 50)
    response = asyncio.run(generator.candidates(
        candidate_pb2.CandidateRequest(user_id="u1", num_candidates=2)))
    assert set(client.inputs) == set(feature_spec.RETRIEVAL_INPUTS) | {"k"}
    assert client.inputs["rated_items"].tolist() == [b"100 30 4"]  # as the view sorts them
    assert client.inputs["age"].tolist() == [41]
    assert [item.item_id for item in response.items] == ["5"]
    assert response.model_version == 7


def test_a_version_label_goes_to_the_model_server_and_not_with_a_version():
    client = Client(["5"])
    generator = CandidateGenerator(Features(set()), client, "retrieval", 50)
    response = asyncio.run(generator.candidates(candidate_pb2.CandidateRequest(
        user_id="u1", num_candidates=1, model_version_label="canary")))
    assert client.asked == (0, "canary") and response.model_version == 7
    with pytest.raises(InvalidRequest, match="model_version and model_version_label"):
        asyncio.run(generator.candidates(candidate_pb2.CandidateRequest(
            user_id="u1", num_candidates=1, model_version=3, model_version_label="canary")))
