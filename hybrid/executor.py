"""Where the trainings of a sweep run: `run_tasks(fn, tasks, cfg) -> list[TaskResult]`, one task per
(variant or grid point, fold, seed), on this machine (`local`) or on a Ray cluster (`ray`).

Steps of `run_tasks`:
1. `local` with one worker: the tasks run in this process, in order (the default `hybrid.run` behaviour,
   no pool to start). `local` with N > 1 workers: a `concurrent.futures.ProcessPoolExecutor` of N
   processes started with "spawn" (a forked child would inherit torch's thread pools and locks).
   `ray`: `ray.init(address=cfg.ray_address)` joins a cluster ("auto": the one `ray start` runs on this
   machine; "HOST:PORT": a remote head), or, without an address, starts a local Ray with `cfg.workers`
   CPUs; each task is `ray.remote(num_cpus=1, max_retries=cfg.max_retries)`.
2. Results arrive as tasks finish, each counted on one progress bar (`desc`, failures named in its
   postfix). A task that raises is not retried (a bug or bad data fails the same way again): its error is
   kept in its `TaskResult`. A task whose WORKER dies (killed, out of memory) is retried up to
   `cfg.max_retries` times: Ray does this itself (`max_retries` counts system failures only); the local
   pool, which breaks as a whole when a child dies, is rebuilt: the tasks that were in flight are re-run
   one at a time to find the one whose worker dies (only its deaths count), the rest resubmitted.
3. Results come back in the order of `tasks`, whatever the order they finished in.
Why tasks only train: a task's products go to the shared stage cache (`hybrid.cache`, locked per entry)
and the caller re-loads and measures them in one process afterwards, so timings and memory profiles
are never taken beside other trainings and a parallel run's tables equal a serial one's.
`fn` must be importable by name (a module-level function) and its arguments and results JSON-like: Ray
and the pool pickle them to ship them (task descriptions and metrics; weights never travel this way).
Limits: Ray's own scheduling decides which node runs what; every node must see the same cache path and
data directory, and have this package installed at the same version (`--ray-address` docs in README).
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from tqdm.auto import tqdm

from har.errors import BadOptionError, HarError

EXECUTORS = ("local", "ray")


class TaskFailed(HarError):
    """One or more tasks of a sweep failed; the message names them."""


@dataclass(frozen=True)
class ExecutorConfig:
    kind: str = "local"
    workers: int = 1
    ray_address: str | None = None  # None: start a local Ray with `workers` CPUs; "auto" or "HOST:PORT": join
    max_retries: int = 2  # re-runs of a task whose worker died

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise BadOptionError(f"unknown executor {self.kind!r}; choose one of {', '.join(EXECUTORS)}")
        if self.workers < 1 or self.max_retries < 0:
            raise BadOptionError(f"executor needs workers >= 1 and max_retries >= 0, got {self.workers}, "
                                 f"{self.max_retries}")
        if self.ray_address is not None and self.kind != "ray":
            raise BadOptionError("--ray-address needs --executor ray")

    @property
    def inline(self) -> bool:
        return self.kind == "local" and self.workers == 1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Task:
    kind: str  # what `fn` does with it, e.g. "baseline", "variant", "grid-point"
    name: str  # variant or grid point
    fold: int
    seed: int
    payload: dict = field(default_factory=dict)  # JSON-like: whatever else `fn` needs

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name} fold {self.fold} seed {self.seed}"


@dataclass
class TaskResult:
    task: Task
    ok: bool
    value: Any = None
    error: str | None = None
    attempts: int | None = 1  # None: Ray retried a dead worker's task by itself and does not say how often
    seconds: float = 0.0


def run_tasks(fn: Callable, tasks: list[Task], cfg: ExecutorConfig, *args, desc: str = "tasks",
              progress: bool = True, bar=None) -> list[TaskResult]:
    """`fn(task, *args)` for every task (module docstring); results in the order of `tasks`. `bar`: a tqdm
    bar to count on (several waves on one bar), else one of its own."""
    if not tasks:
        return []
    own = bar is None
    bar = tqdm(total=len(tasks), desc=desc, disable=not progress) if own else bar
    try:
        if cfg.inline:
            failed: list[str] = []
            return [_inline(fn, t, args, bar, failed) for t in tasks]
        runner = _run_ray if cfg.kind == "ray" else _run_pool
        return runner(fn, tasks, cfg, args, bar)
    finally:
        if own:
            bar.close()


def raise_failures(results: list[TaskResult]) -> None:
    bad = [r for r in results if not r.ok]
    if bad:
        raise TaskFailed(f"{len(bad)} of {len(results)} task(s) failed: " + "; ".join(
            f"{r.task.label}: {r.error}" for r in bad[:5]) + (" ..." if len(bad) > 5 else ""))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _note(bar, failed: list[str], r: TaskResult) -> TaskResult:
    if not r.ok:
        failed.append(r.task.label)
        bar.set_postfix_str("failed: " + ", ".join(failed[-3:]))
    bar.update(1)
    return r


def _timed(fn: Callable, task: Task, args: tuple) -> tuple[Any, float]:
    """Runs in the worker: the value and the task's own wall time."""
    t = time.perf_counter()
    return fn(task, *args), time.perf_counter() - t


