"""brainslug.save / brainslug.load, pickle and deepcopy of an optimized module:
bit-for-bit outputs in a fresh process without compiling, weights that keep
following changes, damaged files named in a clear error."""

from __future__ import annotations

import copy
import io
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import brainslug.pytorch as brainslug
from brainslug.runtime import bundle


def _perturbed(m: nn.Module, seed: int = 0) -> nn.Module:
    """`m` in eval mode with random BN statistics and affine terms."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d | nn.LayerNorm):
                if isinstance(mod, nn.BatchNorm2d):
                    mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) - 0.5)
                    mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                if mod.weight is not None:
                    mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                    mod.bias.copy_(torch.rand(mod.bias.shape, generator=g) - 0.5)
    return m.eval()


class Block(nn.Module):
    """Token mixing of a transformer: LayerNorm, attention-like softmax, GELU,
    permutes and a residual; the graph calls functions, methods and getitem."""

    def __init__(self, c: int = 24):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(c)
        self.fc1, self.fc2 = nn.Linear(c, 2 * c), nn.Linear(2 * c, c)
        self.scale = nn.Parameter(torch.full((c,), 0.9))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        n, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        y = self.norm(t)
        a = torch.softmax(y @ y.transpose(1, 2) / c ** 0.5, dim=-1)
        y = self.fc2(nn.functional.gelu(self.fc1(a @ y)))
        t = t + self.scale * y
        return t.mean(1)[:, : c - 3]


class ExportOnly(nn.Module):
    """A model that symbolic tracing can't capture (a buffer expanded to the
    traced batch), so torch.export does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.register_buffer("shift", torch.randn(1, 8, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        return y + self.shift.expand(x.shape[0], -1, -1, -1)


def _save_load(opt: nn.Module, tmp_path: Path) -> nn.Module:
    path = tmp_path / "m.bslug"
    brainslug.save(opt, path)
    return brainslug.load(path)


@pytest.mark.parametrize("make, shape, options", [
    (lambda: torchvision.models.resnet18(), [0, 3, 45, 37], {}),
    (lambda: torchvision.models.mobilenet_v3_small(), [0, 3, 41, 43], {"conv": "brainslug"}),
    (lambda: torchvision.models.resnet18(), [0, 3, 45, 37], {"fold_batchnorm": True}),
    (lambda: torchvision.models.squeezenet1_1(), [0, 3, 47, 47], {"layout": "NCHW"}),
    (Block, [0, 3, 19, 21], {}),
    (ExportOnly, [0, 3, 13, 11], {}),
    # window attention traced through, its bias cached, linear layers in the arena
    (lambda: torchvision.models.swin_transformer.SwinTransformer(
        patch_size=[4, 4], embed_dim=24, depths=[2, 2], num_heads=[2, 3],
        window_size=[7, 7], num_classes=11), [0, 3, 60, 76], {}),
])
def test_loaded_module_computes_what_the_optimized_one_does(make, shape, options,
                                                            tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = _perturbed(make())
    opt = brainslug.optimize(m, shape, **options)
    assert opt.plan is not None, brainslug.report(opt)
    if make is ExportOnly:  # (its plan had torch.export's guard, a local function)
        assert "capture: torch.export" in brainslug.report(opt)
    back = _save_load(opt, tmp_path)
    assert back.kernels.kernels.stats["compiled"] == 0
    for batch in (1, 3):
        x = torch.randn(batch, *shape[1:])
        x[0, 0, 0, 0] = float("nan")
        with torch.no_grad():
            want, got, ref = opt(x), back(x), m(x)
        assert torch.equal(want.isnan(), got.isnan())
        assert torch.equal(want.nan_to_num(), got.nan_to_num())
        if not options.get("fold_batchnorm"):  # (its ReLU post-ops turn NaN into 0)
            assert torch.equal(ref.isnan(), got.isnan())
    assert brainslug.report(back) == brainslug.report(opt)


def test_load_in_a_fresh_process_needs_no_model_class_and_no_compiler(tmp_path: Path) -> None:
    torch.manual_seed(1)
    m = _perturbed(torchvision.models.resnet18())
    opt = brainslug.optimize(m, [0, 3, 33, 35])
    x = torch.randn(2, 3, 33, 35)
    with torch.no_grad():
        torch.save({"x": x, "y": opt(x)}, tmp_path / "io.pt")
    brainslug.save(opt, tmp_path / "m.bslug")
    code = f"""
import sys, torch
import brainslug.pytorch as brainslug
import brainslug.plan.compile as compile
compile.lower_stacks = None  # a compile would fail
opt = brainslug.load({str(tmp_path / 'm.bslug')!r})
io = torch.load({str(tmp_path / 'io.pt')!r})
with torch.no_grad():
    assert torch.equal(opt(io["x"]), io["y"])
assert "torchvision" not in sys.modules
assert opt.kernels.kernels.stats["compiled"] == 0
print("ok")
"""
    env = {"BRAINSLUG_CACHE": "0", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


def test_weights_loaded_into_a_loaded_module_are_followed(tmp_path: Path) -> None:
    torch.manual_seed(2)
    m = _perturbed(torchvision.models.resnet18())
    for options in ({}, {"fold_batchnorm": True}):
        back = _save_load(brainslug.optimize(m, [0, 3, 32, 32], **options), tmp_path)
        other = _perturbed(torchvision.models.resnet18(), seed=5)
        assert set(back.state_dict()) == set(other.state_dict())
        back.load_state_dict(other.state_dict())
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            ref, got = other(x), back(x)
        assert (got - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())
        with torch.no_grad():  # in place, as an optimizer step does
            back.state_dict()["fc.bias"].add_(1.0)
            assert torch.allclose(back(x), ref + 1.0, atol=1e-4)


def test_a_loaded_module_runs_inference_only(tmp_path: Path) -> None:
    back = _save_load(brainslug.optimize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval(),
                                         [0, 3, 9, 9]), tmp_path)
    back.train()
    with pytest.raises(ValueError, match="inference only"), pytest.warns(UserWarning):
        back(torch.randn(1, 3, 9, 9))


def test_damaged_and_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    opt = brainslug.optimize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval(), [0, 3, 9, 9])
    good = tmp_path / "good.bslug"
    brainslug.save(opt, good)
    data = good.read_bytes()
    middle = len(data) // 2
    variants = {
        "truncated": data[:middle],
        "one byte": data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1:],
        "tail": data[:-1],
        "empty": b"",
        "foreign": b"PK\x03\x04" + bytes(200),
    }
    for what, blob in variants.items():
        path = tmp_path / f"{what}.bslug"
        path.write_bytes(blob)
        with pytest.raises(ValueError, match=str(path)) as e:
            brainslug.load(path)
        assert isinstance(e.value, bundle.BundleError), what
    with pytest.raises(OSError):
        brainslug.load(tmp_path / "missing.bslug")
    # intact, but another kind of plan
    b = bundle.read(good)
    manifest = {k: v for k, v in b.manifest.items() if k != "sections"}
    sections = {n: bytes(b.section(n)) for n in b.names()}
    other = tmp_path / "tf.bslug"
    bundle.write(other, {**manifest, "kind": "brainslug.tensorflow"}, sections)
    with pytest.raises(ValueError, match="not a PyTorch one"):
        brainslug.load(other)


def test_other_cpu_or_versions_recompile_from_the_stored_ir(tmp_path: Path) -> None:
    torch.manual_seed(3)
    m = _perturbed(torchvision.models.resnet18())
    opt = brainslug.optimize(m, [0, 3, 32, 32])
    good = tmp_path / "good.bslug"
    brainslug.save(opt, good)
    b = bundle.read(good)
    manifest = {k: v for k, v in b.manifest.items() if k != "sections"}
    sections = {n: bytes(b.section(n)) for n in b.names()}
    manifest["kernels"] = {**manifest["kernels"], "fingerprint": "another;cpu"}
    moved = tmp_path / "moved.bslug"
    bundle.write(moved, manifest, sections)
    with pytest.warns(UserWarning, match="compiled again from the IR"):
        back = brainslug.load(moved)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back(x), opt(x))
    # IR this BrainSlug can't read: a clear error
    sections["ir/stacks.mlir"] = b"builtin.module { not ir"
    broken = tmp_path / "broken.bslug"
    bundle.write(broken, manifest, sections)
    with pytest.raises(ValueError, match="optimize\\(\\) the model again"):
        brainslug.load(broken)


