"""One writer per folder: a second process refuses naming the holder; a dead holder's lock does not stay stuck."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from gte_model.core import lock
from gte_model.core.errors import UserError
from gte_model.core.lock import HOST, hold, lock_path

HOLDER = """
import sys, time
from gte_model.core.lock import hold
with hold(sys.argv[1], "out_dir"):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def other_holder(tmp_path):
    """A live process of this host holding tmp_path/out's lock."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def write_lock(folder, **info) -> None:
    lock_path(folder).parent.mkdir(parents=True, exist_ok=True)
    lock_path(folder).write_text(json.dumps(info))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_process_is_refused_naming_the_holder(tmp_path, other_holder):
    with pytest.raises(UserError, match=rf"out_dir=.*out: in use by gte process {other_holder.pid}@{HOST} "
                                        r"\(running since .*\); wait for it to finish"):
        with hold(tmp_path / "out", "out_dir"):
            pytest.fail("two holders at once")


def test_a_crashed_holders_lock_is_taken_over(tmp_path, other_holder):
    other_holder.kill()  # SIGKILL: no chance to remove its lock
    other_holder.wait()
    assert lock_path(tmp_path / "out").is_file()
    with hold(tmp_path / "out", "out_dir") as path:
        assert json.loads(path.read_text())["holder"] == f"{os.getpid()}@{HOST}"
    assert not path.exists()  # released: removed


def test_a_lock_of_a_dead_pid_on_this_host_is_stale(tmp_path):
    write_lock(tmp_path / "out", holder=f"1@{HOST}", pid=dead_pid(), host=HOST, started=time.time())
    with hold(tmp_path / "out", "out_dir"):
        pass


def test_another_hosts_lock_counts_while_its_heartbeat_is_fresh(tmp_path):
    # On a shared file system another node's pid means nothing here: only the file's age tells a dead holder.
    write_lock(tmp_path / "out", holder="4242@node-7", pid=4242, host="node-7", started=time.time())
    with pytest.raises(UserError, match=r"in use by gte process 4242@node-7"):
        with hold(tmp_path / "out", "out_dir"):
            pass
    old = time.time() - lock.STALE_S - 5
    os.utime(lock_path(tmp_path / "out"), (old, old))  # no heartbeat for longer than STALE_S
    with hold(tmp_path / "out", "out_dir"):
        pass


def test_the_holder_touches_its_lock_while_it_holds_it(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.05)
    with hold(tmp_path / "out", "out_dir") as path:
        old = time.time() - 1000
        os.utime(path, (old, old))
        time.sleep(0.3)
        assert time.time() - path.stat().st_mtime < 10


def test_a_half_written_lock_is_judged_by_its_age(tmp_path):
    lock_path(tmp_path / "out").write_text("")  # a holder killed between creating and writing it
    with pytest.raises(UserError, match=r"in use by gte process \?"):
        with hold(tmp_path / "out", "out_dir"):
            pass
    old = time.time() - lock.STALE_S - 5
    os.utime(lock_path(tmp_path / "out"), (old, old))
    with hold(tmp_path / "out", "out_dir"):
        pass


def test_holding_is_reentrant_within_a_process(tmp_path):
    with hold(tmp_path / "out", "out_dir") as path, hold(tmp_path / "out", "out_dir"):
        assert path.is_file()
    assert not path.exists()
