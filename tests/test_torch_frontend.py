"""brainslug.pytorch: optimize(), the plan, train/eval, bad input, report,
torch.compile and the IR printer, against PyTorch eager."""

from __future__ import annotations

import subprocess
import sys
import warnings
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

import brainslug.pytorch as brainslug


def max_rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return (out - ref).abs().max().item() / max(1.0, ref.abs().max().item())


class Small(nn.Module):
    """Conv, BN, ReLU, pooling, a residual add, cat, and an unmapped op."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 13, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(13)
        self.conv2 = nn.Conv2d(13, 13, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(13)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.head = nn.Linear(26 * 3 * 3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        z = self.bn2(self.conv2(y)) + y
        z = torch.cat([z, torch.flip(z, [3])], 1)  # flip stays in PyTorch
        z = nn.functional.adaptive_avg_pool2d(self.pool(torch.relu(z)), 3)
        return self.head(torch.flatten(z, 1))


def randomize_bn(model: nn.Module) -> None:
    """Non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None:
            c = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            if m.weight is not None:
                m.weight.data.copy_(1 + 0.1 * torch.randn(c, generator=g))
                m.bias.data.copy_(0.1 * torch.randn(c, generator=g))


@pytest.fixture(scope="module")
def small() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    model = Small().eval()
    randomize_bn(model)
    return model, brainslug.optimize(model, [0, 3, 17, 17])


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_small_model_matches_eager(small, batch: int) -> None:
    model, opt = small
    x = torch.randn(batch, 3, 17, 17)
    with torch.no_grad():
        assert max_rel_err(opt(x), model(x)) <= 1e-5


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_layouts_match_eager(layout: str) -> None:
    """Both activation layouts, on NCHW and channels-last inputs, at two batch sizes."""
    torch.manual_seed(1)
    model = Small().eval()
    randomize_bn(model)
    opt = brainslug.optimize(model, [0, 3, 17, 17], layout=layout)
    convs = [s for s in opt.info.stacks if s.compiled and "batch_norm" in " ".join(s.layers)]
    assert convs and all(s.layout == layout for s in convs)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 17, 17)
        with torch.no_grad():
            ref = model(x)
            assert max_rel_err(opt(x), ref) <= 1e-5
            assert max_rel_err(opt(x.contiguous(memory_format=torch.channels_last)), ref) <= 1e-5


@pytest.mark.parametrize("act", [nn.ReLU, nn.SiLU, nn.Sigmoid, nn.Hardswish, nn.Identity])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_batch_norm_stacks_are_bit_exact(act: type[nn.Module], layout: str) -> None:
    """A stack of batch norms and activations gives eager's bits, NaN included:
    the batch norm's two sums are fused multiply-adds, as in PyTorch's kernel.
    (The input is in the plan's memory order: PyTorch computes the last
    `numel % 32` elements of a SiLU or sigmoid with libm's expf, the last in
    memory order, and the plan follows the order it was made for.)"""
    torch.manual_seed(2)
    model = nn.Sequential(nn.BatchNorm2d(37), act(), nn.BatchNorm2d(37)).eval()
    randomize_bn(model)
    opt = brainslug.optimize(model, [0, 37, 13, 11], layout=layout)
    assert len(opt.info.stacks) == 1 and opt.info.stacks[0].compiled
    for batch in (1, 3):
        x = torch.randn(batch, 37, 13, 11) * 3
        x.view(-1)[::89] = float("nan")
        if layout == "NHWC":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            ref = model(x)
            for _ in range(2):  # the checked call, then the fast path
                assert torch.equal(opt(x).nan_to_num(7.0), ref.nan_to_num(7.0))


def test_fold_batchnorm_and_packed_convolutions() -> None:
    """fold_batchnorm is opt-in and reported; channels-last plans prepack convolutions."""
    from brainslug.frontend_torch.library_conv import PackedConv2d

    torch.manual_seed(2)
    model = Small().eval()
    randomize_bn(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    plain = brainslug.optimize(model, [0, 3, 17, 17], conv="library")
    folded = brainslug.optimize(model, [0, 3, 17, 17], fold_batchnorm=True)
    nchw = brainslug.optimize(model, [0, 3, 17, 17], layout="NCHW")
    assert any(isinstance(m, PackedConv2d) for m in plain.plan.modules())
    assert not any(isinstance(m, PackedConv2d) for m in nchw.plan.modules())
    assert not any("fold_batchnorm" in n for n in plain.info.notes)
    assert any("2 batch norms folded" in n for n in folded.info.notes)
    assert "folded" in brainslug.report(folded)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 17, 17)
        with torch.no_grad():
            ref = model(x)
            assert max_rel_err(plain(x), ref) <= 1e-5
            assert max_rel_err(folded(x), ref) <= 1e-4
    # the user's model is untouched, and later weight updates reach the packed convolutions
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    with torch.no_grad():
        model.conv2.weight.mul_(0.5)
        x = torch.randn(2, 3, 17, 17)
        assert max_rel_err(plain(x), model(x)) <= 1e-5


