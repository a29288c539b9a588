"""BNTT: separate statistics and scale per timestep, equal to one BatchNorm per timestep."""

import pytest
import torch

from spikeseg.norm import BNTT


def test_separate_running_stats_per_timestep():
    torch.manual_seed(0)
    T, C = 3, 4
    bntt = BNTT(C, T).train()
    refs = [torch.nn.BatchNorm2d(C, eps=1e-4, momentum=0.1, affine=False).train() for _ in range(T)]
    for _ in range(3):
        # Different statistics at each timestep.
        x = torch.stack([torch.randn(5, C, 6, 6) * (t + 1) + 2 * t for t in range(T)])
        y = bntt(x)
        for t in range(T):
            assert torch.allclose(y[t], refs[t](x[t]), atol=1e-5)
    for t in range(T):
        assert torch.allclose(bntt.running_mean[t], refs[t].running_mean, atol=1e-6)
        assert torch.allclose(bntt.running_var[t], refs[t].running_var, atol=1e-5)
    # The rows really differ: the timesteps did not share statistics.
    assert not torch.allclose(bntt.running_mean[0], bntt.running_mean[2])
    assert bntt.num_batches_tracked.tolist() == [3, 3, 3]


def test_eval_uses_the_running_stats_of_each_timestep_and_scale():
    T, C = 2, 3
    bntt = BNTT(C, T)
    with torch.no_grad():
        bntt.running_mean.copy_(torch.tensor([[1.0, 2, 3], [4, 5, 6]]))
        bntt.running_var.copy_(torch.tensor([[1.0, 4, 9], [1, 1, 1]]))
        bntt.weight.copy_(torch.tensor([[1.0, 1, 1], [2, 2, 2]]))
    bntt.eval()
    x = torch.ones(1, C, 1, 1) * 7
    y0 = bntt.step(x, 0).view(-1)
    y1 = bntt.step(x, 1).view(-1)
    eps = 1e-4
    assert torch.allclose(y0, torch.tensor([6 / (1 + eps) ** 0.5, 5 / (4 + eps) ** 0.5, 4 / (9 + eps) ** 0.5]))
    assert torch.allclose(y1, 2 * torch.tensor([3.0, 2, 1]) / (1 + eps) ** 0.5)
    # Beyond the trained window the last timestep's statistics are used.
    assert torch.allclose(bntt.step(x, 5), bntt.step(x, 1))
    # Statistics are not updated in eval mode.
    assert bntt.num_batches_tracked.tolist() == [0, 0]


def test_beyond_mean_policy_and_no_bias_by_default():
    bntt = BNTT(2, 3, beyond="mean").eval()
    assert bntt.bias is None
    with torch.no_grad():
        bntt.running_mean.copy_(torch.tensor([[0.0, 0], [1, 1], [2, 2]]))
    x = torch.zeros(1, 2, 1, 1)
    assert torch.allclose(bntt.step(x, 7), -torch.ones(1, 2, 1, 1) / (1 + 1e-4) ** 0.5)


def test_training_beyond_T_is_an_error():
    with pytest.raises(RuntimeError, match="timesteps"):
        BNTT(2, 2).train().step(torch.randn(4, 2, 3, 3), 2)


def test_bntt_gradcheck():
    torch.manual_seed(0)
    bntt = BNTT(2, 2).double().train()
    x = torch.randn(2, 3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(bntt, (x,))
