"""The whole exported library (preprocessing, runtime, kernels, generated model) on real windows under
AddressSanitizer + UndefinedBehaviorSanitizer (+ float-cast-overflow, outside gcc's undefined group),
built with -Wall -Wextra -Werror: no finding, and the same int8 logits as the integer reference (one
window at a time and streamed)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from firmware import export, preprocess, qemu
from firmware.host import HOST_FLAGS, SANITIZE_FLAGS
from model_opts.quant import intref, ptq
from model_opts.quant.config import QuantConfig
from system_opts.cbuild import compiler

DRIVER = Path(__file__).with_name("csrc") / "firmware_driver.c"


@pytest.mark.parametrize("target", ["host", "cortex-m4", "cortex-m0plus"])  # each target's kernel config
def test_exported_library_is_clean_under_sanitizers(target, trained, recording, tmp_path):
    if shutil.which(compiler()) is None:  # the README requires a C compiler: CI must have one
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{compiler()} not installed")
    art = ptq.apply(trained.model, trained.normalizer, trained.windows, trained.fold,
                    QuantConfig(calibration="minmax", calib_windows=256))
    w = trained.windows
    test = trained.fold.test_idx[:: max(1, len(trained.fold.test_idx) // 60)][:60]
    counts = preprocess.to_counts(recording.xyz[w.start[test][:, None] + np.arange(w.config.length)[None]]
                                  .transpose(0, 2, 1))
    counts[0] = 32767  # extremes: full scale on every axis, and a window of zeros (gravity norm 0)
    counts[1] = 0
    counts[2, :, 0] = -32768
    ex = export.convert(art.program, w.config, tmp_path / "fw", export.ExportConfig(target=target))
    exe = tmp_path / "driver"
    flags = [f for f in HOST_FLAGS if f not in ("-fPIC", "-shared")]
    cmd = [compiler(), *flags, *SANITIZE_FLAGS, f"-I{ex.out_dir}", "-o", str(exe), str(DRIVER),
           *(str(ex.out_dir / s) for s in ex.library_sources)]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-800:]
    (tmp_path / "windows.bin").write_bytes(qemu.windows_bytes(counts))
    run = subprocess.run([str(exe), str(tmp_path / "windows.bin"), str(tmp_path / "scores.bin"),
                          str(tmp_path / "stream.bin")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "runtime error" not in run.stderr and "Sanitizer" not in run.stderr, run.stderr
    ref = intref.run(art.program, preprocess.channels(counts, preprocess.SampleFormat().scale_m_s2, w.config.channels))
    got = qemu.read_records(tmp_path / "scores.bin", ref.shape[1])
    assert np.array_equal(got.scores, ref) and np.array_equal(got.labels, ref.argmax(axis=1))
    stream = np.concatenate(counts)
    starts = np.arange(0, len(stream) - w.config.length + 1, w.config.step)
    sref = intref.run(art.program, preprocess.channels(np.stack([stream[s:s + w.config.length] for s in starts]),
                                                       preprocess.SampleFormat().scale_m_s2, w.config.channels))
    assert np.array_equal(qemu.read_records(tmp_path / "stream.bin", ref.shape[1]).scores, sref)
