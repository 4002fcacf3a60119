"""The warm-up import thread: never fails a run, imports what it is told, joins cleanly."""

from __future__ import annotations

import sys

from pytest_hokusai import warmup


def test_preload_skips_absent_packages_and_reports_what_it_imported(monkeypatch):
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    done = warmup.preload(("no_such_package_hokusai_xyz", "colorsys", "colorsys"))
    assert done == ["colorsys"]
    assert "colorsys" in sys.modules


def test_preload_swallows_a_module_that_raises_on_import(tmp_path, monkeypatch):
    (tmp_path / "hokusai_broken_mod.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert warmup.preload(("hokusai_broken_mod",)) == []


def test_start_is_once_and_join_waits(monkeypatch):
    calls = []
    monkeypatch.setattr(warmup, "_thread", None)
    monkeypatch.setattr(warmup, "preload", lambda modules=warmup.WARM_MODULES, stop=None: calls.append(1))
    warmup.start()
    warmup.start()
    warmup.join()
    assert calls == [1]
    assert warmup._thread is not None and not warmup._thread.is_alive()
