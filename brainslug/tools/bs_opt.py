"""`bs-opt`: BrainSlug's mlir-opt. Runs named passes on textual IR.

    bs-opt FILE|- [-p PIPELINE] [--target mlir|llvm-ir|asm|ptx] [--traceback]

Malformed IR, unknown ops or passes and verifier failures print a located
diagnostic and exit with status 1, never a Python traceback:

    FILE:LINE:COL: error: MESSAGE
      <the source line>
           ^~~~~~~~~~~~

A verifier error names the op that failed to verify, at its name in the source
(as mlir-opt does). xDSL's parser keeps no operation -> position map, so bs-opt
parses with `LocatingParser`, which records where each operation's name is.
The failing op is the one whose `Operation.verify` / `Operation.emit_error`
(xDSL's only ways to tie an error to an op, the latter also used by the pattern
rewriter for the op a pattern was matching) is innermost on the exception's
traceback; an op created by a pass is reported at the closest enclosing op that
came from the source. A pass that fails with any other Python exception is an
internal error:

    FILE:LINE:COL: error: internal error in pass NAME: TYPE: MESSAGE

`--traceback` also prints the Python traceback. (Not `BRAINSLUG_STRICT`: the
test suite sets that one for every test, and bs-opt's own tests want what a
user sees.)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO

from xdsl.context import Context
from xdsl.dialects import llvm
from xdsl.dialects.builtin import FileLineColLoc, ModuleOp
from xdsl.ir import Operation
from xdsl.parser import Parser
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import (
    ArgSpecParseError,
    DiagnosticException,
    MultipleSpansParseError,
    ParseError,
)
from xdsl.utils.lexer import Span
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


# ---------------------------------------------------------------------------
# Where each parsed operation is
# ---------------------------------------------------------------------------

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.$-")

_SPAN_ATTR = "bs_opt_span"
"""Set on an exception raised while an operation was being parsed: the `Span`
of the innermost such operation's name."""

_AFTER_ATTR = "bs_opt_after"
"""Set on a `DiagnosticException` raised by the verification between passes:
the name of the pass that ran last (None: the input itself)."""


def _op_name_span(first: Span) -> Span:
    """The span of an operation's name, from the span of its first token: the
    first result in `%a, %b = nn.op ...`, else the name itself (a bare or a
    quoted generic name). mlir-opt locates an op at its name too."""
    text = first.input.content
    assert isinstance(text, str)
    pos = first.start
    if text.startswith("%", pos):
        eq = text.find("=", pos)  # a result list holds no `=`
        if eq < 0:
            return first
        pos = eq + 1
        while pos < len(text) and text[pos].isspace():
            pos += 1
    end = pos
    if text.startswith('"', pos):
        close = text.find('"', pos + 1)
        end = len(text) if close < 0 else close + 1
    else:
        while end < len(text) and text[end] in _NAME_CHARS:
            end += 1
    end = min(max(end, pos + 1), len(text))
    return Span(min(pos, end), end, first.input, first.line_offset)


class LocatingParser(Parser):
    """xDSL's `Parser`, which also records in `positions` where each operation
    it parses has its name (xDSL keeps no such map: an op's `location` is only
    set by an explicit `loc(...)`). An exception other than a `ParseError`
    raised while an operation is parsed (its builder rejecting what it was
    given) gets the span of the innermost one being parsed as `bs_opt_span`."""

    def __init__(
        self,
        ctx: Context,
        input: str | bytes,
        name: str,
        positions: dict[Operation, Span],
        line_offset: int = 0,
    ) -> None:
        super().__init__(ctx, input, name)
        self.positions = positions
        self.line_offset = line_offset

    def parse_operation(self) -> Operation:
        first = dataclasses.replace(self._current_token.span, line_offset=self.line_offset)
        try:
            op = super().parse_operation()
        except ParseError:
            raise
        except Exception as e:
            if getattr(e, _SPAN_ATTR, None) is None:
                setattr(e, _SPAN_ATTR, _op_name_span(first))
            raise
        self.positions[op] = _op_name_span(first)
        return op


# ---------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------


def _excerpt(span: Span) -> str:
    """The source line of `span` with a caret line under it, as mlir-opt
    prints them: `^` at the start, `~` along the rest of the span on that line."""
    inp = span.input
    start = inp.get_start_of_line(span.start)
    end = inp.get_end_of_line(span.start)
    content = inp.content[start:end]
    line = (content.decode("utf-8", "replace") if isinstance(content, bytes)
            else content).removesuffix("\r")
    col = min(span.start - start, len(line))
    width = max(1, min(span.end - span.start, len(line) - col))
    return f"{line}\n{' ' * col}^{'~' * (width - 1)}"


