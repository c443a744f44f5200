"""`bs-opt`: BrainSlug's mlir-opt. Runs named passes on textual IR.

    bs-opt FILE|- [-p PIPELINE] [--target mlir|llvm-ir|asm|ptx]

Malformed IR, unknown ops or passes and verifier failures print a located
diagnostic and exit with status 1, never a Python traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from xdsl.context import Context
from xdsl.dialects import llvm
from xdsl.dialects.builtin import ModuleOp
from xdsl.utils.exceptions import ArgSpecParseError, DiagnosticException, ParseError
from xdsl.utils.target import Target
from xdsl.xdsl_opt_main import xDSLOptMain

from brainslug.ir.context import brainslug_dialects, upstream_dialects
from brainslug.pipeline import ALL_PASSES, PASS_SUMMARIES


def _needs_lowering(module: ModuleOp) -> bool:
    return not any(isinstance(op, llvm.FuncOp) for op in module.ops)


def _lower_for(module: ModuleOp, ctx: Context, target: str, cpu: str) -> None:
    from brainslug.pipeline.default import default_passes

    for p in default_passes(target, cpu):
        p.apply(ctx, module)


@dataclass(frozen=True)
class LLVMIRTarget(Target):
    """LLVM IR of the module's kernels (runs the default pipeline first if needed)."""

    name = "llvm-ir"
    cpu: str = "host"
    opt: int = 3

    def emit(self, ctx: Context, module: ModuleOp, output: IO[str]) -> None:
        from brainslug.lowering.backends import x86

        if _needs_lowering(module):
            _lower_for(module, ctx, "x86-64", self.cpu)
        output.write(x86.emit_llvm_ir(module, cpu=self.cpu, opt=self.opt))


@dataclass(frozen=True)
class AsmTarget(Target):
    """x86-64 assembly of the module's kernels."""

    name = "asm"
    cpu: str = "host"

    def emit(self, ctx: Context, module: ModuleOp, output: IO[str]) -> None:
        from brainslug.lowering.backends import x86

        if _needs_lowering(module):
            _lower_for(module, ctx, "x86-64", self.cpu)
        output.write(x86.emit_asm(module, cpu=self.cpu))


@dataclass(frozen=True)
class PTXTarget(Target):
    """PTX of the module's kernels through LLVM's NVPTX target."""

    name = "ptx"
    cpu: str = "sm_90"

    def emit(self, ctx: Context, module: ModuleOp, output: IO[str]) -> None:
        from brainslug.lowering.backends import nvptx

        if _needs_lowering(module):
            _lower_for(module, ctx, "nvptx", self.cpu)
        output.write(nvptx.emit_ptx(module, cpu=self.cpu))


def _factory(target: type[Target]):
    return lambda: target


def _epilog() -> str:
    width = max(map(len, PASS_SUMMARIES))
    lines = ["BrainSlug passes (-p NAME{option=value ...}, comma separated):"]
    lines += [f"  {n.ljust(width)}  {s}" for n, s in PASS_SUMMARIES.items()]
    lines.append("")
    lines.append("Targets (--target): mlir (default), llvm-ir, asm, ptx")
    return "\n".join(lines)


class BSOptMain(xDSLOptMain):
    """xdsl-opt with BrainSlug's dialects, passes and targets."""

    def register_all_dialects(self) -> None:
        for d in (*upstream_dialects(), *brainslug_dialects()):
            if d.name not in self.ctx.registered_dialect_names:
                self.ctx.register_dialect(d.name, lambda d=d: d)

    def register_all_passes(self) -> None:
        for name, factory in ALL_PASSES.items():
            self.register_pass(name, factory)

    def register_all_targets(self) -> None:
        super().register_all_targets()
        for t in (LLVMIRTarget, AsmTarget, PTXTarget):
            # a zero-argument factory (xDSL treats factories with parameters as legacy)
            self.available_targets[t.name] = _factory(t)

    def register_all_arguments(self, arg_parser: argparse.ArgumentParser) -> None:
        super().register_all_arguments(arg_parser)
        arg_parser.formatter_class = argparse.RawDescriptionHelpFormatter
        arg_parser.epilog = _epilog()


def _rewrite_pipeline_for_target(argv: list[str]) -> list[str]:
    """`-p default --target ptx` runs the default pipeline for the nvptx backend."""
    args = list(argv)
    target = None
    for i, a in enumerate(args):
        if a in ("-t", "--target") and i + 1 < len(args):
            target = args[i + 1]
        elif a.startswith("--target="):
            target = a.split("=", 1)[1]
    if target is None or not target.startswith("ptx"):
        return args
    for i, a in enumerate(args):
        if a in ("-p", "--passes") and i + 1 < len(args):
            specs = args[i + 1].split(",")
            args[i + 1] = ",".join(
                "default{target=nvptx cpu=sm_90}" if s.strip() == "default" else s
                for s in specs
            )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = _rewrite_pipeline_for_target(list(sys.argv[1:] if argv is None else argv))
    argv = [a for a in argv if a != "-"]  # `-` (stdin) is xdsl-opt's default input
    try:
        BSOptMain(description="BrainSlug optimizer driver", args=argv).run()
    except ParseError as e:
        print(f"bs-opt: error: {e}", file=sys.stderr)
        return 1
    except (DiagnosticException, ArgSpecParseError) as e:
        print(f"bs-opt: error: {e}", file=sys.stderr)
        return 1
    except UnicodeDecodeError as e:
        where = next((a for a in argv if not a.startswith("-") and a.endswith(".mlir")), "input")
        print(f"bs-opt: error: {where} is not UTF-8 text (byte {e.object[e.start]:#04x} at "
              f"offset {e.start}): expected MLIR source", file=sys.stderr)
        return 1
    except SystemExit as e:
        return int(e.code or 0) if isinstance(e.code, int) else 1
    except Exception as e:  # a pass failed on IR it can't handle: report, no traceback
        print(f"bs-opt: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