@pytest.mark.parametrize("threads", [1, 3])
def test_kernel_threads_option(threads: int) -> None:
    torch.manual_seed(4)
    model = Small().eval()
    randomize_bn(model)
    opt = brainslug.optimize(model, [0, 3, 17, 17], threads=threads)
    x = torch.randn(5, 3, 17, 17)
    with torch.no_grad():
        assert max_rel_err(opt(x), model(x)) <= 1e-5


def test_bad_option_values() -> None:
    with pytest.raises(ValueError, match="threads"):
        brainslug.optimize(Small().eval(), [0, 3, 17, 17], threads=0)
    with pytest.raises(ValueError, match="fold_batchnorm"):
        brainslug.optimize(Small().eval(), [0, 3, 17, 17], fold_batchnorm="yes")
    with pytest.raises(ValueError, match="unknown optimize"):
        brainslug.optimize(Small().eval(), [0, 3, 17, 17], fold_bn=True)


def test_bad_layout_option() -> None:
    with pytest.raises(ValueError, match="layout"):
        brainslug.optimize(Small().eval(), [0, 3, 17, 17], layout="NDHWC")


def test_plan_runs_stacks_and_library_calls(small) -> None:
    _, opt = small
    code = opt.plan.code
    assert "bs_run" in code  # stacks are native kernel runs
    assert "flip" in code  # layers BrainSlug does not map stay PyTorch's
    for c in opt.info.convs:  # a convolution is compiled or a library call, as chosen
        assert (c.node in code) == (c.runs == "library"), (c, code)
    assert "bn1" not in code  # batch norm was compiled into a stack


def test_report(small) -> None:
    _, opt = small
    rep = brainslug.report(opt)
    assert "stack0" in rep and "nn.batch_norm" in rep and "NHWC" in rep  # auto: channels-last
    assert "Library calls" in rep and "conv1" in rep
    assert "flip" in rep  # the fallback names the layer and the reason
    with pytest.raises(ValueError):
        brainslug.report(nn.Linear(2, 2))


def test_bad_input_raises_value_error(small) -> None:
    _, opt = small
    bad = [
        torch.randn(2, 3, 16, 17),                    # wrong extent
        torch.randn(2, 3, 17, 17, dtype=torch.float64),  # wrong dtype
        torch.randn(3, 17, 17),                       # wrong rank
        torch.randn(0, 3, 17, 17),                    # empty batch
    ]
    for x in bad:
        with pytest.raises(ValueError) as e, torch.no_grad():
            opt(x)
        assert "expected" in str(e.value) or "empty" in str(e.value)
    with torch.no_grad():  # still usable after errors
        opt(torch.randn(2, 3, 17, 17))


@pytest.mark.parametrize("shape", [[], [0, 3, -1, 17], "0,3,17,17", [0, 3.0, 17, 17], None,
                                   [True, 3, 17, 17]])
def test_malformed_shape(shape) -> None:
    with pytest.raises(ValueError):
        brainslug.optimize(Small(), shape)


def test_training_mode_runs_the_original_and_switches() -> None:
    torch.manual_seed(1)
    model = Small()  # training mode, as in the seed example
    twin = Small()
    twin.load_state_dict(model.state_dict())
    opt = brainslug.optimize(model, [0, 3, 17, 17])
    assert opt.training
    x = torch.randn(4, 3, 17, 17)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = opt(x)
        opt(x)
    assert sum("inference" in str(m.message) for m in w) == 1  # warned once
    ref = twin(x)
    twin(x)
    assert max_rel_err(out, ref) <= 1e-5  # batch statistics, like the original
    # BN running statistics were updated in place: the plan sees them in eval mode
    opt.eval()
    twin.eval()
    with torch.no_grad():
        assert max_rel_err(opt(x), twin(x)) <= 1e-5
    opt.train()
    assert opt.original.training


def test_grad_warning(small) -> None:
    model, _ = small
    opt = brainslug.optimize(model, [0, 3, 17, 17])
    x = torch.randn(2, 3, 17, 17)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = opt(x)
        opt(x)
    assert sum("not differentiable" in str(m.message) for m in w) == 1
    assert not out.requires_grad


def test_torch_compile_backend() -> None:
    torch.manual_seed(2)
    model = Small().eval()
    randomize_bn(model)
    x = torch.randn(2, 3, 17, 17)
    with torch.no_grad():
        ref = model(x)
        out = torch.compile(model, backend="brainslug")(x)
    assert max_rel_err(out, ref) <= 1e-5


