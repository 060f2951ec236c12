"""Reading a GNU ld link map (-Wl,-Map): every input section placed in the image, with its size and
the object (or archive member) it came from, and which file's reference pulled each archive member in.

Written by hand: the map is plain text, and no maintained Python parser of GNU ld maps exists."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_MEMBER = re.compile(r"^(\S+\.a\(\S+\))$")
_REFERRER = re.compile(r"^\s+(\S+) \((\S+)\)$")
_OUTPUT = re.compile(r"^(\.\S+|\S+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)")
_INPUT = re.compile(r"^ (\S+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)(?:\s+(\S.*))?$")
_INPUT_NAME = re.compile(r"^ (\S+)$")
_INPUT_REST = re.compile(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)(?:\s+(\S.*))?$")
FLASH_OUTPUTS = (".text", ".ARM.extab", ".ARM.exidx", ".preinit_array", ".init_array", ".fini_array", ".data")
RAM_OUTPUTS = (".data", ".bss")


@dataclass(frozen=True)
class InputSection:
    output: str  # output section: .text, .data, .bss, ...
    name: str  # input section, e.g. .text.kws_classify; "*fill*" for alignment padding
    size: int  # bytes
    origin: str  # object file or "lib.a(member.o)"; for fill, the origin of the section it precedes


@dataclass(frozen=True)
class LinkMap:
    sections: tuple[InputSection, ...]
    referrers: dict[str, str]  # archive member -> the file whose undefined symbol pulled it in

    def origins_of(self, is_library: Callable[[str], bool]) -> set[str]:
        """The origins that belong to the library: its objects, and archive members pulled in
        by them (directly or through other such members)."""
        out = {s.origin for s in self.sections if is_library(s.origin)}
        changed = True
        while changed:
            changed = False
            for member, by in self.referrers.items():
                if member not in out and by in out:
                    out.add(member)
                    changed = True
        return out


def parse_map(text: str) -> LinkMap:
    lines = text.splitlines()
    referrers: dict[str, str] = {}
    i = 0
    if "Archive member included to satisfy reference by file (symbol)" in text:
        i = lines.index("Archive member included to satisfy reference by file (symbol)") + 1
        while i < len(lines) and not lines[i].startswith(("Discarded input sections", "Memory Configuration")):
            m = _MEMBER.match(lines[i])
            if m and i + 1 < len(lines) and (r := _REFERRER.match(lines[i + 1])):
                referrers[m.group(1)] = r.group(1)
            i += 1
    i = lines.index("Linker script and memory map") + 1
    sections: list[InputSection] = []
    output = ""
    pending_fill = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("OUTPUT("):
            break
        if line and not line[0].isspace():
            m = _OUTPUT.match(line)
            output = m.group(1) if m else line.split()[0]
            pending_fill = 0
        elif line.startswith(" *fill*"):
            m = re.match(r"^ \*fill\*\s+0x[0-9a-f]+\s+0x([0-9a-f]+)", line)
            pending_fill += int(m.group(1), 16) if m else 0
        elif (m := _INPUT.match(line)) and not line.startswith(" *"):
            name, size, origin = m.group(1), int(m.group(3), 16), (m.group(4) or "").strip()
            sections += _placed(output, name, size, origin, pending_fill)
            pending_fill = 0
        elif (m := _INPUT_NAME.match(line)) and not line.startswith(" *") and i + 1 < len(lines):
            rest = _INPUT_REST.match(lines[i + 1])
            if rest:
                sections += _placed(output, m.group(1), int(rest.group(2), 16), (rest.group(3) or "").strip(), pending_fill)
                pending_fill = 0
                i += 1
        i += 1
    return LinkMap(tuple(sections), referrers)


def _placed(output: str, name: str, size: int, origin: str, fill: int) -> list[InputSection]:
    if size == 0 and fill == 0:
        return []
    out = [InputSection(output, name, size, origin)] if size else []
    if fill:
        out.append(InputSection(output, "*fill*", fill, origin))
    return out
