"""Batch-1 host latency of our runtimes against their peers, on one pruned model.

The model: the shared trained CNN pruned like the hybrid pipeline (`model_opts.prune`, L1, ratio 0.7;
one round with one fine-tuning epoch to keep the fixture fast), then int8 PTQ (`model_opts.quant.ptq`).
Every runner is single-threaded (torch.set_num_threads(1), BLAS limited by threadpoolctl, ONNX Runtime
`intra_op_num_threads=1`) and classifies the same real test-user window.
- group `host-int8-batch1`: our compiled kernels through `CInt8Session.run` (copy the window into the
  arena, one ctypes call), the same op table timed in C alone (`har_run_repeat`, below), and ONNX
  Runtime's static int8 peer (`har.measure.peers`, QOperator, calibrated on training windows) of the same
  pruned fp32 model, its normalisation inside the graph as ours is folded into the quantizer.
- group `host-fp32-batch1`: the fp32 static pool (`system_opts.buffer_pool.Session.run`), torch eager
  (module forward on the normalised window: the strict baseline) and ONNX Runtime fp32 of the same model.
C compute alone: `lib.har_run_repeat(table, n_ops, REPEATS)` runs the session's op table REPEATS times in
one C call, and the benchmark clock is divided by REPEATS, so its row is the time of one run of the
table, beside the full `run`: the difference is the Python / ctypes wrapper. The table is a copy of the
session's whose quantizer reads a private float window: in the planned arena later tensors reuse the
input's bytes, and re-quantizing those (subnormal floats among them) would time other work.
With --benchmark-disable each runner runs once and is checked: int8 scores bit for bit against the
integer reference `model_opts.quant.intref`, fp32 scores against torch (1e-4), the ORT int8 peer by
its class agreement with fp32 on all test windows (within 2 points of ours: a working int8 model).
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from har.measure.peers import FP32_NAME, INT8_NAME, build_peers
from model_opts import prune
from model_opts.quant import intref, ptq
from system_opts import artifacts, buffer_pool, cbuild, flatten
from system_opts.buffer_pool_int8 import Int8PoolConfig

REPEATS = 200  # runs of the op table per C call when timing the compute alone
COMPUTE_ROUNDS = 1000  # of REPEATS runs each: about a second on a desktop core
PRUNE = prune.PruneConfig(ratio=0.7, steps=1, finetune_epochs=1, patience=1)


@pytest.fixture(scope="module")
def models(trained):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    limits = threadpool_limits(1)
    pruned, _ = prune.prune_model(trained.model, trained.normalizer, trained.windows, trained.fold, PRUNE)
    assert prune.pruned_widths(pruned) == prune.target_widths(trained.model.config.widths, PRUNE.ratio)
    int8 = ptq.apply(pruned, trained.normalizer, trained.windows, trained.fold)
    peers = build_peers(pruned.eval(), trained.normalizer, trained.x_train)
    if not peers.artifacts:
        pytest.fail(peers.notes[0])  # onnxruntime is a declared extra of this project
    yield pruned.eval(), int8, peers.artifacts
    limits.restore_original_limits()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def window(trained) -> np.ndarray:
    return np.ascontiguousarray(trained.x_test[0])


def _compute_only(session, window: np.ndarray):
    """A copy of the C session's op table whose quantizer reads `window` from a private buffer (module
    docstring), the buffer (kept alive with the table) and the op count."""
    table = (cbuild.HarOp * len(session._table))()
    ctypes.memmove(table, session._table, ctypes.sizeof(table))
    rows = np.ascontiguousarray(window.T)  # the (T, C) channel-last float rows the quantizer reads
    assert session.program.ops[0].kind == "quantize_input" and rows.shape == session._input.T.shape
    table[0].p[0] = rows.ctypes.data
    return table, rows, len(table)


@pytest.fixture(scope="module")
def int8_runners(models, window):
    pruned, int8, peers = models
    c = artifacts.int8_session(int8, Int8PoolConfig(kernels="c"))
    table, rows, n_ops = _compute_only(c, window)
    lib, ort = c._lib, peers[INT8_NAME]

    def compute():
        if lib.har_run_repeat(table, n_ops, REPEATS):
            raise RuntimeError("har_run_repeat failed")
        return c._output

    run = {"c-int8-run": lambda: c.run(window), "c-int8-compute": compute,
           "ort-int8": lambda: ort.predict(window[None])[0]}
    yield run, c, rows


@pytest.fixture(scope="module")
def references(models, trained, window):
    """Expected outputs: int8 scores and logits of the integer reference, fp32 logits of torch, and the
    largest |ORT int8 - fp32| logit difference over the test windows."""
    pruned, int8, peers = models
    q = intref.run(int8.program, window[None])
    with torch.inference_mode():
        fp32 = pruned(torch.from_numpy(trained.normalizer(window[None]))).numpy()[0]
        fp32_all = pruned(torch.from_numpy(trained.normalizer(trained.x_test))).numpy()
    ort_dev = float(np.abs(peers[INT8_NAME].predict(trained.x_test) - fp32_all).max())
    return intref.dequantize_output(int8.program, q)[0], q[0], fp32, ort_dev


def test_ort_int8_peer_is_a_working_int8_model_of_the_same_network(models, trained):
    pruned, int8, peers = models
    x = trained.x_test
    with torch.inference_mode():
        fp32 = pruned(torch.from_numpy(trained.normalizer(x))).numpy().argmax(1)
    ours = (intref.run(int8.program, x).argmax(1) == fp32).mean()
    theirs = (peers[INT8_NAME].predict(x).argmax(1) == fp32).mean()
    assert theirs >= ours - 0.02, (theirs, ours)


@pytest.mark.benchmark(group="host-int8-batch1")
@pytest.mark.parametrize("name", ["c-int8-run", "c-int8-compute", "ort-int8"])
def test_host_int8_batch1(benchmark, int8_runners, references, name):
    run, session, _ = int8_runners
    scores_ref, logits_ref, fp32, ort_dev = references
    benchmark.extra_info.update(executor=name, batch=1, threads=1)
    if name == "c-int8-compute":
        # pytest-benchmark's clock (a private attribute: it has no public per-call divisor), scaled so
        # that a row is one run of the table; fixed rounds, since its calibration would read the scaled
        # clock too and run REPEATS times longer than its time budget
        clock = benchmark._timer
        benchmark._timer = lambda: clock() / REPEATS
        benchmark.extra_info.update(repeats_per_call=REPEATS, timer="har_run_repeat time / repeats")
        scores = np.array(benchmark.pedantic(run[name], rounds=COMPUTE_ROUNDS, warmup_rounds=10))
    else:
        scores = np.array(benchmark(run[name]))
    assert scores.shape == scores_ref.shape
    if name.startswith("c-"):
        assert np.array_equal(scores, scores_ref)
        assert np.array_equal(session.logits, logits_ref)
    else:  # another quantisation (uint8 activations, its own calibration): near fp32, not equal to ours
        assert np.abs(scores - fp32).max() <= ort_dev
        top2 = np.sort(fp32)[-2:]
        if top2[1] - top2[0] > 2 * ort_dev:  # then no deviation within ort_dev can change the class
            assert np.argmax(scores) == np.argmax(fp32)


@pytest.fixture(scope="module")
def fp32_runners(models, window, trained):
    pruned, _, peers = models
    session = buffer_pool.apply(flatten.apply(pruned, trained.normalizer, window.shape))
    x_norm = torch.from_numpy(trained.normalizer(window[None]))
    ort = peers[FP32_NAME]

    def eager():
        with torch.inference_mode():
            return pruned(x_norm).numpy()[0]

    return {"fp32-static-pool": lambda: session.run(window), "torch-eager-module": eager,
            "ort-fp32": lambda: ort.predict(window[None])[0]}


@pytest.mark.benchmark(group="host-fp32-batch1")
@pytest.mark.parametrize("name", ["fp32-static-pool", "torch-eager-module", "ort-fp32"])
def test_host_fp32_batch1(benchmark, fp32_runners, references, name):
    fp32 = references[2]
    benchmark.extra_info.update(executor=name, batch=1, threads=1)
    scores = np.array(benchmark(fp32_runners[name]))
    assert scores.shape == fp32.shape
    assert np.abs(scores - fp32).max() <= 1e-4
