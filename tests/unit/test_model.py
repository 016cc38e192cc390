import torch

from har.model import CNNConfig, CompactCNN1d, param_count


def test_seeded_construction_ignores_global_rng_state():
    a = CompactCNN1d(CNNConfig(), seed=3)
    torch.rand(1000)  # whatever ran before must not matter
    b = CompactCNN1d(CNNConfig(), seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    c = CompactCNN1d(CNNConfig(), seed=4)
    assert not torch.equal(a[0].weight, c[0].weight)


def test_seeded_construction_restores_the_global_generator():
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    CompactCNN1d(CNNConfig(), seed=9)
    assert torch.equal(torch.rand(3), want)


def test_shapes_and_parameter_count_follow_the_config():
    cfg = CNNConfig(in_channels=6, n_classes=5, widths=(8, 12), kernel_size=3)
    model = CompactCNN1d(cfg)
    assert model(torch.zeros(2, 6, 80)).shape == (2, 5)
    assert param_count(model) == 6 * 8 * 3 + 2 * 8 + 8 * 12 * 3 + 2 * 12 + 12 * 5 + 5
