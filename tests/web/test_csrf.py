"""The page tokens: issued and checked statelessly, refused when forged or too old."""

from mi_server.web import csrf

SECRET = b"s" * 32


def test_a_fresh_token_is_valid():
    assert csrf.valid(SECRET, csrf.issue(SECRET, now=1000.0), now=1000.0 + 5)


def test_a_token_of_another_secret_is_refused():
    assert not csrf.valid(SECRET, csrf.issue(b"t" * 32, now=1000.0), now=1000.0)


def test_an_old_token_or_one_from_the_future_is_refused():
    token = csrf.issue(SECRET, now=1000.0)
    assert not csrf.valid(SECRET, token, now=1000.0 + csrf.MAX_AGE + 1)
    assert not csrf.valid(SECRET, token, now=999.0)


def test_a_tampered_token_is_refused():
    issued, mac = csrf.issue(SECRET, now=1000.0).split(".")
    assert not csrf.valid(SECRET, f"{int(issued) + 1}.{mac}", now=1001.0)
    for bad in ("", ".", "abc", "1000.", "x.y"):
        assert not csrf.valid(SECRET, bad, now=1000.0)
