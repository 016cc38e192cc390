"""hybrid.executor: the same results in order from every executor, a raising task kept and named, a
killed worker's task retried (local pool and a local 2-CPU Ray cluster), retries bounded, options checked;
hybrid.cache.claim: two processes racing on one entry leave one build and one valid entry."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from har.errors import BadOptionError
from hybrid.cache import StageCache
from hybrid.executor import ExecutorConfig, Task, TaskFailed, raise_failures, run_tasks

TASKS = [Task("t", f"n{i}", i, 0, {"x": i}) for i in range(5)]


def square_plus(task: Task, k: int) -> int:
    if task.fold == 3:
        raise ValueError(f"bad fold {task.fold}\nsecond line")
    return task.payload["x"] ** 2 + k


def die_once(task: Task, marker_dir: str) -> int:
    """The first attempt at task 1 kills its own worker process (SIGKILL: nothing to catch)."""
    marker = Path(marker_dir) / f"attempt-{task.fold}-{os.getpid()}"
    marker.write_text("")
    if task.fold == 1 and len(list(Path(marker_dir).glob("attempt-1-*"))) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return task.fold


def always_die(task: Task) -> int:
    os.kill(os.getpid(), signal.SIGKILL)


def slow_pid(task: Task, pid_dir: str) -> int:
    """Writes its worker's pid (one file per attempt) and works long enough to be killed mid-task."""
    (Path(pid_dir) / f"{task.fold}-{os.getpid()}.pid").write_text(str(os.getpid()))
    time.sleep(3.0 if task.fold == 0 else 0.2)
    return task.fold * 10


def _expected():
    return [(True, i * i + 7, None) if i != 3 else (False, None, "ValueError: bad fold 3") for i in range(5)]


@pytest.mark.parametrize("cfg", [ExecutorConfig(), ExecutorConfig(workers=2)], ids=["inline", "pool"])
def test_local_results_in_order_with_errors_kept_and_named(cfg):
    results = run_tasks(square_plus, TASKS, cfg, 7, progress=False)
    assert [(r.ok, r.value, r.error) for r in results] == _expected()
    assert [r.task for r in results] == TASKS
    with pytest.raises(TaskFailed, match=r"1 of 5 task\(s\) failed: t n3 fold 3 seed 0: ValueError: bad fold 3"):
        raise_failures(results)


def test_pool_retries_the_task_of_a_killed_worker(tmp_path):
    results = run_tasks(die_once, TASKS, ExecutorConfig(workers=2), str(tmp_path), progress=False)
    assert [(r.ok, r.value) for r in results] == [(True, i) for i in range(5)]
    assert len(list(tmp_path.glob("attempt-1-*"))) >= 2  # killed once, run again in a new process
    assert results[1].attempts >= 2


def test_pool_gives_up_after_max_retries():
    results = run_tasks(always_die, TASKS[:2], ExecutorConfig(workers=2, max_retries=1), progress=False)
    assert [r.ok for r in results] == [False, False]
    assert all("worker died 2 time(s)" in r.error for r in results)


@pytest.mark.parametrize("bad", [dict(kind="dask"), dict(workers=0), dict(max_retries=-1),
                                 dict(ray_address="auto")])
def test_bad_executor_options_raise(bad):
    with pytest.raises(BadOptionError):
        ExecutorConfig(**bad)


@pytest.fixture(scope="module")
def local_ray():
    import ray  # the "distributed" extra, installed by `make venv`
    # the workers import this test module's task functions by name, as `hybrid.executor` gives a local Ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parent)}})
    yield ray
    ray.shutdown()


def test_ray_gives_the_local_results(local_ray):
    cfg = ExecutorConfig("ray", workers=2)
    got = run_tasks(square_plus, TASKS, cfg, 7, progress=False)
    assert [(r.ok, r.value, r.error) for r in got] == _expected()