def _located(span: Span, severity: str, msg: str) -> str:
    """`FILE:LINE:COL: SEVERITY: MSG`, the source line and a caret line."""
    return f"{span.get_location()}: {severity}: {msg}\n{_excerpt(span)}"


def _tb_frames(exc: BaseException) -> Iterator[TracebackType]:
    """The traceback entries of `exc`, innermost first."""
    entries: list[TracebackType] = []
    tb = exc.__traceback__
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    return reversed(entries)


_OP_CODES = (Operation.verify.__code__, Operation.emit_error.__code__)


def _failing_ops(exc: BaseException) -> list[Operation]:
    """The ops `exc` is tied to, innermost first: the `self` of each
    `Operation.verify` / `Operation.emit_error` on its traceback (the op that
    failed to verify; the op a rewrite pattern was matching), else the `op`
    being processed by the innermost frame that has one (not the module)."""
    ops: list[Operation] = []
    for tb in _tb_frames(exc):
        frame = tb.tb_frame
        if frame.f_code in _OP_CODES:
            op = frame.f_locals.get("self")
            if isinstance(op, Operation) and all(op is not o for o in ops):
                ops.append(op)
    if ops:
        return ops
    for tb in _tb_frames(exc):
        op = tb.tb_frame.f_locals.get("op")
        if isinstance(op, Operation) and not isinstance(op, ModuleOp):
            return [op]
    return []


def _failing_pass(exc: BaseException) -> str | None:
    """The name of the innermost pass whose `apply` is on `exc`'s traceback
    (`default` runs its passes from its own `apply`: the one that failed)."""
    for tb in _tb_frames(exc):
        frame = tb.tb_frame
        p = frame.f_locals.get("self")
        if frame.f_code.co_name == "apply" and isinstance(p, ModulePass):
            return p.name
    return None


class BSOptMain(xDSLOptMain):
    """xdsl-opt with BrainSlug's dialects, passes and targets, and located
    diagnostics (`diagnose`)."""

    positions: dict[Operation, Span]
    """Where each parsed operation's name is (see `LocatingParser`)."""

    def __init__(self, description: str = "BrainSlug optimizer driver",
                 args: Sequence[str] | None = None) -> None:
        self.positions = {}
        self._line_offset = 0
        super().__init__(description=description, args=args)

    def register_all_dialects(self) -> None:
        for d in (*upstream_dialects(), *brainslug_dialects()):
            if d.name not in self.ctx.registered_dialect_names:
                self.ctx.register_dialect(d.name, lambda d=d: d)

    def register_all_frontends(self) -> None:
        super().register_all_frontends()

        def parse_mlir(io: IO[bytes]) -> ModuleOp:
            parser = LocatingParser(self.ctx, io.read(), self.get_input_name(),
                                    self.positions, self._line_offset)
            return parser.parse_module(not self.args.no_implicit_module)

        self.available_frontends["mlir"] = parse_mlir

    def parse_chunk(self, chunk: IO[bytes], file_extension: str,
                    start_offset: int = 0) -> ModuleOp | None:
        self._line_offset = start_offset  # the chunk's first line (--split-input-file)
        return super().parse_chunk(chunk, file_extension, start_offset)

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
        arg_parser.add_argument(
            "--traceback", default=False, action="store_true",
            help="after an error's diagnostic, also print the Python traceback")
        arg_parser.formatter_class = argparse.RawDescriptionHelpFormatter
        arg_parser.epilog = _epilog()

    def setup_pipeline(self) -> None:
        super().setup_pipeline()
        verify = self.pipeline.callback
        if verify is None:
            return

        def callback(previous: ModulePass | None, module: ModuleOp,
                     next_pass: ModulePass | None) -> None:
            try:
                verify(previous, module, next_pass)
            except DiagnosticException as e:
                setattr(e, _AFTER_ATTR, None if previous is None else previous.name)
                raise

        self.pipeline = dataclasses.replace(self.pipeline, callback=callback)

    # -- diagnostics ---------------------------------------------------------

    def position_of(self, op: Operation) -> tuple[Span | FileLineColLoc, Operation] | None:
        """Where `op` is in the source, or if a pass built it, the closest op
        around it that came from the source (and which op that is). An
        explicit `loc("file":line:col)` wins, as in mlir-opt."""
        cur: Operation | None = op
        while cur is not None:
            if isinstance(cur.location, FileLineColLoc):
                return cur.location, cur
            if (span := self.positions.get(cur)) is not None:
                return span, cur
            cur = cur.parent_op()
        return None

    def diagnose(self, e: BaseException) -> str:
        """The diagnostic for an exception out of `run` (not a `ParseError`)."""
        file = self.get_input_name()
        pass_name = _failing_pass(e)
        internal = not isinstance(e, DiagnosticException)
        if internal:
            where = f" in pass {pass_name}" if pass_name else ""
            msg = f"internal error{where}: {type(e).__name__}: {e}"
        else:
            msg = str(e)
        notes: list[str] = []
        if not internal and pass_name is not None:
            notes.append(f"while running pass {pass_name}")
        if (after := getattr(e, _AFTER_ATTR, None)) is not None:
            notes.append(f"the IR does not verify after pass {after}")

        if (span := getattr(e, _SPAN_ATTR, None)) is not None:  # raised while parsing
            name = span.text.strip('"')
            if isinstance(e, DiagnosticException | ValueError):  # a builder rejected it
                msg = str(e) if str(e).startswith(name) else f"{name}: {e}"
            else:
                msg = f"internal error while parsing {name}: {type(e).__name__}: {e}"
            lines = [_located(span, "error", msg)]
        else:
            found = None
            ops = _failing_ops(e)
            for op in ops:  # the innermost op that has a position of its own
                if (where := self.position_of(op)) is not None and where[1] is op:
                    found = op, where
                    break
            if found is None:  # else the innermost with a position around it
                found = next(((op, w) for op in ops if (w := self.position_of(op))), None)
            if found is None:
                lines = [f"{file}: error: {msg}"]
                if ops:
                    notes.insert(0, f"while processing a {ops[0].name} op built by a pass")
            else:
                op, (at, at_op) = found
                if not internal and not msg.startswith(op.name):
                    msg = f"{op.name}: {msg}"  # as the nn verifiers word theirs
                if isinstance(at, FileLineColLoc):
                    prefix = f"{at.filename.data}:{at.line.data}:{at.column.data}"
                    lines = [f"{prefix}: error: {msg}"]
                    note_at = prefix
                else:
                    lines = [_located(at, "error", msg)]
                    note_at = str(at.get_location())
                if at_op is not op:
                    notes.insert(0, f"the {op.name} op that failed was built by a pass; "
                                    f"this is the {at_op.name} op around it")
                lines += [f"{note_at}: note: {n}" for n in notes]
                notes = []
        lines += [f"{file}: note: {n}" for n in notes]
        return "\n".join(lines)


