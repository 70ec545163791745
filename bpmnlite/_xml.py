"""Safe XML loading, naming helpers and diagram geometry for the BPMN parser.

Kept apart from :mod:`bpmnlite.parser` so the hostile-input defences (size,
DOCTYPE, depth and element limits) can be read and reviewed on their own, and
so the parser itself holds only process semantics. Diagram interchange (DI) is
here because it is pure geometry: shapes and edges, nothing that executes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeAlias, cast

from lxml import etree

from .errors import ModelError, Problem
from .model import Bounds, Diagram, Edge, ExtensionElement, Shape

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
BPMNDI_NS = "http://www.omg.org/spec/BPMN/20100524/DI"
DC_NS = "http://www.omg.org/spec/DD/20100524/DC"
DI_NS = "http://www.omg.org/spec/DD/20100524/DI"
BPMNLITE_NS = "http://bpmnlite.org/schema/bpmn"
CAMUNDA_NS = "http://camunda.org/schema/1.0/bpmn"
FLOWABLE_NS = "http://flowable.org/bpmn"
ACTIVITI_NS = "http://activiti.org/bpmn"
ZEEBE_NS = "http://camunda.org/schema/zeebe/1.0"

#: Namespaces whose attributes and elements are named ``prefix:local``.
CANONICAL_PREFIXES: dict[str, str] = {
    BPMNLITE_NS: "bpmnlite",
    CAMUNDA_NS: "camunda",
    FLOWABLE_NS: "flowable",
    ACTIVITI_NS: "activiti",
    ZEEBE_NS: "zeebe",
}

DOCTYPE_REFUSED = "DOCTYPE is not allowed (entity expansion and external DTDs are refused)"

Element: TypeAlias = "etree._Element"
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ParserLimits:
    """Upper bounds that keep a hostile document from exhausting the host.

    ``max_bytes`` is checked before any parsing. libxml2 itself refuses trees
    deeper than 256 levels (``huge_tree`` stays off), so a ``max_depth`` above
    256 does not raise that ceiling.
    """

    max_bytes: int = 16 * 1024 * 1024
    max_depth: int = 256
    max_elements: int = 500_000


def hardened_parser() -> etree.XMLParser:
    """An lxml parser that never loads a DTD, expands an entity or opens a URL."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
    )


def _hardened_pull_parser() -> etree.XMLPullParser:
    """The same settings as :func:`hardened_parser`, fed chunk by chunk."""
    return etree.XMLPullParser(
        events=("start", "end"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
    )


def line_of(el: Element) -> int:
    """The element's line in the source, 0 when lxml does not know it."""
    return cast("int | None", el.sourceline) or 0


def local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


@functools.lru_cache(maxsize=4096)
def canonical_name(name: str) -> str:
    """``{ns}local`` -> ``prefix:local`` for known namespaces, else unchanged.

    Cached: a model repeats a few dozen attribute and tag names thousands of times.
    """
    if name[:1] != "{":
        return name
    ns, _, local = name[1:].partition("}")
    prefix = CANONICAL_PREFIXES.get(ns)
    return f"{prefix}:{local}" if prefix else name


def namespaced_attributes(el: Element) -> dict[str, str]:
    """Every attribute of ``el`` that lives in a namespace, canonically named."""
    return {canonical_name(k): v for k, v in cast("list[tuple[str, str]]", el.items()) if k[0] == "{"}


def extension_element(el: Element, line: Callable[[Element], int] = line_of) -> ExtensionElement:
    """Copy an element under ``extensionElements`` into the immutable model."""
    attrs = {canonical_name(k): v for k, v in cast("list[tuple[str, str]]", el.items())}
    text = el.text.strip() if el.text else ""
    children = tuple(extension_element(c, line) for c in el.iterchildren() if isinstance(c.tag, str))
    return ExtensionElement(
        tag=canonical_name(str(el.tag)),
        attributes=attrs,
        text=text or None,
        children=children,
        line=line(el),
    )


def child_elements(el: Element) -> Iterator[Element]:
    """Element children only (processing instructions and entities skipped)."""
    for child in el.iterchildren():
        if isinstance(child.tag, str):
            yield child


def text_of(el: Element | None) -> str | None:
    """The element's text content, stripped; None if absent or blank."""
    if el is None:
        return None
    text = "".join(cast("Iterator[str]", el.itertext())).strip()
    return text or None


def strip_ref(value: str | None) -> str | None:
    """Drop a QName prefix from an id reference (ids are NCNames, never contain ':')."""
    if value is None:
        return None
    value = value.strip()
    if ":" in value:
        value = value.rpartition(":")[2]
    return value or None


# --- loading -------------------------------------------------------------


def load(
    source: str | bytes | os.PathLike[str], source_name: str | None, limits: ParserLimits
) -> tuple[Element, str | None, LineFinder]:
    """Read and parse ``source`` safely.

    Returns:
        The root element, the source name and the line finder for its elements.

    Raises:
        ModelError: unreadable, too large, DOCTYPE, not well-formed, too deep
            or too many elements.
    """
    data: str | bytes
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str) and source.lstrip(" \t\r\n\ufeff").startswith("<"):
        data = source
    else:
        path = Path(os.fspath(source))
        if source_name is None:
            source_name = path.name
        data = _read_file(path, limits, source_name)

    def refuse(message: str, line: int | None = None) -> ModelError:
        return ModelError([Problem(message, None, line, source_name)], summary=f"cannot parse: {message}")

    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        raise refuse(f"document too large: {size} bytes (limit {limits.max_bytes})")
    text = _markup_text(data)
    if _prolog_has_doctype(text):
        raise refuse(DOCTYPE_REFUSED)
    root = _parse_limited(data, limits, refuse)
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.externalDTD is not None or docinfo.doctype:
        raise refuse(DOCTYPE_REFUSED)
    return root, source_name, LineFinder(text)


