"""Compressed weight storage in the firmware (`firmware.storage`): every format on the host build of the exported
library, bit-exact with the integer reference on real windows; the decode ops, arena slots and CSR loop order
the device program plans; flash bytes against dense; refusals."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from firmware import export, preprocess
from firmware.host import HostFirmware
from firmware.program import device_program
from firmware.storage import FORMATS, WeightStorage
from har.errors import BadDataError, BadOptionError
from model_opts.quant import intref, ptq
from model_opts.quant.config import QuantConfig
from model_opts.quant.intref import Conv1dInt8, LinearInt8

N_WINDOWS = 200
DECODED = ("palette", "huffman", "huffman-palette", "bitmask")


def _structured(prog, keep: float):
    """Weights on 16 levels (0 among them) with only the `keep` largest magnitudes per layer nonzero: every
    format applies (the integer structure clustering and sparsity leave)."""
    ops = []
    for op in prog.ops:
        if isinstance(op, (Conv1dInt8, LinearInt8)):
            w = np.clip(np.round(op.weight.astype(np.int32) / 17.0), -7, 8) * 15
            cut = np.quantile(np.abs(w), 1.0 - keep)
            w = np.where(np.abs(w) > cut, w, 0)
            op = replace(op, weight=w.astype(np.int8))
        ops.append(op)
    return replace(prog, ops=tuple(ops))


@pytest.fixture(scope="module")
def case(trained, device_counts):
    art = ptq.apply(trained.model, trained.normalizer, trained.windows, trained.fold,
                    QuantConfig(calibration="minmax", calib_windows=512))
    w = trained.windows
    _, counts = device_counts(N_WINDOWS)
    prog = _structured(art.program, keep=0.15)
    ch = preprocess.channels(counts, preprocess.SampleFormat().scale_m_s2, w.config.channels)
    return prog, w.config, counts, intref.run(prog, ch)


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "dense"])
def test_every_storage_is_bit_exact_on_the_host_build(case, fmt, tmp_path):
    prog, window, counts, ref = case
    ex = export.convert(prog, window, tmp_path / fmt, export.ExportConfig(target="host", storage=WeightStorage(fmt)))
    fw = HostFirmware(ex.out_dir)
    assert fw.init_code == 0
    labels, scores = fw.classify(counts)
    assert np.array_equal(scores, ref) and np.array_equal(labels, ref.argmax(axis=1))
    assert len(np.unique(labels)) > 1


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m0plus"])
def test_decoded_weights_are_planned_tensors_and_flash_shrinks(case, target):
    prog = case[0]
    dense = device_program(prog, target)
    n_gemm = sum(r.kind == 1 for r in dense.records)
    for fmt in DECODED:
        dev = device_program(prog, target, WeightStorage(fmt))
        decodes = [r for r in dev.records if r.kind == 5]
        assert len(decodes) == n_gemm and len(dev.records) == len(dense.records) + n_gemm
        for i, r in enumerate(dev.records):
            if r.kind == 5:  # decode op right before its gemm, writing the arena slot the gemm reads
                assert dev.records[i + 1].kind == 1 and dev.records[i + 1].pointers[2] == r.pointers[1]
                assert r.pointers[1][0] == "arena" and r.ints[1] > 0
        # RAM up: each decoded layer is live for its own op only, so the slots share arena space
        slots = sum(layer.n_values + 3 for _, layer in dev.layers)
        assert dense.arena_bytes < dev.arena_bytes <= dense.arena_bytes + slots
        assert len(dev.blob_bytes()) < len(dense.blob_bytes()), fmt  # flash down
    for fmt, mode in (("csr", 3), ("palette-direct", 4)):  # read from flash by their own gemm loop order
        dev = device_program(prog, target, WeightStorage(fmt))
        gemms = [r for r in dev.records if r.kind == 1]
        assert all(r.ints[11] == mode for r in gemms) and not any(r.kind == 5 for r in dev.records)
        assert dev.arena_bytes <= dense.arena_bytes  # no scratch, no decoded weights
        assert len(dev.blob_bytes()) < len(dense.blob_bytes())


def test_auto_takes_the_fewest_stored_bytes_per_layer(case):
    prog = case[0]
    auto = dict(device_program(prog, "cortex-m4", WeightStorage("auto")).layers)
    for fmt in ("dense", *DECODED):
        other = dict(device_program(prog, "cortex-m4", WeightStorage(fmt)).layers)
        for name, layer in auto.items():
            assert layer.stored_bytes <= other[name].stored_bytes, (name, fmt)


def test_huffman_figures_sit_at_the_entropy_bound(case):
    for _, layer in device_program(case[0], "cortex-m4", WeightStorage("huffman")).layers:
        assert layer.entropy_bits <= layer.bits_per_weight < layer.entropy_bits + 1.0


def test_exports_are_byte_identical_and_refuse_a_flipped_stream_byte(case, tmp_path):
    prog, window, counts, _ = case
    cfg = export.ExportConfig(target="host", storage=WeightStorage("huffman"))
    a = export.convert(prog, window, tmp_path / "a", cfg)
    b = export.convert(prog, window, tmp_path / "b", cfg)
    assert a.files == b.files
    src = (a.out_dir / "har_model.c").read_text()
    member = next(m for m in a.device.members if m.name.endswith("_z"))
    head = f".{member.name} = {{"  # the stream's own initializer, not a look-alike run of another array
    start = src.index(head) + len(head)
    first = src[start:].split(",")[0].strip()
    assert int(first) == int(member.values[0])
    src = src[:start] + src[start:].replace(first, str(int(first) ^ 1), 1)
    (a.out_dir / "har_model.c").write_text(src)
    assert HostFirmware(a.out_dir).init_code == -1  # HAR_ERR_CRC: the stream is in the checksummed weights


def test_a_palette_needs_at_most_16_values_and_bad_formats_are_refused(trained):
    art = ptq.apply(trained.model, trained.normalizer, trained.windows, trained.fold, QuantConfig(calib_windows=256))
    with pytest.raises(BadDataError, match="distinct weight values"):
        device_program(art.program, "cortex-m4", WeightStorage("palette"))
    with pytest.raises(BadOptionError, match="unknown weight storage"):
        WeightStorage("zip")
