"""dbmode through real restarts, on SQLite and MySQL (the `db` fixture runs both)."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time

from tests.serverproc import closed_port_mysql_url, wait_for

ITEMS = [(f"k{i}", f"v{i}") for i in range(5)]


def test_dbmode1_saves_at_stop_and_loads_at_start_in_order(servers, db):
    t = db.create()
    s = servers(queues=[f"name={t};dbmode=1"], db_url=db.url).start()
    for key, value in ITEMS:
        s.add(t, key, value)
    assert s.stop() == 0
    assert db.rows(t) == ITEMS
    s2 = servers(queues=[f"name={t};dbmode=1"], db_url=db.url).start()
    assert db.rows(t) == []  # the rows are deleted once loaded
    two = s2.mi("mq_fetch", {"name": t, "limit": 2})
    assert [(i["key"], i["value"]) for i in two] == ITEMS[:2]  # oldest first
    assert s2.stop() == 0
    assert db.rows(t) == ITEMS[2:]


def test_repeated_dbmode1_restarts_neither_lose_nor_duplicate(servers, db):
    t = db.create()
    expected: list[tuple[str, str]] = []
    for round_ in range(3):
        s = servers(queues=[f"name={t};dbmode=1"], db_url=db.url).start()
        assert s.mi("mq_get_size", {"name": t})["Queue"]["size"] == len(expected)
        new = [(f"r{round_}k{i}", f"v{i}") for i in range(4)]
        for key, value in new:
            s.add(t, key, value)
        expected += new
        assert s.stop() == 0
        assert db.rows(t) == expected


def test_dbmode3_deletes_the_loaded_rows_and_saves_nothing(servers, db):
    t = db.create()
    db.insert(t, [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")])
    # addmode 2 keeps the newest "a" (moved to the tail), size 2 drops the oldest.
    s = servers(queues=[f"name={t};dbmode=3;addmode=2;size=2"], db_url=db.url).start()
    assert db.rows(t) == []
    s.add(t, "d", "5")
    assert s.stop() == 0
    assert db.rows(t) == []  # dbmode 3 loads only: nothing saved


def test_loaded_items_are_served_in_table_order(servers, db):
    t = db.create()
    db.insert(t, [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")])
    s = servers(queues=[f"name={t};dbmode=3;addmode=2;size=2"], db_url=db.url).start()
    assert s.fetch_all(t) == [("a", "3"), ("c", "4")]
    assert s.stop() == 0


def test_dbmode2_saves_without_loading(servers, db):
    t = db.create()
    db.insert(t, [("old", "0")])
    s = servers(queues=[f"name={t};dbmode=2"], db_url=db.url).start()
    assert s.mi("mq_get_size", {"name": t})["Queue"]["size"] == 0
    s.add(t, "new", "1")
    assert s.stop() == 0
    assert db.rows(t) == [("old", "0"), ("new", "1")]  # appended, as OpenSIPS does


def test_database_down_at_save_keeps_the_items_for_the_next_load(servers, db, short_tmp):
    t = db.create()
    down = servers(queues=[f"name={t};dbmode=2"], db_url=closed_port_mysql_url()).start()
    for key, value in ITEMS:
        down.add(t, key, value)
    assert down.stop() == 0
    fallback = short_tmp / f"{t}.fallback.jsonl"  # next to the pid file
    assert fallback.exists()
    assert db.rows(t) == []
    db.insert(t, [("row", "0")])
    up = servers(queues=[f"name={t};dbmode=1"], db_url=db.url).start()
    assert not fallback.exists()
    assert up.fetch_all(t) == [("row", "0"), *ITEMS]  # the table's rows, then the file's
    assert up.stop() == 0


def test_sigterm_under_load_saves_every_acknowledged_item(servers, db):
    t = db.create()
    s = servers(queues=[f"name={t};dbmode=1"], db_url=db.url, workers=2).start()
    acked: list[str] = []
    stop = threading.Event()

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            key = f"c{n}-{i}"
            i += 1
            try:
                conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
                body = {"jsonrpc": "2.0", "method": "mq_add", "id": 1,
                        "params": {"name": t, "key": key, "value": "v"}}
                conn.request("POST", "/mi", json.dumps(body),
                             {"Content-Type": "application/json"})
                reply = json.loads(conn.getresponse().read())
                conn.close()
            except (OSError, http.client.HTTPException, ValueError):
                return  # the server is going away
            if reply.get("result") == "OK":
                acked.append(key)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    wait_for(lambda: len(acked) >= 200, 10, "the clients to get going")
    s.proc.send_signal(signal.SIGTERM)
    code = s.proc.wait(15)  # "within a few seconds"; bounded, not timed
    stop.set()
    for th in threads:
        th.join(10)
    assert code == 0, s.stderr()
    saved = [k for k, _ in db.rows(t)]
    assert len(saved) == len(set(saved))
    assert set(acked) <= set(saved)


def test_a_second_signal_during_shutdown_does_not_spoil_the_save(servers, db, short_tmp):
    """A slow consumer handler holds the shutdown open while more signals arrive."""
    t = db.create()
    started = short_tmp / "started"
    handler = f"sh -c 'touch {started}; sleep 1'"
    s = servers(queues=[f"name={t};dbmode=1", "name=jobs"], db_url=db.url,
                consumers=[{"queue": "jobs", "handler": handler}]).start()
    for key, value in ITEMS:
        s.add(t, key, value)
    s.add("jobs", "j", "1")
    wait_for(started.exists, 10, "the consumer to run its handler")
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)  # let the shutdown begin (not a timing assertion)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
        if s.proc.poll() is None:
            s.proc.send_signal(sig)
    assert s.proc.wait(15) == 0, s.stderr()
    assert db.rows(t) == ITEMS


def test_the_log_says_where_the_items_really_went(servers, db, short_tmp):
    """A save that fell back says "written to the fallback file" (never "saved"), and the
    load that takes them back says so (not "loaded from the database")."""
    t = db.create()
    down = servers(queues=[f"name={t};dbmode=2"], db_url=closed_port_mysql_url()).start()
    for key, value in ITEMS:
        down.add(t, key, value)
    assert down.stop() == 0
    fallback = short_tmp / f"{t}.fallback.jsonl"
    err = down.stderr()
    assert f"queue '{t}': 5 item(s) written to the fallback file {fallback}" in err, err
    assert "item(s) saved" not in err
    db.insert(t, [("row", "0")])
    up = servers(queues=[f"name={t};dbmode=1"], db_url=db.url).start()
    err = up.stderr()
    assert f"queue '{t}': 1 item(s) loaded from the database" in err, err
    assert f"queue '{t}': 5 item(s) taken back from the fallback file {fallback}" in err
    assert up.stop() == 0
    assert f"queue '{t}': 6 item(s) saved to the database" in up.stderr()
