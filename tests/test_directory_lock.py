"""One writer per dataset or run directory: a second build or trainer is refused, and a lock held by a
killed process is gone with it."""
import os
import signal
import subprocess
import sys

import pytest

import shards


def _holder(directory, fork_child: bool = False) -> subprocess.Popen:
    """Another process holding the lock (and, with ``fork_child``, a forked child that outlives it)."""
    code = (f"import os, shards, time\n"
            f"with shards.directory_lock({str(directory)!r}, 'the holder'):\n"
            f"    if {fork_child} and os.fork() == 0:\n"
            f"        time.sleep(30); os._exit(0)\n"
            f"    print('held', flush=True)\n"
            f"    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(shards.DirectoryInUse, match=rf"being written by the holder \(pid {proc.pid}\)"):
            with shards.directory_lock(tmp_path, "test"):
                pass
    finally:
        proc.kill()
        proc.wait()
    with shards.directory_lock(tmp_path, "test"):
        assert (tmp_path / shards.LOCK_NAME).read_text() == f"test (pid {os.getpid()})\n"
    assert (tmp_path / shards.LOCK_NAME).read_text() == ""  # released: the next run's files do not differ


def test_a_killed_holder_leaves_no_stale_lock_even_with_a_forked_child_alive(tmp_path):
    proc = _holder(tmp_path, fork_child=True)  # like the build's encoding workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with shards.directory_lock(tmp_path, "test"):
        pass


@pytest.mark.parametrize("cmd", [["-m", "preprocess", "--out", "{d}", "--vocab-size", "300"],
                                 ["-m", "train", "--data", "{data}", "--out", "{d}"]])
def test_the_commands_refuse_a_directory_in_use(tmp_path, tiny_dataset, cmd):
    d = tmp_path / "busy"
    d.mkdir()
    args = [a.format(d=d, data=tiny_dataset) for a in cmd]
    with shards.directory_lock(d, "the test"):
        r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert f"{d} is being written by the test (pid {os.getpid()})" in r.stderr
    assert "Traceback" not in r.stderr