def _read_file(path: Path, limits: ParserLimits, source_name: str | None) -> bytes:
    def fail(message: str) -> ModelError:
        return ModelError([Problem(message, None, None, source_name)], summary=f"cannot parse: {message}")

    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise fail(f"document too large: {size} bytes (limit {limits.max_bytes})")
        with path.open("rb") as fh:
            data = fh.read(limits.max_bytes + 1)
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror or exc}") from exc
    return data


def _markup_text(data: str | bytes) -> str:
    """The document as text good enough to find markup and count lines.

    ASCII-compatible encodings are read as latin-1: markup characters and
    line feeds are single ASCII bytes in all of them, so nothing can hide.
    """
    if isinstance(data, str):
        return data
    for bom, codec in (
        (b"\xff\xfe\x00\x00", "utf-32-le"),
        (b"\x00\x00\xfe\xff", "utf-32-be"),
        (b"\xff\xfe", "utf-16-le"),
        (b"\xfe\xff", "utf-16-be"),
    ):
        if data.startswith(bom):
            return data[len(bom) :].decode(codec, "ignore")
    if data.startswith(b"<\x00"):
        return data.decode("utf-16-le", "ignore")
    if data.startswith(b"\x00<"):
        return data.decode("utf-16-be", "ignore")
    return data.decode("latin-1")


def _prolog_has_doctype(text: str) -> bool:
    """True if a DOCTYPE appears before the root element.

    Checked before lxml sees the document so that no declaration is ever
    processed, not even a harmless-looking one.
    """
    pos, end = 0, len(text)
    while pos < end:
        if text[pos] in " \t\r\n\ufeff\xef\xbb\xbf":
            pos += 1
        elif text.startswith("<?", pos):
            close = text.find("?>", pos + 2)
            if close < 0:
                return False
            pos = close + 2
        elif text.startswith("<!--", pos):
            close = text.find("-->", pos + 4)
            if close < 0:
                return False
            pos = close + 3
        else:
            return text.startswith("<!DOCTYPE", pos)
    return False


