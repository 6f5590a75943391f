"""The datagram listener's compiled fast path is built and can be turned off (tests of what
it does: test_compiled_fast_path.py, which skips without it)."""

from __future__ import annotations

from mi_server.datagram import fastpath


def test_the_extension_is_built():
    # CI and the README's install have a C compiler: a silent fallback would leave the
    # compiled path untested and the datagram CPU figures unmet
    assert fastpath.built(), ("mi_server.datagram._fastpath is missing: reinstall with a C "
                              "compiler (pip install -e '.[test]') and look for its build "
                              "error")


def test_the_environment_turns_it_off(monkeypatch):
    monkeypatch.setenv(fastpath.ENV, "0")
    assert fastpath.load() is None
    monkeypatch.setenv(fastpath.ENV, "1")
    assert fastpath.load() is fastpath._serve
