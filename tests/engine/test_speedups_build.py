"""The engine's compiled part is built and can be turned off (tests of what it does: the
engine tests, each run with and without it, and test_crash.py's compiled-pop test)."""

from __future__ import annotations

from mi_server.engine import Arena, QueueSpec
from mi_server.engine.shm import speedups
from mi_server.engine.shm.arena import compiled_pop_plain

from .conftest import unique_name


def test_the_extension_is_built():
    # CI and the README's install have a C compiler: a silent fallback would leave the
    # mutex and the compiled pop untested (their tests skip) and the figures unmet
    assert speedups.built() is not None, (
        "mi_server.engine.shm._speedups is missing: reinstall with a C compiler "
        "(pip install -e '.[test]') and look for its build error")


def test_the_environment_turns_it_off_for_new_arenas(monkeypatch):
    monkeypatch.setenv(speedups.ENV, "0")
    assert speedups.load() is None
    assert compiled_pop_plain() is None
    arena = Arena.create(unique_name(), 1 << 20, [QueueSpec("q")])
    try:
        assert arena.lock_kind == "flock"
        assert "_pop_plain" not in vars(arena)
    finally:
        arena.unlink()
        arena.close()
    monkeypatch.setenv(speedups.ENV, "1")
    assert speedups.load() is speedups.built()
    assert compiled_pop_plain() is speedups.built().pop_plain


def test_the_c_code_uses_the_layouts_word_indices():
    from mi_server.engine.shm import layout

    assert speedups.built().LAYOUT == {name: getattr(layout, name)
                                       for name in speedups.built().LAYOUT}
