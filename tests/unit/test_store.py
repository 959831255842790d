"""The store: atomic swap, nothing half-written on failure, stale staging cleanup, locks."""

import fcntl
import multiprocessing
import os

import pytest

from socker_lib.reference import parse
from socker_lib.store import Store, changed_paths, snapshot


def make_image(store, ref, content):
    with store.staging() as st:
        (st.rootfs / "f").write_text(content)
        (st.meta / "image.json").write_text("{}")
        store.commit(ref, st)


def test_commit_replaces_and_leaves_no_staging(tmp_path):
    store, ref = Store(tmp_path), parse("127.0.0.1:5000/a/b:1")
    make_image(store, ref, "one")
    make_image(store, ref, "two")
    assert (tmp_path / "images/127.0.0.1:5000/a/b/1/f").read_text() == "two"
    assert (tmp_path / "meta/127.0.0.1:5000/a/b/1/image.json").exists()
    assert list((tmp_path / "tmp").iterdir()) == []
    assert os.listdir(tmp_path / "images/127.0.0.1:5000/a/b/1") == ["f"]


def test_failure_keeps_previous_image(tmp_path):
    store, ref = Store(tmp_path), parse("a/b:1")
    make_image(store, ref, "good")
    with pytest.raises(RuntimeError), store.staging() as st:
        (st.rootfs / "f").write_text("half")
        raise RuntimeError("boom")
    assert (store.image_dir(ref) / "f").read_text() == "good"
    assert list((tmp_path / "tmp").iterdir()) == []


def _hold_staging(home, ready, release):
    store = Store(home)
    with store.staging():
        ready.set()
        release.wait(10)


def test_cleanup_removes_only_dead_staging(tmp_path):
    store = Store(tmp_path)
    dead = tmp_path / "tmp" / "pull-dead"
    (dead / "rootfs").mkdir(parents=True)
    (dead / ".lock").write_text("")
    young = tmp_path / "tmp" / "pull-just-made"  # not locked yet, but maybe about to be: kept
    young.mkdir()
    os.utime(dead, (0, 0))
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_staging, args=(tmp_path, ready, release))
    p.start()
    assert ready.wait(10)
    for d in (tmp_path / "tmp").iterdir():
        if d.name != "pull-just-made":
            os.utime(d, (0, 0))  # old enough to be looked at: the live one is kept by its lock
    store.cleanup_stale()
    remaining = os.listdir(tmp_path / "tmp")
    release.set()
    p.join(10)
    assert "pull-dead" not in remaining and "pull-just-made" in remaining and len(remaining) == 2


def test_lock_is_exclusive(tmp_path):
    store, ref = Store(tmp_path), parse("a/b:1")
    waited = []
    with store.lock(ref):
        lockfile = next((tmp_path / "locks").iterdir())
        with open(lockfile) as f:
            with pytest.raises(BlockingIOError):
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with store.lock(ref, on_wait=lambda: waited.append(1)):
        pass
    assert waited == []


def test_changed_paths_detects_edits(tmp_path):
    root = tmp_path / "r"
    (root / "d").mkdir(parents=True)
    (root / "d/a").write_text("a")
    (root / "b").write_text("b")
    snap = snapshot(root)
    assert changed_paths(root, snap) == ([], [], [])
    (root / "d/a").write_text("changed!")
    (root / "b").unlink()
    (root / "c").write_text("c")
    added, removed, modified = changed_paths(root, snap)
    assert added == ["c"] and removed == ["b"] and modified == ["d/a"]
