"""A server that dies (kill -9 of the supervisor) loses nothing: the next start with the
same configuration adopts the arena it left (docs/persistence.md, "What survives what")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mi_server.engine import Arena, QueueSpec
from mi_server.engine.shm.layout import H_VERSION
from tests.attacker import attacker, shared_tmp  # noqa: F401 - fixtures
from tests.serverproc import ROOT, alive, children_of, shm_exists, wait_for

RECOVERED = "recovered {n} item(s) in {m} queue(s) from the arena of a server that died (pid {p})"


def _arenas_of(server) -> list[str]:
    return sorted(e for e in os.listdir("/dev/shm") if e.startswith(server.shm_name))


def _kill_supervisor(server) -> None:
    """kill -9 of the supervisor alone (as the OOM killer does); its children stop on their
    own (parent-death signal) and are waited for, so the port and FIFO are free again."""
    pid = server.proc.pid
    children = children_of(pid)
    os.kill(pid, signal.SIGKILL)
    server.proc.wait(20)
    wait_for(lambda: not any(alive(c) for c in children), 20, "the dead server's children")


def test_kill_9_of_the_supervisor_loses_no_acknowledged_item(servers, db):
    """The issue's whole story: a dbmode 1 queue and a plain queue, items added over HTTP,
    kill -9, the same configuration started again: every item back, in order, the
    recovery line logged, and no arena left under /dev/shm after a clean stop."""
    t = db.create()
    queues = [f"name={t};dbmode=1", "name=plain;size=0"]
    db.insert(t, [("row1", "from the table")])
    s = servers(queues=queues, db_url=db.url).start()
    dbq = [("row1", "from the table")] + [(f"d{i}", f"dbmode item {i}") for i in range(20)]
    plain = [(f"p{i}", f"plain item {i} \u00e9\U0001F600") for i in range(30)]
    for key, value in dbq[1:]:
        s.add(t, key, value)
    for key, value in plain:
        s.add("plain", key, value)
    dead_pid = s.proc.pid
    _kill_supervisor(s)
    assert shm_exists(s)  # the arena survived its server
    assert db.rows(t) == []  # the row was deleted when it was loaded

    db.insert(t, [("row2", "added to the table meanwhile")])
    s2 = servers(queues=queues, db_url=db.url).start()
    assert s2.shm_name == s.shm_name
    err = s2.stderr()
    assert RECOVERED.format(n=len(dbq) + len(plain), m=2, p=dead_pid) in err, err
    # the adopted items first, the table's rows after them
    assert s2.fetch_all(t) == dbq + [("row2", "added to the table meanwhile")]
    assert s2.fetch_all("plain") == plain
    s2.add("plain", "after", "the restart")
    assert s2.stop() == 0
    assert _arenas_of(s2) == []  # no orphan: not the old arena, not a copy
    assert "Traceback" not in s2.stderr()


def test_the_new_configuration_applies_to_adopted_items(servers, short_tmp):
    """size and addmode of the configuration started now apply as on a load; items of a
    queue no longer defined go to its fallback file, which a later dbmode load takes back."""
    state = short_tmp / "state"
    s = servers(queues=["name=a", "name=gone", "name=keyed"],
                extra={"state_dir": str(state)}).start()
    for i in range(6):
        s.add("a", f"k{i}", f"v{i}")
    s.add("gone", "g1", "x")
    s.add("gone", "g2", "y")
    for key, value in [("same", "old"), ("other", "1"), ("same", "new")]:
        s.add("keyed", key, value)
    _kill_supervisor(s)

    s2 = servers(queues=["name=a;size=4", "name=keyed;addmode=2"],
                 extra={"state_dir": str(state)}).start()
    assert RECOVERED.format(n=11, m=3, p=s.proc.pid) in s2.stderr()
    assert s2.fetch_all("a") == [(f"k{i}", f"v{i}") for i in range(2, 6)]  # size 4 applies
    assert s2.fetch_all("keyed") == [("other", "1"), ("same", "new")]  # addmode 2 applies
    fallback = state / "gone.fallback.jsonl"
    assert fallback.read_text().splitlines() == ['{"key": "g1", "value": "x"}',
                                                  '{"key": "g2", "value": "y"}']
    assert "queue 'gone' is no longer defined: its 2 adopted item(s) written to the " \
           f"fallback file {fallback}" in s2.stderr()
    assert s2.stop() == 0


def test_a_live_server_s_arena_is_never_adopted(servers):
    s = servers(queues=["name=q"]).start()
    s.add("q", "k", "v")
    twin = servers(queues=["name=q"], fifo=False, pid_file=False,
                   extra={"shm_name": s.shm_name})
    proc = twin.launch()
    assert proc.wait(20) == 1
    assert f"/dev/shm/{s.shm_name} is in use by a running server (pid {s.proc.pid})" \
        in twin.stderr()
    assert s.fetch_all("q") == [("k", "v")]  # untouched
    assert s.stop() == 0


def test_an_arena_of_another_layout_is_renamed_aside_not_deleted(servers, short_tmp):
    s = servers(queues=["name=q"])
    name = s.shm_name
    old = Arena.create(name, 1 << 20, [QueueSpec("q")])
    old.add("q", "k", "v")
    old._w[H_VERSION] = 2  # the previous layout
    old.close()
    try:
        s.start()
        err = s.stderr()
        assert f"/dev/shm/{name} cannot be adopted: its layout is version 2" in err
        aside = [e for e in os.listdir("/dev/shm") if e.startswith(f"{name}.unadopted-")]
        assert len(aside) == 1 and f"renamed to /dev/shm/{aside[0]}" in err
        assert Path("/dev/shm", aside[0]).stat().st_size == 1 << 20
        assert s.fetch_all("q") == []
        assert s.stop() == 0
    finally:
        for e in os.listdir("/dev/shm"):
            if e.startswith(f"{name}.unadopted-"):
                os.unlink(f"/dev/shm/{e}")


def test_a_producer_attached_to_a_stopped_server_s_arena_is_told(servers):
    """Item 8 end to end: a local producer attached by name; the server stops cleanly; the
    producer's next mq_add raises ArenaClosed instead of returning True into a lost arena."""
    s = servers(queues=["name=q"]).start()
    script = (
        "import sys\n"
        "from mi_server.engine import Arena, ArenaClosed\n"
        f"a = Arena.attach({s.shm_name!r})\n"
        "print(a.mq_add('q', 'k', 'before'), flush=True)\n"
        "sys.stdin.readline()\n"
        "try:\n"
        "    print(a.mq_add('q', 'k', 'after'))\n"
        "except ArenaClosed:\n"
        "    print('ArenaClosed')\n"
    )
    producer = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert producer.stdout.readline().strip() == "True"
        assert s.fetch_all("q") == [("k", "before")]
        assert s.stop() == 0
        out, _ = producer.communicate("\n", timeout=20)
    finally:
        producer.kill()
        producer.wait()
    assert out.strip() == "ArenaClosed"


