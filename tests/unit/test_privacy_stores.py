"""The erasure's file stores and the deletion list, on files the real writers wrote."""
from __future__ import annotations

import json
import time

from libs import deletion_list
from pipelines.privacy import stores
from services.router.exposure_log import ExposureLog


def test_log_lines_are_blanked_in_place_while_the_writer_goes_on(tmp_path):
    log = ExposureLog(tmp_path, prefix="outcomes", time_field="received")
    now = time.time()
    log.write_many([{"user_id": u, "received": now, "n": i}
                    for i, u in enumerate(["7", "17", "7", "70"])])
    [path] = list(tmp_path.glob("outcomes-*.jsonl"))
    before = path.read_bytes()
    store = stores.JsonLines("outcome log", lambda: [path])
    assert [r["n"] for r in store.export("7")] == [0, 2]

    assert store.erase("7") == 2
    log.write({"user_id": "8", "received": now, "n": 4})  # the same open file
    log.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["n"] for line in lines if line.strip()] == [1, 3, 4]
    # every byte where it was, the user's lines now spaces: readers' offsets stay true
    assert path.read_bytes()[:len(before)] == b"".join(
        b" " * (len(line) - 1) + b"\n" if json.loads(line)["user_id"] == "7" else line
        for line in before.splitlines(keepends=True))
    assert store.export("7") == []


def test_csv_rows_go_and_the_rest_stays_as_written(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("user_id,item_id,rating,timestamp\r\n7,1,4,10\r\n17,7,5,11\r\n"
                    "7,2,3,12\r\n")
    store = stores.CsvRows("raw ratings", lambda: [path])
    assert [r["item_id"] for r in store.export("7")] == ["1", "2"]
    assert store.erase("7") == 2
    assert path.read_bytes() == b"user_id,item_id,rating,timestamp\r\n17,7,5,11\r\n"


def test_an_audit_log_keeps_every_entry_with_the_id_masked(tmp_path):
    path = tmp_path / "audit.jsonl"
    entries = [{"action": "create", "after": {"allowlist": {"7": "b", "17": "a"}},
                "subject": "7"},
               {"action": "stop", "after": {"allowlist": {}}}]
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    size = path.stat().st_size
    store = stores.MaskedKeys("audit log", lambda: [path])
    assert len(store.export("7")) == 1
    assert store.erase("7") == 1
    after = [json.loads(line) for line in path.read_text().splitlines()]
    assert after[0]["after"]["allowlist"] == {"*": "b", "17": "a"}
    assert after[0]["subject"] == "7"  # a value, not an allowlist key: an experiment's
    assert after[1] == entries[1] and path.stat().st_size == size
    assert store.export("7") == []


def test_quarantined_rows_name_their_user_whatever_wrote_them():
    assert stores.quarantined_user({"table": "ratings", "row": "7,1,six,10"}) == "7"
    assert stores.quarantined_user({"table": "ratings",
                                    "row": json.dumps({"user_id": "7"})}) == "7"
    assert stores.quarantined_user({"entry_id": "1-0", "event": {"user_id": "7"}}) == "7"
    assert stores.quarantined_user({"table": "items", "row": "7,Heat,1995,Action"}) is None


def test_the_deletion_list_holds_digests_once_and_is_reread_when_it_changes(tmp_path):
    path = deletion_list.path_in(tmp_path)
    listed = deletion_list.DeletionList(path)
    assert "7" not in listed
    assert deletion_list.add(path, "7") and not deletion_list.add(path, "7")
    assert "7" in listed and "17" not in listed
    assert "7" not in path.read_text().replace(deletion_list.digest("7"), "")
    assert path.stat().st_mode & 0o777 == 0o600
    deletion_list.add(path, "17")
    assert "17" in listed
    assert deletion_list.digests_in(tmp_path) == {deletion_list.digest("7"),
                                                  deletion_list.digest("17")}