def test_ray_retries_a_task_whose_worker_is_killed_mid_task(local_ray, tmp_path):
    killed: list[int] = []

    def killer():  # the worker running task 0 is killed from outside while the task sleeps
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            pids = list(tmp_path.glob("0-*.pid"))
            if pids:
                pid = int(pids[0].read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)

    t = threading.Thread(target=killer)
    t.start()
    results = run_tasks(slow_pid, TASKS[:3], ExecutorConfig("ray", workers=2, max_retries=2), str(tmp_path),
                        progress=False)
    t.join()
    assert killed, "the task never started"
    assert [(r.ok, r.value) for r in results] == [(True, 0), (True, 10), (True, 20)]
    attempts = sorted(p.name for p in tmp_path.glob("0-*.pid"))
    assert len(attempts) == 2 and f"0-{killed[0]}.pid" in attempts  # the killed attempt, then the retry


# -- the stage cache under concurrent workers ---------------------------------------------------------

def _race(root: str, key: str, log: str, barrier) -> tuple[str, float]:
    """One racer: meets the other at the barrier, then builds the entry unless it finds it finished;
    returns what it did and how long it waited for the lock."""
    cache = StageCache(root)
    barrier.wait()
    t = time.perf_counter()
    with cache.claim(key):
        waited = time.perf_counter() - t
        if cache.done(key) is None:
            d = cache.dir(key)
            with open(log, "a") as fh:
                fh.write(f"{os.getpid()}\n")
            for i in range(5):  # a slow build of several files: a racer entering now would tear it
                (d / f"part{i}.txt").write_text(f"{os.getpid()}")
                time.sleep(0.1)
            cache.finish(key, {"builder": os.getpid()})
            return "built", waited
    return "loaded", waited


def test_two_workers_racing_on_one_cache_entry_leave_one_valid_entry(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    log = tmp_path / "builds.log"
    with ctx.Manager() as manager, ctx.Pool(2) as pool:
        barrier = manager.Barrier(2)
        outcomes = dict(pool.starmap(_race, [(str(tmp_path / "cache"), "k1", str(log), barrier)] * 2))
    assert sorted(outcomes) == ["built", "loaded"]
    assert outcomes["loaded"] >= 0.4  # it reached the lock with the builder and waited out its 0.5 s build
    builders = log.read_text().split()
    assert len(builders) == 1
    meta = StageCache(tmp_path / "cache").done("k1")
    assert meta == {"builder": int(builders[0])}
    d = tmp_path / "cache" / "stages" / "k1"
    assert {p.read_text() for p in d.glob("part*.txt")} == {builders[0]}  # every file from the one builder
    assert not [p for p in d.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    assert json.loads((d / "stage.json").read_text()) == meta


def test_pool_charges_only_the_tasks_in_flight_when_a_worker_dies(tmp_path):
    """One task kills its worker every time; the healthy tasks, in flight beside it or queued, complete."""
    tasks = [Task("t", "bad", 0, 0)] + [Task("t", f"ok{i}", i, 0) for i in range(1, 7)]
    results = run_tasks(kill_first_else_pid, tasks, ExecutorConfig(workers=2, max_retries=1), str(tmp_path),
                        progress=False)
    assert not results[0].ok and "worker died 2 time(s)" in results[0].error
    assert [r.ok for r in results[1:]] == [True] * 6 and [r.value for r in results[1:]] == list(range(1, 7))
    assert results[0].attempts >= 2  # the deaths that counted: each with the task alone in its pool


def kill_first_else_pid(task: Task, pid_dir: str) -> int:
    if task.fold == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.3)
    return task.fold


def test_a_runner_without_the_task_trainer_refuses_executor_settings(tmp_path):
    from hybrid.runner import Runner, RunSettings
    for settings in (RunSettings(out=tmp_path, workers=2), RunSettings(out=tmp_path, executor="ray"),
                     RunSettings(out=tmp_path, seeds=(0, 1))):
        with pytest.raises(BadOptionError, match="run through hybrid.run"):
            Runner(settings)
    Runner(RunSettings(out=tmp_path, seeds=(3,)))  # one seed, inline: nothing to delegate
