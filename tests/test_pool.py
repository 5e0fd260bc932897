"""The worker pool survives crashes, reports the item that caused them, and enforces time limits."""

import os
import sys
import time

from aotwarm.pool import PoolOptions, Task, run_tasks


def run(tmp_path, ops, keep_going=True, timeout=60.0, jobs=2):
    results = {}
    opts = PoolOptions(mode="build", target_json="{}", jobs=jobs, env={**os.environ, "PYTHONPATH": os.getcwd()},
                       log_dir=tmp_path / "logs", item_timeout=timeout, keep_going=keep_going,
                       worker_module="tests.crash_worker", python=sys.executable)
    run_tasks([Task(f"item{i}-{op}", op, {}) for i, op in enumerate(ops)], opts, lambda r: results.__setitem__(r["id"], r))
    return results


def test_segfault_and_sigkill_fail_only_their_item(tmp_path):
    res = run(tmp_path, ["ok", "segv", "ok", "kill", "ok", "raise", "ok"])
    assert len(res) == 7
    assert res["item1-segv"]["ok"] is False and "signal SIGSEGV" in res["item1-segv"]["error"]
    assert "about to crash in the compiler" in res["item1-segv"]["error"]  # last log line is quoted
    assert res["item3-kill"]["ok"] is False and "SIGKILL" in res["item3-kill"]["error"]
    assert res["item5-raise"]["error"] == "ValueError: bad shape"
    assert all(res[k]["ok"] for k in res if k.endswith("-ok"))


def test_item_time_limit(tmp_path):
    start = time.monotonic()
    res = run(tmp_path, ["hang", "ok"], timeout=2.0)
    assert time.monotonic() - start < 30
    assert "time limit of 2 s" in res["item0-hang"]["error"] and res["item1-ok"]["ok"]


def test_without_keep_going_no_new_work_after_a_failure(tmp_path):
    res = run(tmp_path, ["raise"] + ["ok"] * 6, keep_going=False, jobs=1)
    assert res["item0-raise"]["ok"] is False
    assert len(res) == 1
