"""Worst-case stack of kws_classify: the deepest path through the call graph that GCC writes
with -fcallgraph-info=su (each function's frame, and its calls), summed from the entry point.

A function without GCC's figure (an archive member of libm/libc/libgcc) gets its frame from its
prologue in the linked image (push, vpush, sub sp), and its calls from its branch-and-link
instructions. Recursion or a dynamic frame is refused: the bound would not hold."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

from fsdd.errors import DeployError

_NODE = re.compile(r'node: \{ title: "([^"]+)" label: "([^"\\]+)\\n[^"]*?(?:\\n(\d+) bytes \(([^)]+)\))?"')
_EDGE = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')
_FUNC = re.compile(r"^[0-9a-f]+ <([^>]+)>:$")
_PUSH = re.compile(r"\b(push|stmdb\s+sp!,|vpush)(?:\.w)?\s+\{([^}]*)\}")
_SUB_SP = re.compile(r"\bsub(?:\.w|w)?\s+sp,\s*(?:sp,\s*)?#(\d+)")
_CALL = re.compile(r"\b(?:bl|blx|b\.w)\s+[0-9a-f]+ <([^>+]+)>")


def _register_count(regs: str) -> int:
    n = 0
    for part in regs.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-")
            n += int(b[1:]) - int(a[1:]) + 1
        elif part:
            n += 1
    return n


def _disassembly(elf: Path, objdump: str) -> dict[str, tuple[int, set[str]]]:
    """Frame bytes and callees of every function of the image, from its instructions."""
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(elf)], capture_output=True, text=True, check=True).stdout
    out: dict[str, tuple[int, set[str]]] = {}
    name, frame, calls = None, 0, set()
    for line in text.splitlines():
        m = _FUNC.match(line)
        if m:
            if name:
                out[name] = (frame, calls)
            name, frame, calls = m.group(1), 0, set()
            continue
        if name is None:
            continue
        if (p := _PUSH.search(line)) is not None:
            frame += _register_count(p.group(2)) * (8 if p.group(1) == "vpush" else 4)
        elif (s := _SUB_SP.search(line)) is not None:
            frame += int(s.group(1))
        if (c := _CALL.search(line)) is not None and c.group(1) != name:
            calls.add(c.group(1))
    if name:
        out[name] = (frame, calls)
    return out


def frames(ci_files: list[Path]) -> dict[str, int]:
    """Each function's own frame (bytes) by name, GCC's clone suffixes (.constprop.0, ...) dropped."""
    out: dict[str, int] = {}
    for ci in ci_files:
        for _, label, size, _ in _NODE.findall(ci.read_text()):
            if size:
                name = label.split(".")[0]
                out[name] = max(out.get(name, 0), int(size))
    return out


def worst_stack(ci_files: list[Path], elf: Path, entry: str = "kws_classify", objdump: str = "arm-none-eabi-objdump") -> int:
    """Bytes of stack that `entry` can use at most, calls included (not the caller's frame)."""
    frames: dict[str, int] = {}
    edges: dict[str, set[str]] = {}
    plain: dict[str, str] = {}  # "file.c:fn" -> "fn"
    for ci in ci_files:
        text = ci.read_text()
        for title, label, size, kind in _NODE.findall(text):
            plain[title] = label
            if size:
                if kind != "static":
                    raise DeployError(f"{ci}: {label} has a {kind} stack frame; its worst case cannot be bounded")
                frames[title] = int(size)
        for src, dst in _EDGE.findall(text):
            edges.setdefault(src, set()).add(dst)
    by_name = {plain.get(t, t): t for t in frames}
    asm: dict[str, tuple[int, set[str]]] | None = None

    @cache
    def depth(node: str, path: tuple[str, ...] = ()) -> int:
        nonlocal asm
        if node in path:
            raise DeployError(f"{entry} calls itself through {node}: no stack bound")
        key = node if node in frames else by_name.get(plain.get(node, node))
        if key is not None:
            callees = edges.get(key, set()) | edges.get(node, set())
            return frames[key] + max((depth(c, (*path, node)) for c in callees), default=0)
        if asm is None:
            asm = _disassembly(elf, objdump)
        name = plain.get(node, node)
        if name not in asm:
            raise DeployError(f"no stack figure for {name} (called from {path[-1] if path else entry})")
        frame, callees = asm[name]
        return frame + max((depth(c, (*path, name)) for c in callees), default=0)

    return depth(entry)
