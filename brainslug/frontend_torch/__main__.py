"""Print the `nn` IR of a model, so that bs-opt can take a real network:

    python -m brainslug.frontend_torch --model torchvision:resnet18 --shape 1,3,224,224 > r.mlir
    bs-opt r.mlir -p bs-form-stacks
"""

from __future__ import annotations

import argparse
import sys


def load_model(spec: str):
    """`torchvision:NAME` (random weights) or `module.path:factory`."""
    import importlib

    if ":" not in spec:
        raise ValueError(f"--model must look like torchvision:NAME or package.module:factory, "
                         f"got {spec!r}")
    source, name = spec.split(":", 1)
    if source == "torchvision":
        import torchvision

        kw = {"init_weights": True} if name in ("inception_v3", "googlenet") else {}
        return torchvision.models.get_model(name, weights=None, **kw)
    return getattr(importlib.import_module(source), name)()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m brainslug.frontend_torch",
                                description="Print the nn IR of a PyTorch model.")
    p.add_argument("--model", required=True, help="torchvision:NAME or package.module:factory")
    p.add_argument("--shape", required=True, action="append",
                   help="input shape, e.g. 1,3,224,224 (0 = any); once per input of the model")
    args = p.parse_args(argv)
    try:
        from brainslug.frontend_torch.capture import capture
        from brainslug.frontend_torch.graph import check_shape, input_shapes
        from brainslug.frontend_torch.tracing import trace

        spec = check_shape([[int(s) for s in shape.split(",")] for shape in args.shape])
        model = load_model(args.model)
        cap = capture(trace(model), input_shapes(spec))
    except Exception as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(str(cap.module) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
