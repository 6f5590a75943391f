"""The state directory (fallback files) against another local user: a directory that user
made or can write is refused at start with one line, and nothing planted is loaded or
written through (the attacker is a real unprivileged user: tests/attacker.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.attacker import attacker, shared_tmp  # noqa: F401 - fixtures

PLANTED = '{"key": "planted", "value": "by another user"}\n'


def _refused(server) -> str:
    proc = server.launch()
    try:
        code = proc.wait(20)
    except subprocess.TimeoutExpired:
        server.kill()
        raise AssertionError("the server started") from None
    err = server.stderr()
    assert code == 1, err
    lines = [line for line in err.splitlines() if " ERROR: " in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_a_state_dir_another_user_made_first_is_refused(servers, db, attacker, shared_tmp):  # noqa: F811
    """The attacker creates the configured state directory first, world-writable, with a
    fallback file for the queue: the server refuses to start and loads none of it."""
    t = db.create()
    state = Path(shared_tmp, "state")
    attacker.python(f"import os; os.mkdir({str(state)!r}); os.chmod({str(state)!r}, 0o777)\n"
                    f"open({str(state / (t + '.fallback.jsonl'))!r}, 'w').write({PLANTED!r})")
    s = servers(queues=[f"name={t};dbmode=1"], db_url=db.url,
                extra={"state_dir": str(state)})
    line = _refused(s)
    assert line.endswith(f"state directory {state} is not safe: it is owned by uid "
                         f"{attacker.uid}, not by this server's uid 0"), line
    assert db.rows(t) == []


def test_the_default_state_dir_in_a_shared_directory_cannot_be_planted(servers, attacker,  # noqa: F811
                                                                       shared_tmp, short_tmp):  # noqa: F811
    """SQLite in a sticky shared directory (as /var/tmp): the state directory is its
    mqueue-mi subdirectory; an attacker who makes it first with a symbolic link to a
    root file in it gets a refusal at start, and the root file is untouched."""
    victim = short_tmp / "victim"
    victim.write_text("root's data\n")
    os.chmod(short_tmp, 0o711)  # the attacker may reach the victim by path, not list it
    planted = Path(shared_tmp, "mqueue-mi")
    attacker.python(f"import os; os.mkdir({str(planted)!r}, 0o755)\n"
                    f"os.symlink({str(victim)!r}, {str(planted / 'q.fallback.jsonl')!r})")
    s = servers(queues=["name=q;dbmode=1"], db_url=f"sqlite://{shared_tmp}/q.db",
                pid_file=False)
    line = _refused(s)
    assert f"state directory {planted} is not safe: it is owned by uid {attacker.uid}" \
        in line, line
    assert victim.read_text() == "root's data\n"


def test_a_state_dir_writable_by_others_is_refused(servers, db, short_tmp):
    state = short_tmp / "state"
    state.mkdir()
    os.chmod(state, 0o777)
    s = servers(queues=[f"name={db.create()};dbmode=2"], db_url=db.url,
                extra={"state_dir": str(state)})
    line = _refused(s)
    assert line.endswith(f"state directory {state} is not safe: it is writable by its group "
                         "or others (mode 0777; make it 0700)"), line


def test_a_missing_state_dir_is_made_private_at_start(servers, db, short_tmp):
    state = short_tmp / "new" / "state"
    s = servers(queues=[f"name={db.create()};dbmode=1"], db_url=db.url,
                extra={"state_dir": str(state)}).start()
    st = state.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (os.geteuid(), 0o700)
    assert s.stop() == 0