@pytest.fixture
def db(request, short_tmp, mysql_url):
    from tests.serverproc import Db

    url = f"sqlite://{short_tmp}/queues.db" if request.param == "sqlite" else mysql_url
    database = Db(url)
    yield database
    database.drop_all()


def pytest_generate_tests(metafunc):
    if "db" in metafunc.fixturenames:
        metafunc.parametrize("db", ["sqlite", "mysql"], indirect=True)


def _arena_bytes(queues, items) -> bytes:
    """A real arena's bytes, owned by a process that is gone (pid 0: no owner)."""
    from mi_server.engine.shm.layout import H_OWNER_PID, H_OWNER_START
    from tests.engine.conftest import unique_name

    arena = Arena.create(unique_name(), 1 << 20, queues)
    try:
        for queue, key, value in items:
            arena.add(queue, key, value)
        arena._w[H_OWNER_PID] = arena._w[H_OWNER_START] = 0
        return bytes(arena._mm)
    finally:
        arena.unlink()
        arena.close()


def test_an_arena_planted_by_another_user_is_not_adopted(servers, attacker, shared_tmp):  # noqa: F811
    """The default name is predictable: another local user may put an arena full of items
    of their choosing there first. The server refuses to start (one line) rather than
    serve them, and leaves the file alone."""
    s = servers(queues=["name=q"])
    crafted = Path(shared_tmp, "crafted")
    crafted.write_bytes(_arena_bytes([QueueSpec("q")], [("q", "planted", "by the attacker")]))
    crafted.chmod(0o644)
    target = f"/dev/shm/{s.shm_name}"
    attacker.python(f"import shutil; shutil.copyfile({str(crafted)!r}, {target!r})")
    try:
        proc = s.launch()
        assert proc.wait(20) == 1
        errors = [line for line in s.stderr().splitlines() if " ERROR: " in line]
        assert len(errors) == 1, s.stderr()
        assert f"{target} is not an arena of this server's user (uid 0; the file: uid " \
               f"{attacker.uid}" in errors[0]
        assert os.stat(target).st_uid == attacker.uid  # left alone
    finally:
        os.unlink(target)