def _inline(fn: Callable, task: Task, args: tuple, bar, failed: list[str] | None = None) -> TaskResult:
    try:
        value, s = _timed(fn, task, args)
        r = TaskResult(task, True, value, seconds=s)
    except Exception as exc:  # noqa: BLE001 -- kept per task, raised together by raise_failures
        r = TaskResult(task, False, error=_one_line(exc))
    return _note(bar, failed if failed is not None else [], r)


def _run_pool(fn: Callable, tasks: list[Task], cfg: ExecutorConfig, args: tuple, bar) -> list[TaskResult]:
    """At most `cfg.workers` tasks in flight. When a child dies the pool breaks and cannot say which task
    it held: the tasks in flight become suspects, each re-run alone in a pool of its own; a death there is
    that task's, and only such deaths count against `cfg.max_retries`."""
    import multiprocessing
    results: dict[int, TaskResult] = {}
    runs, deaths = [0] * len(tasks), [0] * len(tasks)
    failed: list[str] = []
    suspects: list[int] = []
    while len(results) < len(tasks):
        alone = bool(suspects)
        queue = [suspects.pop(0)] if alone else [i for i in range(len(tasks)) if i not in results]
        limit = 1 if alone else cfg.workers
        in_flight: dict = {}
        broken = False
        with ProcessPoolExecutor(max_workers=min(limit, len(queue)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            while (queue or in_flight) and not broken:
                try:
                    while queue and len(in_flight) < limit:
                        i = queue.pop(0)
                        runs[i] += 1
                        in_flight[pool.submit(_timed, fn, tasks[i], args)] = i
                except BrokenProcessPool:
                    broken = True
                    break
                done, _ = wait(set(in_flight), return_when=FIRST_COMPLETED)
                for fut in done:
                    i = in_flight.pop(fut)
                    try:
                        value, s = fut.result()
                        results[i] = _note(bar, failed, TaskResult(tasks[i], True, value, None, runs[i], s))
                    except BrokenProcessPool:
                        broken = True
                        in_flight[fut] = i
                    except Exception as exc:  # noqa: BLE001 -- the task raised: not retried
                        results[i] = _note(bar, failed, TaskResult(tasks[i], False, None, _one_line(exc), runs[i]))
            if broken:
                pool.shutdown(wait=True, cancel_futures=True)
        flying = sorted(set(in_flight.values())) if broken else []
        if len(flying) == 1:  # alone in flight: its death
            i = flying[0]
            deaths[i] += 1
            if deaths[i] > cfg.max_retries:
                results[i] = _note(bar, failed, TaskResult(tasks[i], False, None,
                                                           f"its worker died {deaths[i]} time(s)", runs[i]))
        else:
            suspects.extend(flying)
    return [results[i] for i in range(len(tasks))]


def _run_ray(fn: Callable, tasks: list[Task], cfg: ExecutorConfig, args: tuple, bar) -> list[TaskResult]:
    try:
        import ray
        from ray.exceptions import RayTaskError
    except ImportError as exc:  # pragma: no cover - exercised where ray is missing
        raise BadOptionError("--executor ray needs Ray: pip install -e '.[distributed]'") from exc
    started = not ray.is_initialized()
    if started:
        # a local Ray's workers see this process's sys.path, as the spawned pool's children do; a cluster's
        # nodes import what is installed there
        local = {"num_cpus": cfg.workers, "runtime_env": {"env_vars": {
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}}
        kwargs = {"address": cfg.ray_address} if cfg.ray_address else local
        try:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
        except Exception as exc:  # noqa: BLE001 -- no cluster at the address, ports taken, ...: one line
            where = f"join Ray at {cfg.ray_address!r}" if cfg.ray_address else "start a local Ray"
            raise BadOptionError(f"--executor ray: could not {where}: {_one_line(exc)}") from None
    try:
        remote = ray.remote(num_cpus=1, max_retries=cfg.max_retries, retry_exceptions=False)(_timed)
        refs = {remote.remote(fn, t, args): i for i, t in enumerate(tasks)}
        results: dict[int, TaskResult] = {}
        failed: list[str] = []
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = refs[ref]
                try:
                    value, s = ray.get(ref)
                    results[i] = TaskResult(tasks[i], True, value, attempts=None, seconds=s)
                except RayTaskError as exc:  # the task raised: its own error (`cause`), one line
                    results[i] = TaskResult(tasks[i], False, error=_one_line(exc.cause or exc))
                except Exception as exc:  # noqa: BLE001 -- worker died past its retries, node lost, ...
                    results[i] = TaskResult(tasks[i], False, error=_one_line(exc),
                                            attempts=cfg.max_retries + 1)
                _note(bar, failed, results[i])
        return [results[i] for i in range(len(tasks))]
    finally:
        if started:
            ray.shutdown()
