import numpy as np
import pytest

from har import model_io
from har.errors import BadDataError, DataNotFoundError


def test_round_trip_gives_identical_predictions_and_bytes(trained, tmp_path):
    x = trained.x_test[:64]
    model_io.save(tmp_path / "a", trained.model, trained.normalizer, trained.windows.config, trained.windows.classes)
    model_io.save(tmp_path / "b", trained.model, trained.normalizer, trained.windows.config, trained.windows.classes)
    loaded = model_io.load(tmp_path / "a")
    from har.model import predict_logits
    want = predict_logits(trained.model, trained.normalizer(x)).numpy()
    np.testing.assert_array_equal(loaded.logits(x), want)
    assert (tmp_path / "a" / model_io.WEIGHTS_FILE).read_bytes() == (tmp_path / "b" / model_io.WEIGHTS_FILE).read_bytes()
    assert loaded.window == trained.windows.config and loaded.classes == trained.windows.classes


def test_weight_file_is_not_a_pickle(trained, tmp_path):
    model_io.save(tmp_path, trained.model, trained.normalizer, trained.windows.config, trained.windows.classes)
    head = (tmp_path / model_io.WEIGHTS_FILE).read_bytes()[:16]
    assert not head.startswith(b"\x80") and not head.startswith(b"PK")  # neither pickle nor torch zip


def test_missing_or_corrupt_model_is_a_clear_error(trained, tmp_path):
    with pytest.raises(DataNotFoundError):
        model_io.load(tmp_path)
    model_io.save(tmp_path, trained.model, trained.normalizer, trained.windows.config, trained.windows.classes)
    p = tmp_path / model_io.WEIGHTS_FILE
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(BadDataError):
        model_io.load(tmp_path)