class LineFinder:
    """Maps an element to the line its start tag begins on.

    libxml2 records the line where a start tag *ends*; for a tag written over
    several lines (common in hand-written models) that is not where a reader
    looks. No raw ``<`` can occur inside a tag, so the nearest earlier line
    holding a ``<`` is where the tag began.
    """

    _MAX_LINE = 4096  # a longer line is minified XML: the search would cost more than it tells
    _MAX_BACK = 200

    def __init__(self, text: str) -> None:
        self._lines = text.split("\n")
        self._needles: dict[tuple[str, str | None], str] = {}

    def __call__(self, el: Element) -> int:
        end = cast("int | None", el.sourceline) or 0
        lines = self._lines
        if end <= 1 or end > len(lines):
            return end
        line = lines[end - 1]
        if len(line) > self._MAX_LINE:
            return end
        key = (str(el.tag), el.prefix)
        needle = self._needles.get(key)
        if needle is None:
            local = local_name(key[0])
            needle = self._needles[key] = f"<{key[1]}:{local}" if key[1] else f"<{local}"
        at = line.find(needle)
        while at >= 0:
            if line[at + len(needle) : at + len(needle) + 1] in ("", " ", "\t", "\r", "/", ">"):
                return end
            at = line.find(needle, at + 1)
        for number in range(end - 1, max(end - self._MAX_BACK, 1) - 1, -1):
            candidate = lines[number - 1]
            if len(candidate) > self._MAX_LINE:
                return end
            if "<" in candidate:
                return number
        return end


def _parse_limited(data: str | bytes, limits: ParserLimits, refuse: _Refuse) -> Element:
    """Parse incrementally so depth and element limits stop a document early."""
    parser = _hardened_pull_parser()
    depth = count = 0
    try:
        for start in range(0, len(data), _CHUNK):
            parser.feed(data[start : start + _CHUNK])
            for event, item in parser.read_events():
                if event == "start":
                    el = cast(Element, item)
                    depth += 1
                    count += 1
                    if depth > limits.max_depth:
                        raise refuse(f"document too deep: more than {limits.max_depth} levels", line_of(el))
                    if count > limits.max_elements:
                        raise refuse(f"too many elements: more than {limits.max_elements}", line_of(el))
                else:
                    depth -= 1
        root = parser.close()
    except etree.XMLSyntaxError as exc:
        message = str(exc.msg or exc)
        if "Excessive depth" in message or "too deep" in message.lower():
            raise refuse(f"document too deep: more than {min(limits.max_depth, 256)} levels", exc.lineno) from None
        raise refuse(f"not well-formed XML: {message}", exc.lineno or None) from None
    return root


class _Refuse(Protocol):
    """Signature of the error factory passed to :func:`_parse_limited`."""

    def __call__(self, message: str, line: int | None = None) -> ModelError: ...


# --- diagram interchange ------------------------------------------------------


def diagram(el: Element) -> Diagram:
    """One ``bpmndi:BPMNDiagram``: the shapes and edges of its plane.

    Diagram data is cosmetic: an incomplete or unreadable shape or edge is
    dropped rather than making the whole model unusable.
    """
    shapes: list[Shape] = []
    edges: list[Edge] = []
    plane = el.find(f"{{{BPMNDI_NS}}}BPMNPlane")
    if plane is not None:
        for child in plane:
            if child.tag == f"{{{BPMNDI_NS}}}BPMNShape":
                if (shape := _shape(child)) is not None:
                    shapes.append(shape)
            elif child.tag == f"{{{BPMNDI_NS}}}BPMNEdge":
                if (edge := _edge(child)) is not None:
                    edges.append(edge)
    plane_element = strip_ref(plane.get("bpmnElement")) if plane is not None else None
    return Diagram(el.get("id") or "", el.get("name"), plane_element, tuple(shapes), tuple(edges))


def _optional_bool(el: Element, attr: str) -> bool | None:
    value = el.get(attr)
    return None if value is None else value.strip().lower() == "true"


def _shape(el: Element) -> Shape | None:
    bounds = el.find(f"{{{DC_NS}}}Bounds")
    element = strip_ref(el.get("bpmnElement"))
    if bounds is None or element is None:
        return None
    try:
        box = Bounds(*(float(bounds.get(k) or 0) for k in ("x", "y", "width", "height")))
    except ValueError:
        return None
    return Shape(
        el.get("id") or f"{element}_di",
        element,
        box,
        _optional_bool(el, "isExpanded"),
        _optional_bool(el, "isHorizontal"),
    )


def _edge(el: Element) -> Edge | None:
    element = strip_ref(el.get("bpmnElement"))
    if element is None:
        return None
    try:
        points = tuple(
            (float(p.get("x") or 0), float(p.get("y") or 0)) for p in el.iterchildren(f"{{{DI_NS}}}waypoint")
        )
    except ValueError:
        return None
    return Edge(el.get("id") or f"{element}_di", element, points)
