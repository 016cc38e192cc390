"""QAT and the torch.ao eager peer on the shared `trained` fixture (one short epoch, one thread)."""
import numpy as np
import pytest
import torch

from har.measure import MeasureConfig, measure
from model_opts.quant import ao_eager, qat
from model_opts.quant.artifact import Int8Artifact
from model_opts.quant.config import QATConfig, QuantConfig
from model_opts.quant.fakequant import class_agreement, to_program

CFG = QATConfig(quant=QuantConfig(calibration="percentile", calib_windows=512), epochs=1, patience=1)


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # fine-tuning is tiny; extra threads only contend on a shared machine
    yield
    torch.set_num_threads(n)


def test_qat_finetunes_through_fake_quant_and_converts(trained, one_thread):
    from model_opts.quant.ptq import simulate
    start = simulate(trained.model, trained.normalizer, trained.x_train, CFG.quant)
    sim, history = qat.finetune(simulate(trained.model, trained.normalizer, trained.x_train, CFG.quant),
                                trained.normalizer, trained.windows, trained.fold, CFG)
    assert len(history) == 1
    assert not torch.equal(sim.weights[0], start.weights[0])  # weights moved through the STE
    assert torch.equal(sim.act(1)[0], start.act(1)[0])  # activation ranges stay frozen
    program = to_program(sim)
    assert class_agreement(sim, program, trained.x_test) >= 0.995
    fp = measure(Int8Artifact(program, "qat"), trained.x_test, trained.y_test, MeasureConfig.static_only())
    assert fp.accuracy > 0.6


def test_torch_ao_eager_peer_builds_or_says_why(trained):
    art, notes = ao_eager.build(trained.model, trained.normalizer, trained.x_train, n_calibration=256)
    if art is None:  # a torch without torch.ao eager: the reason is reported, not faked
        assert any(n.startswith("torch.ao eager failed") for n in notes)
        return
    assert all("failed" not in n for n in notes)
    fp = measure(art, trained.x_test, trained.y_test, MeasureConfig.static_only())
    arrays = art.weight_arrays()
    assert arrays["0.weight"].dtype == np.int8
    assert fp.macs > 0 and fp.accuracy > 0.6