def test_pickle_deepcopy_and_torch_save_keep_the_plan_and_the_model() -> None:
    torch.manual_seed(4)
    m = _perturbed(torchvision.models.resnet18())
    opt = brainslug.optimize(m, [0, 3, 32, 32])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = opt(x)
    buf = io.BytesIO()
    torch.save(opt, buf)
    copies = [pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt),
              torch.load(io.BytesIO(buf.getvalue()), weights_only=False)]
    for c in copies:
        assert type(c.original) is type(m)
        with torch.no_grad():
            assert torch.equal(c(x), want)
            c.original.fc.bias.add_(2.0)  # the copy's plan reads the copy's model
            assert torch.allclose(c(x), want + 2.0, atol=1e-4)
        with torch.no_grad():
            assert torch.equal(opt(x), want)


def test_what_cant_be_saved_says_so(tmp_path: Path) -> None:
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    m[0].register_forward_hook(lambda *a: None)
    opt = brainslug.optimize(m, [0, 3, 9, 9], layout="NCHW")  # (the conv: a library call)
    with pytest.raises(ValueError, match="hooks"):
        brainslug.save(opt, tmp_path / "h.bslug")
    with pytest.raises(ValueError, match="optimize returns"):
        brainslug.save(m, tmp_path / "m.bslug")
    with pytest.warns(UserWarning, match="float32"):
        unplanned = brainslug.optimize(copy.deepcopy(m).double(), [0, 3, 9, 9])
    with pytest.raises(ValueError, match="torch.save"):
        brainslug.save(unplanned, tmp_path / "u.bslug")
    with pytest.raises(TypeError, match="brainslug.save"):
        pickle.dumps(unplanned)


def test_manifest_is_plain_json_and_tensors_are_safetensors(tmp_path: Path) -> None:
    opt = brainslug.optimize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval(),
                             [0, 3, 9, 9])
    path = tmp_path / "m.bslug"
    brainslug.save(opt, path)
    b = bundle.read(path)
    json.dumps(b.manifest)  # data only
    tensors = bundle.decode_tensors(b.section("tensors"))
    assert {d for d, _, _ in tensors.values()} == {"F32", "I64"}
    objects = [n for n in b.names() if n.startswith("objects/")]
    assert objects and "ir/stacks.mlir" in b.names()
