"""Load and fault tests of the serving stack, on 127.0.0.1 only."""
import os

# Known users are asked for by id 1..NUM_USERS (MovieLens 100K has 943): every load
# figure spreads over them, as latency depends on the user's history and arm.
NUM_USERS = int(os.environ.get("RECSYS_LOADTEST_USERS", "943"))
