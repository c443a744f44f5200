"""fold_batchnorm: Conv2d -> BatchNorm2d folding on a copy of an fx graph."""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
import torchvision
from torch import nn

from brainslug.frontend_torch.fold import fold_batchnorm


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return (out - ref).abs().max().item() / max(1e-30, ref.abs().max().item())


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running statistics and affine parameters (never 0/1 defaults)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            if m.running_mean is not None:
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.1)
            if m.affine:
                m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(c, generator=g) * 0.3)
    return model


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert list(after) == list(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), k


class ResBlock(nn.Module):
    """resnet basic block with a downsampling shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                  nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.down(x))


class DenseLayer(nn.Module):
    """densenet layer: BN-ReLU-conv1x1-BN-ReLU-conv3x3, concatenated; only the
    middle BN follows a conv."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(torch.relu(self.norm1(x)))
        y = self.conv2(torch.relu(self.norm2(y)))
        return torch.cat([x, y], 1)


class Mixed(nn.Module):
    """Pairs that must fold (bias, affine=False, functional BN) and pairs that
    must not (conv with two users, no running stats, a shared conv)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)          # + bias, folds into bn1
        self.bn1 = nn.BatchNorm2d(6, affine=False)
        self.c2 = nn.Conv2d(6, 6, 1)                     # two users: stays
        self.bn2 = nn.BatchNorm2d(6)
        self.c3 = nn.Conv2d(6, 6, 3, padding=1)          # functional BN folds
        self.register_buffer("rm", torch.randn(6))
        self.register_buffer("rv", torch.rand(6) + 0.5)
        self.g = nn.Parameter(torch.rand(6) + 0.5)
        self.b = nn.Parameter(torch.randn(6))
        self.c4 = nn.Conv2d(6, 6, 1)                     # no running stats: stays
        self.bn4 = nn.BatchNorm2d(6, track_running_stats=False)
        self.shared = nn.Conv2d(6, 6, 3, padding=1)      # called twice, once before BN
        self.bn5 = nn.BatchNorm2d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn1(self.c1(x))
        z = self.c2(y)
        y = self.bn2(z) + z
        y = F.batch_norm(self.c3(y), self.rm, self.rv, self.g, self.b, False, 0.1, 1e-3)
        y = self.bn4(self.c4(y))
        return self.bn5(self.shared(y)) + self.shared(y)


def check_fold(model: nn.Module, shape: tuple[int, ...], expect: int | None = None) -> list[str]:
    model = randomize_bn(model).eval()
    gm = fx.symbolic_trace(model)
    before, code = snapshot(model), gm.code
    folded, names = fold_batchnorm(gm)
    assert_same_state(model, before)
    assert gm.code == code
    if expect is not None:
        assert len(names) == expect, names
    remaining = [n for n in folded.graph.nodes if n.op == "call_module"
                 and isinstance(folded.get_submodule(str(n.target)), nn.BatchNorm2d)]
    assert not set(names) & {n.name for n in remaining}
    for batch in (1, 3):
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            ref = model(x)
            out = folded(x)
        assert rel_err(out, ref) <= 1e-4, (batch, rel_err(out, ref))
    assert_same_state(model, before)
    return names


def test_resnet_block() -> None:
    torch.manual_seed(0)
    names = check_fold(nn.Sequential(ResBlock(8, 16, 2), ResBlock(16, 16, 1)), (8, 15, 13), 6)
    assert names[:3] == ["_0_bn1", "_0_bn2", "_0_down_1"]


def test_densenet_block() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(DenseLayer(16, 8), DenseLayer(24, 8), nn.BatchNorm2d(32))
    names = check_fold(model, (16, 11, 9), 2)
    assert all("norm2" in n for n in names)


def test_torchvision_resnet18() -> None:
    torch.manual_seed(0)
    names = check_fold(torchvision.models.resnet18(weights=None), (3, 64, 64), 20)
    assert len(names) == 20


def test_mixed_cases_and_no_mutation() -> None:
    torch.manual_seed(0)
    model = Mixed()
    names = check_fold(model, (3, 10, 12), 3)
    assert set(names) == {"bn1", "batch_norm", "bn5"}
    gm = fx.symbolic_trace(model)
    folded, _ = fold_batchnorm(gm)
    # the shared conv keeps its module for the unfolded call, the folded call has its own
    targets = [str(n.target) for n in folded.graph.nodes if n.op == "call_module"]
    assert "shared" in targets and any(t.startswith("bs_folded_shared") for t in targets)
    assert folded.get_submodule("c1") is not model.c1
    assert folded.get_submodule("c2") is model.c2  # untouched modules are shared
    assert not any(n.op == "get_attr" and str(n.target) in ("rm", "rv")
                   for n in folded.graph.nodes)


def test_training_bn_only_with_assume_eval() -> None:
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    model.train()
    gm = fx.symbolic_trace(model)
    before = snapshot(model)
    assert fold_batchnorm(gm)[1] == []
    folded, names = fold_batchnorm(gm, assume_eval=True)
    assert names == ["_1"] and model.training and model[1].training
    model.eval()
    x = torch.randn(2, 3, 7, 7)
    with torch.no_grad():
        assert rel_err(folded(x), model(x)) <= 1e-4
    assert_same_state(model, before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fold_math_in_float64(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(nn.Conv2d(4, 5, 3, bias=True),
                                       nn.BatchNorm2d(5, eps=1e-3))).eval().to(dtype)
    folded, _ = fold_batchnorm(fx.symbolic_trace(model))
    conv, bn = model[0], model[1]
    s = bn.weight.double() / torch.sqrt(bn.running_var.double() + 1e-3)
    w = conv.weight.double() * s[:, None, None, None]
    b = (conv.bias.double() - bn.running_mean.double()) * s + bn.bias.double()
    new = folded.get_submodule("0")
    assert new.weight.dtype == dtype and not new.weight.requires_grad
    assert torch.equal(new.weight, w.to(dtype)) and torch.equal(new.bias, b.to(dtype))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_optimize_fold_with_post_ops(name: str) -> None:
    """optimize(fold_batchnorm=True) on whole networks: the folded conv → ReLU(6)
    and conv → add (→ ReLU) run as oneDNN post-ops, at batch 1 and 3, within the
    network tolerance of eager."""
    import brainslug.pytorch as brainslug
    from brainslug.frontend_torch import library_conv

    torch.manual_seed(1)
    model = randomize_bn(getattr(torchvision.models, name)(weights=None)).eval()
    opt = brainslug.optimize(model, [0, 3, 48, 48], fold_batchnorm=True)
    notes = " ".join(opt.info.notes)
    if library_conv._detect_support()[0]:
        assert "residual adds" in notes and "ReLU/ReLU6 layers run as oneDNN post-ops" in notes
    for batch in (1, 3):
        x = torch.randn(batch, 3, 48, 48)
        with torch.no_grad():
            assert rel_err(opt(x), model(x)) <= 1e-4


def test_optimize_fold_follows_weight_changes() -> None:
    """Folded weights are folded again when the model's change: through
    load_state_dict, in place on a batch norm's statistics, and on a conv's
    weight (before, the folded plan stayed stale: max|d| 4.34 on resnet18)."""
    import brainslug.pytorch as brainslug

    torch.manual_seed(2)
    model = randomize_bn(torchvision.models.resnet18(weights=None)).eval()
    opt = brainslug.optimize(model, [0, 3, 48, 48], fold_batchnorm=True)
    x = torch.randn(2, 3, 48, 48)
    changes = [
        lambda: model.load_state_dict({k: v * 1.3 if v.dtype.is_floating_point else v
                                       for k, v in model.state_dict().items()}),
        lambda: model.bn1.running_var.mul_(2.0),
        lambda: model.layer1[0].conv1.weight.mul_(-0.5),
    ]
    with torch.no_grad():
        assert rel_err(opt(x), model(x)) <= 1e-4
        for change in changes:
            change()
            assert rel_err(opt(x), model(x)) <= 1e-4