def _parse_error(e: ParseError) -> str:
    """A `ParseError` as `FILE:LINE:COL: error: MESSAGE` and the source line."""
    text = _located(e.span, "error", e.msg)
    if isinstance(e, MultipleSpansParseError):
        if e.ref_text:
            text += "\n" + e.ref_text.rstrip("\n")
        for span, note in e.refs:
            text += "\n" + _located(span, "note", note or "here")
    return text


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
    show_traceback = "--traceback" in argv
    tool: BSOptMain | None = None
    try:
        tool = BSOptMain(description="BrainSlug optimizer driver", args=argv)
        tool.run()
    except SystemExit as e:
        return int(e.code or 0) if isinstance(e.code, int) else 1
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # a diagnostic, never a traceback (unless asked for)
        print(_diagnostic(e, tool, argv), file=sys.stderr)
        if show_traceback:
            traceback.print_exception(e, file=sys.stderr)
        return 1
    return 0


def _diagnostic(e: BaseException, tool: BSOptMain | None, argv: Sequence[str]) -> str:
    if isinstance(e, ParseError):
        return _parse_error(e)
    if isinstance(e, UnicodeDecodeError):
        where = next((a for a in argv if not a.startswith("-") and a.endswith(".mlir")), "input")
        return (f"bs-opt: error: {where} is not UTF-8 text (byte {e.object[e.start]:#04x} at "
                f"offset {e.start}): expected MLIR source")
    if isinstance(e, ArgSpecParseError):
        return f"bs-opt: error: {e}"
    if tool is not None and (isinstance(e, DiagnosticException) or _failing_pass(e) is not None
                             or getattr(e, _SPAN_ATTR, None) is not None):
        return tool.diagnose(e)
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"bs-opt: error: {e.filename}: {e.strerror}"
    if isinstance(e, DiagnosticException):
        return f"bs-opt: error: {e}"
    return f"bs-opt: error: {type(e).__name__}: {e}"


if __name__ == "__main__":
    sys.exit(main())