def test_ir_printer_cli(tmp_path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "brainslug.frontend_torch", "--model", "torchvision:resnet18",
         "--shape", "1,3,64,64"], capture_output=True, text=True, check=True)
    assert "nn.conv2d" in r.stdout and "nn.batch_norm" in r.stdout
    (tmp_path / "r.mlir").write_text(r.stdout)
    r2 = subprocess.run([sys.executable, "-m", "brainslug.tools.bs_opt", str(tmp_path / "r.mlir"),
                         "-p", "bs-form-stacks"], capture_output=True, text=True, check=True)
    assert "nn.stack" in r2.stdout
    bad = subprocess.run([sys.executable, "-m", "brainslug.frontend_torch", "--model", "nope",
                          "--shape", "1,3"], capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


REPRESENTATIVE = {
    "resnet18": 224,
    "densenet121": 224,
    "mobilenet_v2": 224,
    "squeezenet1_1": 224,
    "shufflenet_v2_x1_0": 224,
    "efficientnet_b0": 224,
    "inception_v3": 299,
    "vgg11_bn": 224,
}


def check_torchvision(name: str, hw: int, **options: Any) -> nn.Module:
    torch.manual_seed(0)
    kw = {"init_weights": True} if name in ("inception_v3", "googlenet") else {}
    model = torchvision.models.get_model(name, weights=None, **kw).eval()
    randomize_bn(model)
    opt = brainslug.optimize(model, [0, 3, hw, hw], **options)
    assert isinstance(opt, nn.Module)
    for batch in (1, 3):
        x = torch.randn(batch, 3, hw, hw)
        with torch.no_grad():
            err = max_rel_err(opt(x), model(x))
        assert err <= 1e-4, f"{name} batch {batch}: {err:.2e}"
    assert any(s.compiled for s in opt.info.stacks)
    return opt


@pytest.mark.parametrize("name", sorted(REPRESENTATIVE))
def test_representative_torchvision_models(name: str) -> None:
    check_torchvision(name, REPRESENTATIVE[name])


def _all_classifiers() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


@pytest.mark.slow
@pytest.mark.parametrize("name", _all_classifiers())
def test_every_torchvision_classifier(name: str) -> None:
    check_torchvision(name, 299 if name == "inception_v3" else 224)


@pytest.mark.slow
@pytest.mark.parametrize("name", _all_classifiers())
def test_every_torchvision_classifier_with_compiled_convolutions(name: str) -> None:
    """conv="brainslug": every channels-last convolution in BrainSlug's kernels."""
    opt = check_torchvision(name, 299 if name == "inception_v3" else 224, conv="brainslug")
    convs = [x for s in opt.info.stacks if s.compiled for x in s.layers if "conv2d" in x]
    assert convs, brainslug.report(opt)


def test_buffer_plan_reuses_slots_and_outputs_survive(small) -> None:
    model, opt = small
    kernels = [m for m in opt.plan.modules() if getattr(m, "is_stack_kernel", False)]
    slots = [s for k in kernels for s in k._out_slots if s is not None]
    assert slots and len(set(slots)) < len(slots) + 1  # planned outputs exist
    x1, x2 = torch.randn(2, 3, 17, 17), torch.randn(2, 3, 17, 17)
    with torch.no_grad():
        out1 = opt(x1)
        out2 = opt(x2)  # reuses the arena: out1 must not change
        assert max_rel_err(out1, model(x1)) <= 1e-5
        assert max_rel_err(out2, model(x2)) <= 1e-5
        out3 = opt(torch.randn(7, 3, 17, 17))  # another batch size gets its own storage
        assert out3.shape[0] == 7


class Branchy(nn.Module):
    """fx cannot trace a condition on a shape; torch.export can."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Small()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 3:
            x = torch.relu(x)
        return self.body(x)


def test_torch_export_fallback() -> None:
    torch.manual_seed(3)
    model = Branchy().eval()
    randomize_bn(model)
    opt = brainslug.optimize(model, [0, 3, 17, 17])
    assert opt.info.capture == "torch.export"
    assert "torch.fx could not trace" in brainslug.report(opt)
    assert sum(s.compiled for s in opt.info.stacks) >= 3
    for batch in (1, 4):
        x = torch.randn(batch, 3, 17, 17)
        with torch.no_grad():
            assert max_rel_err(opt(x), model(x)) <= 1e-5


class BranchyNorms(nn.Module):
    """torch.export's ATen layer norm (with its `cudnn_enable` argument) and
    group norm, behind a shape condition that fx cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3)
        self.ln = nn.LayerNorm(15)
        self.gn = nn.GroupNorm(3, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 3:
            x = x * 2
        y = self.gn(self.conv(x))
        return self.ln(torch.relu(y)) + y


def test_torch_export_maps_its_norms() -> None:
    torch.manual_seed(4)
    model = BranchyNorms().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape) * 0.3)
    opt = brainslug.optimize(model, [0, 3, 17, 17])
    assert opt.info.capture == "torch.export"
    assert not opt.info.fallbacks, opt.info.fallbacks
    for batch in (1, 3):
        x = torch.randn(batch, 3, 17, 17)
        with torch.no_grad():
            assert max_rel_err(opt(x), model(x)) <= 1e-5
