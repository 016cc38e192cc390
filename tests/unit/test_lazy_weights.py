import hashlib
import struct

import numpy as np
import pytest

from har.errors import HarError
from system_opts import flatten
from system_opts.artifacts import load_program, save_program
from system_opts.kernels import run_program
from system_opts.lazy_weights import (ALIGN_BYTES, LazyConfig, WeightFileError, encode, open_weights,
                                      save_weights)


def _arrays():
    rng = np.random.default_rng(0)
    return {"a.weight": rng.normal(size=(31, 15)).astype(np.float32), "a.pad": rng.normal(size=6).astype(np.float32),
            "b.weight": rng.integers(-127, 128, size=(160, 24)).astype(np.int8),
            "b.bias": rng.integers(-1000, 1000, size=24).astype(np.int32)}


@pytest.fixture
def weight_file(tmp_path):
    return save_weights(tmp_path / "w.bin", _arrays(), {"note": "test"})


def test_round_trip_alignment_and_determinism(tmp_path, weight_file):
    arrays = _arrays()
    assert weight_file.read_bytes() == encode(arrays, {"note": "test"})  # same input -> same bytes
    assert save_weights(tmp_path / "again.bin", _arrays(), {"note": "test"}).read_bytes() == weight_file.read_bytes()
    assert weight_file.read_bytes()[:8] == b"HARFLATW"
    with open_weights(weight_file, LazyConfig("lazy")) as store:
        assert store.metadata == {"note": "test"}
        for name, arr in arrays.items():
            got = store.acquire([name])[0]
            assert got.dtype == arr.dtype and np.array_equal(got, arr)
            assert not got.flags.writeable
            assert (store.file.data_start + store.entries[name].offset) % ALIGN_BYTES == 0
            assert got.ctypes.data % ALIGN_BYTES == 0


def test_policies_track_resident_bytes(weight_file):
    arrays = _arrays()
    sizes = {k: v.nbytes for k, v in arrays.items()}
    total = sum(sizes.values())
    with open_weights(weight_file, LazyConfig("eager")) as store:
        assert store.resident_bytes == store.high_water_bytes == total
    with open_weights(weight_file, LazyConfig("lazy")) as store:
        # verification hashed one tensor at a time, then let it go
        assert store.resident_bytes == 0 and store.high_water_bytes == max(sizes.values())
        store.acquire(["a.weight", "a.pad"])
        store.release(["a.weight", "a.pad"])  # lazy keeps them
        store.acquire(["b.bias"])
        assert store.resident_bytes == sizes["a.weight"] + sizes["a.pad"] + sizes["b.bias"]
    with open_weights(weight_file, LazyConfig("lazy-release")) as store:
        store.reset_high_water()
        for layer in (["a.weight", "a.pad"], ["b.weight", "b.bias"]):
            store.acquire(layer)
            store.release(layer)
        assert store.resident_bytes == 0
        assert store.high_water_bytes == max(sizes["a.weight"] + sizes["a.pad"], sizes["b.weight"] + sizes["b.bias"])
        assert store.n_materialisations == 4


def _corrupt(path, offset, new_bytes=None):
    data = bytearray(path.read_bytes())
    if new_bytes is None:
        data[offset] ^= 0x01
    else:
        data[offset:offset + len(new_bytes)] = new_bytes
    path.write_bytes(bytes(data))


def _header_len(path):
    return struct.unpack_from("<I", path.read_bytes(), 12)[0]


@pytest.mark.parametrize("case", ["truncate", "extend", "data_byte", "data_padding", "header_byte",
                                  "header_padding", "header_digest", "header_length", "magic", "version", "empty"])
def test_damaged_files_are_refused_before_use(weight_file, case):
    size = weight_file.stat().st_size
    hlen = _header_len(weight_file)
    data_start = -(-(48 + hlen) // 64) * 64
    with open_weights(weight_file) as store:
        first = min(store.entries.values(), key=lambda e: e.offset)
    if case == "truncate":
        weight_file.write_bytes(weight_file.read_bytes()[:size - 100])
    elif case == "extend":
        weight_file.write_bytes(weight_file.read_bytes() + b"\0" * 64)
    elif case == "data_byte":
        _corrupt(weight_file, data_start + first.offset + first.nbytes // 2)
    elif case == "data_padding":
        _corrupt(weight_file, data_start + first.offset + first.nbytes)  # 31*15*4 = 1860 bytes: 52 zero bytes follow
    elif case == "header_byte":
        _corrupt(weight_file, 48 + hlen // 2)
    elif case == "header_padding":
        assert data_start > 48 + hlen
        _corrupt(weight_file, 48 + hlen)
    elif case == "header_digest":
        _corrupt(weight_file, 20)
    elif case == "header_length":
        _corrupt(weight_file, 12, struct.pack("<I", hlen - 1))
    elif case == "magic":
        _corrupt(weight_file, 0, b"PK\x03\x04")
    elif case == "version":
        _corrupt(weight_file, 8, struct.pack("<I", 2))
    elif case == "empty":
        weight_file.write_bytes(b"")
    with pytest.raises(WeightFileError) as err:
        open_weights(weight_file)
    assert isinstance(err.value, HarError) and "\n" not in str(err.value)
    if case in ("data_padding", "header_padding"):
        assert "padding" in str(err.value)


def test_header_digest_covers_the_json(weight_file):
    data = weight_file.read_bytes()
    hlen = _header_len(weight_file)
    assert hashlib.sha256(data[48:48 + hlen]).digest() == data[16:48]


def test_program_file_runs_lazily_with_one_layer_resident(tmp_path, trained):
    prog = flatten.apply(trained.model, trained.normalizer, trained.x_test.shape[1:])
    path = save_program(tmp_path / "model.harw", prog)
    assert save_program(tmp_path / "again.harw", prog).read_bytes() == path.read_bytes()
    loaded, store = load_program(path, LazyConfig("lazy-release"))
    with store:
        store.reset_high_water()
        x = trained.x_test[:200]
        assert np.array_equal(run_program(loaded, x, weights=store, batch_size=50), run_program(prog, x, batch_size=50))
        layer_bytes = prog.op_weight_bytes()
        assert store.high_water_bytes == max(layer_bytes)
        assert store.high_water_bytes < 0.6 * sum(layer_bytes)
        assert store.resident_bytes == 0
        assert store.header_bytes < 8192