def test_an_arena_failing_its_checks_is_renamed_aside(servers):
    from mi_server.engine.shm.layout import H_QTAB, Q_TAIL

    s = servers(queues=["name=q"])
    name = s.shm_name
    data = bytearray(_arena_bytes([QueueSpec("q")], [("q", "a", "1"), ("q", "b", "2")]))
    qtab = int.from_bytes(data[H_QTAB * 8:H_QTAB * 8 + 8], "little")
    at = (qtab + Q_TAIL) * 8
    data[at:at + 8] = (0).to_bytes(8, "little")  # the tail no longer matches the list
    fd = os.open(f"/dev/shm/{name}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.write(fd, data)
    os.close(fd)
    try:
        s.start()
        err = s.stderr()
        assert f"/dev/shm/{name} cannot be adopted: it fails its consistency checks" in err
        assert "recovered" not in err
        aside = [e for e in os.listdir("/dev/shm") if e.startswith(f"{name}.unadopted-")]
        assert len(aside) == 1
        assert Path("/dev/shm", aside[0]).read_bytes() == bytes(data)  # untouched
        assert s.fetch_all("q") == []
        assert s.stop() == 0
    finally:
        for e in os.listdir("/dev/shm"):
            if e.startswith(f"{name}."):
                os.unlink(f"/dev/shm/{e}")


def test_a_closed_arena_left_behind_is_removed_and_an_old_copy_too(servers):
    """A clean stop closes the arena before removing it; one that died in between left a
    closed arena (its items saved already): removed, not adopted. A copy left by a server
    that died while adopting (<name>.new-<pid>) goes too."""
    s = servers(queues=["name=q"])
    name = s.shm_name
    old = Arena.create(name, 1 << 20, [QueueSpec("q")])
    old.add("q", "k", "saved at the stop")
    old.mark_closed()
    old.close()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    copy = Arena.create(f"{name}.new-{dead.stdout.strip()}", 1 << 20, [QueueSpec("q")])
    copy.close()
    s.start()
    err = s.stderr()
    assert "that stopped cleanly was still there: removed" in err, err
    assert f"removed /dev/shm/{name}.new-{dead.stdout.strip()}, an arena copy" in err
    assert s.fetch_all("q") == []
    assert s.stop() == 0
    assert _arenas_of(s) == []


def test_a_start_that_fails_after_adopting_keeps_the_items_for_the_next(servers, short_tmp):
    """Adopted, then set-up fails (here: a NULL key in the dbmode table): the arena is kept
    as adopted, and the next start adopts it: nothing lost, nothing twice."""
    import sqlite3

    db_file = short_tmp / "q.db"
    queues = ["name=dbq;dbmode=1", "name=plain"]
    s = servers(queues=queues, db_url=f"sqlite://{db_file}").start()
    for i in range(3):
        s.add("dbq", f"d{i}", "x")
        s.add("plain", f"p{i}", "y")
    _kill_supervisor(s)
    with sqlite3.connect(db_file) as db:  # a hand-made table that allows a NULL key
        db.execute('DROP TABLE "dbq"')
        db.execute('CREATE TABLE "dbq" (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT, '
                   'val TEXT)')
        db.execute('INSERT INTO "dbq" (key, val) VALUES (NULL, \'v\')')
    failing = servers(queues=queues, db_url=f"sqlite://{db_file}")
    proc = failing.launch()
    try:
        assert proc.wait(20) == 1
    except subprocess.TimeoutExpired:
        raise AssertionError(failing.stderr()) from None
    err = failing.stderr()
    assert "recovered 6 item(s) in 2 queue(s)" in err and "key is NULL" in err, err
    assert f"arena {s.shm_name} kept with its adopted items for the next start" in err
    with sqlite3.connect(db_file) as db:
        db.execute('UPDATE "dbq" SET key = \'row\'')
    s3 = servers(queues=queues, db_url=f"sqlite://{db_file}").start()
    assert "recovered 6 item(s) in 2 queue(s)" in s3.stderr().split(err)[-1]
    assert s3.fetch_all("plain") == [(f"p{i}", "y") for i in range(3)]
    assert s3.fetch_all("dbq") == [(f"d{i}", "x") for i in range(3)] + [("row", "v")]
    assert s3.stop() == 0
    assert _arenas_of(s3) == []


def test_two_servers_starting_at_once_never_adopt_the_same_arena(servers, short_tmp):
    """After a crash, two servers with the same shm_name start together: one adopts, the
    other refuses to start (one line); every item comes back exactly once."""
    from tests.serverproc import Server, free_port

    name = f"mqtest-twins-{os.getpid()}-{short_tmp.name}"
    s = servers(queues=["name=q"], extra={"shm_name": name}).start()
    items = [(f"k{i}", "v") for i in range(50)]
    for key, value in items:
        s.add("q", key, value)
    _kill_supervisor(s)
    twins = []
    for n in (1, 2):
        d = short_tmp / f"twin{n}"
        d.mkdir()
        twins.append(Server(d, free_port(), queues=["name=q"], extra={"shm_name": name}))
    try:
        procs = [t.launch() for t in twins]
        # the one that adopted keeps running; the other exits 1
        wait_for(lambda: sum(p.poll() == 1 for p in procs) == 1, 20, "one twin to refuse")
        winner = twins[[p.poll() for p in procs].index(None)]
        loser = twins[[p.poll() for p in procs].index(1)]
        wait_for(lambda: len(winner.ps()) == winner.expected_processes(), 20, "the winner")
        assert "recovered 50 item(s) in 1 queue(s)" in winner.stderr()
        assert "recovered" not in loser.stderr()
        errors = [line for line in loser.stderr().splitlines() if " ERROR: " in line]
        assert len(errors) == 1 and f"/dev/shm/{name} is in use by " in errors[0], errors
        assert winner.fetch_all("q") == items
        assert winner.stop() == 0
    finally:
        for t in twins:
            t.kill()
        for e in os.listdir("/dev/shm"):
            if e == name or e.startswith(f"{name}."):
                os.unlink(f"/dev/shm/{e}")


def test_items_no_save_could_take_stay_in_the_arena_for_the_next_start(servers, short_tmp):
    """A clean stop whose save fails twice (database down, fallback file refused: the
    state directory became writable by others) keeps the arena with that queue's items
    alone; the next start adopts them."""
    from tests.serverproc import closed_port_mysql_url

    state = short_tmp / "state"
    state.mkdir(mode=0o700)
    queues = ["name=saved;dbmode=2", "name=plain"]
    url = closed_port_mysql_url()
    s = servers(queues=queues, db_url=url, extra={"state_dir": str(state)}).start()
    for i in range(4):
        s.add("saved", f"k{i}", "v")
    s.add("plain", "p", "dropped at a clean stop, as always")
    state.chmod(0o777)
    assert s.stop() == 1
    err = s.stderr()
    assert "queue 'saved': 4 item(s) NOT SAVED" in err, err
    assert f"arena {s.shm_name} kept in /dev/shm with the items of queue(s) 'saved'" in err
    assert shm_exists(s)
    state.chmod(0o700)
    s2 = servers(queues=queues, db_url=url, extra={"state_dir": str(state)}).start()
    assert RECOVERED.format(n=4, m=1, p=s.proc.pid) in s2.stderr()
    assert s2.fetch_all("saved") == [(f"k{i}", "v") for i in range(4)]
    assert s2.fetch_all("plain") == []
    assert s2.stop() == 0  # nothing left to save: the fallback file is not needed
    assert _arenas_of(s2) == []
