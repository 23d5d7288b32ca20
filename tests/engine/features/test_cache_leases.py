"""A feature-cache folder shared by two runs with the same features is deleted by the last one to finish: a run
takes a lease while it works (engine.features.cache.FeatureCache.lease), and ``remove`` leaves the folder to a
live lease holder. Caught by two workers running two jobs of one spec at once: the first deleted the cache while
the second linked its query index from it."""

import os
import socket
import subprocess
import sys

from engine.features.cache import LEASES, FeatureCache


def _cache(tmp_path) -> FeatureCache:
    cache = FeatureCache.open(tmp_path / "features", "k" * 24, {"what": "test"})
    (cache.folder / "ckpt-1").mkdir()
    (cache.folder / "ckpt-1" / "train-00000.safetensors").write_bytes(b"x")
    return cache


def test_a_live_holder_keeps_the_folder_and_the_last_one_deletes_it(tmp_path):
    cache = _cache(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        cache.lease()
        (cache.folder / LEASES / f"{socket.gethostname()}-{other.pid}").write_text("")  # a second run, alive
        cache.remove()
        assert (cache.folder / "ckpt-1" / "train-00000.safetensors").is_file()  # still in use
        assert not (cache.folder / LEASES / f"{socket.gethostname()}-{os.getpid()}").exists()  # ours is gone
    finally:
        other.kill()
        other.wait()
    cache.remove()  # the holder died (without releasing): nobody uses the folder any more
    assert not cache.folder.exists()


def test_a_lease_of_another_machine_counts_and_a_release_leaves_no_trace(tmp_path):
    cache = _cache(tmp_path)
    cache.lease()
    cache.release()
    assert not (cache.folder / LEASES).exists()  # released, and the empty lease folder with it
    (cache.folder / LEASES).mkdir()
    (cache.folder / LEASES / "some-other-host-123").write_text("")
    assert cache.in_use()
    cache.remove()
    assert cache.folder.is_dir()  # cannot tell whether that process lives: the folder stays
