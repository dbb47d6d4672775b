"""Locust gRPC user calling RecommendService/Recommend.

gevent must patch gRPC before any channel exists, or every call blocks the event loop
and the user count means nothing.
"""
import random
import time

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, between, events, task

grpc_gevent.init_gevent()

from load_tests import NUM_USERS  # noqa: E402
from recsys.v1 import recommend_pb2, recommend_pb2_grpc  # noqa: E402

UNKNOWN_SHARE = 0.05  # some traffic from users without history, as in production


class RecommendUser(User):
    wait_time = between(0.0, 0.01)

    def on_start(self):
        self.channel = grpc.insecure_channel(self.host)
        self.stub = recommend_pb2_grpc.RecommendServiceStub(self.channel)

    def on_stop(self):
        self.channel.close()

    @task
    def recommend(self):
        user = (f"new-{random.randrange(10**6)}" if random.random() < UNKNOWN_SHARE
                else str(random.randint(1, NUM_USERS)))
        start = time.perf_counter()
        exception, size = None, 0
        try:
            response = self.stub.Recommend(
                recommend_pb2.RecommendRequest(user_id=user, num_results=10), timeout=2.0)
            size = response.ByteSize()
            name = "Recommend (fallback)" if response.fallback else "Recommend"
        except grpc.RpcError as err:
            exception, name = err, "Recommend"
        events.request.fire(request_type="grpc", name=name,
                            response_time=(time.perf_counter() - start) * 1000,
                            response_length=size, exception=exception, context={})
