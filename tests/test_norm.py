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


# -- time-shared norms (model.norm: bn | tdbn) ------------------------------------------------

from spikeseg import models  # noqa: E402
from spikeseg.norm import TimeSharedBN  # noqa: E402


def test_time_shared_bn_takes_statistics_over_the_whole_sequence():
    torch.manual_seed(0)
    T, B, C = 3, 4, 5
    x = torch.stack([torch.randn(B, C, 6, 6) * (t + 1) + t for t in range(T)])  # [T, B, C, H, W]
    bn = TimeSharedBN(C).train()
    y = bn(x.flatten(0, 1))
    ref = torch.nn.BatchNorm2d(C, eps=1e-4, momentum=0.1, affine=False).train()
    assert torch.allclose(y, ref(x.flatten(0, 1)), atol=1e-5)  # one BN over T·B samples
    assert torch.allclose(bn.running_var, ref.running_var, atol=1e-6)
    with pytest.raises(RuntimeError, match="whole sequences"):
        bn.step(x[0], 0)
    bn.eval()
    a, b = bn.affine_parameters()
    assert torch.allclose(bn.step(x[0], 0), x[0] * a.view(1, -1, 1, 1) + b.view(1, -1, 1, 1),
                          atol=1e-5)


def test_tdbn_scales_the_normalised_input_by_the_threshold():
    """tdBN: λ·(α·V_th·x̂) + β, so at initialisation the pre-activations have std α·θ."""
    torch.manual_seed(0)
    x = torch.randn(64, 3, 8, 8) * 7 + 2
    for theta in (0.5, 2.0):
        y = TimeSharedBN(3, scale=theta).train()(x)
        assert torch.allclose(y.std(dim=(0, 2, 3), unbiased=False), torch.full((3,), theta),
                              rtol=1e-3)
        assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    m = models.create("spiking_deeplab", 3, timesteps=2, width=0.125, norm="tdbn", threshold=0.7)
    assert {mod.scale for mod in m.modules() if isinstance(mod, TimeSharedBN)} == {0.7}


@pytest.mark.parametrize("norm", ["bn", "tdbn", "none"])
@pytest.mark.parametrize("name", ["spiking_deeplab", "spiking_fcn"])
def test_other_norms_train_on_sequences_and_agree_across_modes_in_eval(name, norm):
    torch.manual_seed(0)
    m = models.create(name, 3, timesteps=3, width=0.125, norm=norm)
    assert m.norm == norm and not m.bntt_modules()
    m.train()
    assert m.resolve_step_mode(torch.device("cpu")) == ("fold" if norm != "none" else "step")
    m(torch.rand(4, 3, 32, 32)).sum().backward()  # running statistics move
    m.eval()
    x = torch.rand(2, 3, 32, 32)
    out = {}
    for mode in ("step", "fold"):
        m.step_mode = mode
        out[mode] = m(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out["step"], out["fold"], atol=1e-5)
    if norm != "none":
        m.train()
        m.step_mode = "step"
        with pytest.raises(ValueError, match="train on whole sequences"):
            m(x)
    else:  # the convolutions carry the bias a norm would have given them
        assert all(c.bias is not None for c in m.modules()
                   if isinstance(c, torch.nn.Conv2d) and c.kernel_size == (3, 3))


def test_norm_is_recorded_in_checkpoints(tmp_path):
    from spikeseg.engine.checkpoint import load_checkpoint, save_checkpoint

    m = models.create("spiking_fcn", 3, timesteps=2, width=0.125, norm="bn").eval()
    save_checkpoint(tmp_path / "ck", m, "spiking_fcn")
    m2, meta = load_checkpoint(tmp_path / "ck")
    assert meta["model"]["options"]["norm"] == "bn" and m2.norm == "bn"
    x = torch.rand(1, 3, 32, 32)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(m(x, generator=g()), m2(x, generator=g()))
    with pytest.raises(ValueError, match="norm of an ANN model must be one of"):
        models.create("deeplab", 3, norm="bntt")
