"""The candidate service's retrieval call: what it sends the model, what it drops."""
import asyncio

import numpy as np
import pytest

from libs import candidate_sources as cs, feature_spec, trends
from libs.feature_store import PopularItems, QueryFeatures, default_user
from libs.serving_client import Prediction, to_ndarray
from recsys.v1 import candidate_pb2
from services.candidate.candidates import CandidateGenerator, InvalidRequest
from services.candidate.merge import ASSETS, VersionSources, merge


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


def _version_with_sources(base, version: int, items: list[str]) -> None:
    """A retrieval version whose sources make 'b' the neighbour of 'a' and whose blend
    prefers items rated most over the last 30 days."""
    n = len(items)
    index = np.array([[(i + 1) % n] for i in range(n)], np.int32)  # each item -> the next
    weight = np.ones((n, 1), np.float32)
    blend_weight = np.zeros(len(cs.FEATURES))
    blend_weight[cs.FEATURES.index("log_count_30d")] = 1.0
    blend_weight[cs.FEATURES.index("item_to_item")] = 0.5
    path = base / str(version) / ASSETS
    path.mkdir(parents=True)
    cs.CandidateSources({"item_ids": np.array(items), "genres": np.zeros((n, 3)),
                         "item_to_item_index": index, "item_to_item_weight": weight,
                         "ease_index": index, "ease_weight": weight,
                         "blend_mean": np.zeros(len(cs.FEATURES)),
                         "blend_scale": np.ones(len(cs.FEATURES)),
                         "blend_weight": blend_weight}).save(path / cs.ARTIFACT)


class TrendingFeatures(Features):
    def __init__(self, rated):
        super().__init__(rated)
        now = 1_000_000_000
        row = lambda recent, first: [0, 0, recent, recent, recent, recent, first]  # noqa: E731
        self.item_trends = {"t1": row(50, now - 90 * trends.DAY),
                            "t2": row(20, now - 9 * trends.DAY), "a": row(5, 0)}
        self.trends_as_of = now


def _generator(tmp_path, sources=("two_tower", "item_to_item", "ease", "trending", "popular")):
    _version_with_sources(tmp_path, 7, ["a", "b", "c", "t1", "t2", "x"])
    return CandidateGenerator(TrendingFeatures({"a"}), Client(["x", "a"]), "retrieval", 50,
                              VersionSources(tmp_path), sources)


def test_sources_of_the_version_that_answered_are_merged_and_each_item_says_its_source(
        tmp_path):
    generator = _generator(tmp_path)
    response = asyncio.run(generator.candidates(candidate_pb2.CandidateRequest(
        user_id="u1", num_candidates=10, exclude_item_ids=["t2"],
        context={"timestamp_seconds": 1_000_000_000})))
    found = {item.item_id: item for item in response.items}
    assert "a" not in found and "t2" not in found  # rated, excluded
    assert found["x"].source == "two_tower" and found["b"].source == "item_to_item"
    assert found["t1"].source == "trending"
    assert found["b"].source_scores["item_to_item"] == 1.0
    assert [item.item_id for item in response.items][0] == "t1"  # the blend's order


def test_a_request_or_an_arm_switches_sources_and_unknown_ones_are_refused(tmp_path):
    generator = _generator(tmp_path)
    response = asyncio.run(generator.candidates(candidate_pb2.CandidateRequest(
        user_id="u1", num_candidates=10, sources=["trending"])))
    assert {item.source for item in response.items} == {"trending"}
    alone = asyncio.run(generator.candidates(candidate_pb2.CandidateRequest(
        user_id="u1", num_candidates=10, sources=["two_tower"])))
    assert [(i.item_id, i.source) for i in alone.items] == [("x", "two_tower")]
    with pytest.raises(InvalidRequest, match="unknown \\['tiktok'\\]"):
        asyncio.run(generator.candidates(candidate_pb2.CandidateRequest(
            user_id="u1", num_candidates=10, sources=["tiktok"])))


def test_a_version_without_sources_serves_the_two_tower_order(tmp_path):
    generator = CandidateGenerator(TrendingFeatures({"a"}), Client(["x", "c", "a"]),
                                   "retrieval", 50, VersionSources(tmp_path))
    response = asyncio.run(generator.candidates(candidate_pb2.CandidateRequest(
        user_id="u1", num_candidates=10, sources=["two_tower", "trending"])))
    assert [(i.item_id, i.source) for i in response.items] == [("x", "two_tower"),
                                                              ("c", "two_tower")]


def test_what_the_user_rated_last_decides_among_their_neighbours(tmp_path):
    items = ["a", "b", "c", "t1", "t2", "x"]  # each item's neighbour: the next one
    _version_with_sources(tmp_path, 7, items)
    sources = cs.CandidateSources.load(tmp_path / "7" / ASSETS / cs.ARTIFACT)
    sources.blend.weight[:] = 0.0
    sources.blend.weight[cs.FEATURES.index("item_to_item_recent")] = 1.0
    orders = cs.TrendOrders({})

    def first(recent):
        found = merge(sources, {"item_to_item"}, [], {"a", "c"}, recent, {"a", "c"},
                      orders, 1_000_000_000, 5)
        return found[0].item_id

    assert first(["c"]) == "t1" and first(["a"]) == "b"


class MovingFeatures(TrendingFeatures):
    """A store whose rows the stream moved: 'c' is rated now; one read fails outright."""

    def __init__(self, rated):
        super().__init__(rated)
        self.reads = 0

    async def read_trends(self, item_ids):
        self.reads += 1
        if self.reads == 1:
            raise RuntimeError("a malformed row")
        now = self.trends_as_of + trends.DAY
        self.set_trends({**self.item_trends, "c": [80, 80, 80, 80, 80, 80, now]}, now)
        return True


def test_trends_refreshed_from_the_store_propose_what_is_rated_now_and_survive_a_bad_read(
        tmp_path):
    _version_with_sources(tmp_path, 7, ["a", "b", "c", "t1", "t2", "x"])
    features = MovingFeatures({"a"})
    generator = CandidateGenerator(features, Client(["x", "a"]), "retrieval", 50,
                                   VersionSources(tmp_path), ["trending"])

    def trending():
        return [i.item_id for i in asyncio.run(generator.candidates(
            candidate_pb2.CandidateRequest(user_id="u1", num_candidates=2))).items]

    assert "c" not in trending()

    async def follow():  # two refreshes: the first fails, the loop goes on
        task = asyncio.create_task(generator.follow_trends(0.01))
        for _ in range(500):
            if features.reads >= 2 or task.done():
                break
            await asyncio.sleep(0.01)
        task.cancel()
    asyncio.run(follow())
    assert trending()[0] == "c"
    assert features.popular_items(1) == [("c", 1.0)]  # the fallback follows too
