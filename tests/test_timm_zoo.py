"""A model-zoo sweep: timm models across families optimize without raising and
match eager PyTorch within 1e-4·max(1, |ref|) at batch 1 and 3.

Checks are made informative first (`perturb`): random batch-norm statistics,
every 1-D parameter moved off its initial value, layer scales near 1 and no
zero head, so that no branch hides behind a tiny factor. Each model prints a
row: stacks, fallbacks, the largest relative difference. Five small models run
in `make test`; the rest are in the slow suite (`pytest -m slow -s
tests/test_timm_zoo.py` prints the table)."""

from __future__ import annotations

import pytest
import torch

from brainslug.testing.weights import perturb

timm = pytest.importorskip("timm")

FAST = ["resnet18d", "regnetx_002", "lcnet_050", "mobileone_s0", "repvgg_a0"]
"""Small models of five families, in `make test`."""

ZOO = [
    "resnet26d", "dla34", "dla46_c", "regnety_002", "mixnet_s", "mixnet_m", "vovnet39a",
    "ese_vovnet19b_dw", "cspresnet50", "cspdarknet53", "ghostnet_100", "ghostnetv2_100",
    "dpn68", "dpn68b", "hrnet_w18_small", "hrnet_w18_small_v2", "efficientnet_lite0",
    "tf_efficientnet_lite0", "repvgg_a2", "rexnet_100", "rexnet_130", "res2net50_26w_4s",
    "res2next50", "resnest14d", "resnest26d", "selecsls42b", "selecsls60", "tresnet_m",
    "nf_resnet26", "nfnet_f0", "dm_nfnet_f0", "lcnet_100", "mobileone_s1", "convnext_atto",
    "convnext_nano", "poolformer_s12", "poolformerv2_s12", "efficientformer_l1",
    "efficientformerv2_s0", "levit_128s", "levit_128", "mobilevit_xxs", "mobilevit_s",
    "mobilevitv2_050", "fastvit_t8", "edgenext_xx_small", "edgenext_small", "coat_lite_tiny",
    "xcit_nano_12_p16_224", "deit_tiny_patch16_224", "deit_small_patch16_224",
    "resmlp_12_224", "mixer_s32_224", "gmlp_ti16_224", "pit_ti_224", "densenet121",
    "hardcorenas_a", "mnasnet_100", "spnasnet_100", "fbnetc_100", "semnasnet_100",
    "tinynet_a", "hgnet_tiny", "hgnetv2_b0", "inception_v3", "xception41", "gernet_s",
]
"""At least 60 models of the families the compile-time issue names, in the slow suite."""


def sweep(name: str) -> None:
    import brainslug.pytorch as brainslug

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    perturb(model)
    _, h, w = model.pretrained_cfg.get("input_size", (3, 224, 224))
    opt = brainslug.optimize(model, [0, 3, h, w])
    info = opt.info
    stacks = sum(s.compiled for s in info.stacks)
    errors = []
    for batch in (1, 3):
        x = torch.randn(batch, 3, h, w)
        with torch.no_grad():
            ref, out = model(x), opt(x)
        assert ref.abs().max() > 1e-3, f"{name}: the output is too small to check"
        errors.append(((out - ref).abs().max() / ref.abs().max().clamp(min=1)).item())
    print(f"\n{name:24s} stacks {stacks:4d}  fallbacks {len(info.fallbacks):4d}  "
          f"rel|d| {max(errors):.1e}")
    assert max(errors) <= 1e-4, (name, errors)


@pytest.mark.parametrize("name", FAST)
def test_timm_model_matches_eager(name: str) -> None:
    sweep(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_timm_zoo_matches_eager(name: str) -> None:
    sweep(name)
