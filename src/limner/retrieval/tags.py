"""One file's definitions, references and chunks, from tree-sitter.

Pure: bytes in, records out, so the indexer can run it in worker processes.
The queries are ours (per language, written for the grammar wheels limner
ships); a language whose grammar or query fails to load still gets sliding
windows, so retrieval works on every text file.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

WINDOW = 40         # lines per sliding window (Cody uses 50; shorter fits budgets better)
STRIDE = 30         # overlap so a block cut at a window edge is whole in the next one
MAX_DEF_LINES = 60  # a def chunk is its head: signature, docstring, first lines
MAX_SIG = 200       # characters of a one-line signature

# Definitions: each pattern captures @name and one @def.<kind>.
DEF_QUERIES = {
    "python": """
(function_definition name: (identifier) @name) @def.function
(class_definition name: (identifier) @name) @def.class
(module (expression_statement (assignment left: (identifier) @name)) @def.constant)
""",
    "javascript": """
(function_declaration name: (identifier) @name) @def.function
(generator_function_declaration name: (identifier) @name) @def.function
(class_declaration name: (identifier) @name) @def.class
(method_definition name: (property_identifier) @name) @def.method
(lexical_declaration (variable_declarator name: (identifier) @name
  value: [(arrow_function) (function_expression)])) @def.function
(variable_declaration (variable_declarator name: (identifier) @name
  value: [(arrow_function) (function_expression)])) @def.function
""",
    "typescript": """
(function_declaration name: (identifier) @name) @def.function
(generator_function_declaration name: (identifier) @name) @def.function
(class_declaration name: (type_identifier) @name) @def.class
(abstract_class_declaration name: (type_identifier) @name) @def.class
(interface_declaration name: (type_identifier) @name) @def.interface
(type_alias_declaration name: (type_identifier) @name) @def.type
(enum_declaration name: (identifier) @name) @def.enum
(method_definition name: (property_identifier) @name) @def.method
(lexical_declaration (variable_declarator name: (identifier) @name
  value: [(arrow_function) (function_expression)])) @def.function
""",
    "go": """
(function_declaration name: (identifier) @name) @def.function
(method_declaration name: (field_identifier) @name) @def.method
(type_spec name: (type_identifier) @name) @def.type
""",
    "rust": """
(function_item name: (identifier) @name) @def.function
(struct_item name: (type_identifier) @name) @def.struct
(enum_item name: (type_identifier) @name) @def.enum
(trait_item name: (type_identifier) @name) @def.trait
(type_item name: (type_identifier) @name) @def.type
(macro_definition name: (identifier) @name) @def.macro
(const_item name: (identifier) @name) @def.constant
""",
    "java": """
(class_declaration name: (identifier) @name) @def.class
(interface_declaration name: (identifier) @name) @def.interface
(enum_declaration name: (identifier) @name) @def.enum
(record_declaration name: (identifier) @name) @def.class
(method_declaration name: (identifier) @name) @def.method
(constructor_declaration name: (identifier) @name) @def.method
""",
    "c": """
(function_definition declarator: (function_declarator declarator: (identifier) @name)) @def.function
(function_definition declarator: (pointer_declarator declarator:
  (function_declarator declarator: (identifier) @name))) @def.function
(declaration declarator: (function_declarator declarator: (identifier) @name)) @def.prototype
(struct_specifier name: (type_identifier) @name body: (_)) @def.struct
(union_specifier name: (type_identifier) @name body: (_)) @def.struct
(enum_specifier name: (type_identifier) @name body: (_)) @def.enum
(type_definition declarator: (type_identifier) @name) @def.type
(preproc_function_def name: (identifier) @name) @def.macro
(preproc_def name: (identifier) @name) @def.macro
""",
    "cpp": """
(function_definition declarator: (function_declarator declarator: (identifier) @name)) @def.function
(function_definition declarator: (function_declarator declarator: (field_identifier) @name)) @def.method
(function_definition declarator: (function_declarator
  declarator: (qualified_identifier name: (identifier) @name))) @def.method
(function_definition declarator: (function_declarator declarator:
  (qualified_identifier name: (qualified_identifier name: (identifier) @name)))) @def.method
(function_definition declarator: (pointer_declarator declarator:
  (function_declarator declarator: (identifier) @name))) @def.function
(declaration declarator: (function_declarator declarator: (identifier) @name)) @def.prototype
(field_declaration declarator: (function_declarator declarator: (field_identifier) @name)) @def.prototype
(class_specifier name: (type_identifier) @name body: (_)) @def.class
(struct_specifier name: (type_identifier) @name body: (_)) @def.struct
(enum_specifier name: (type_identifier) @name body: (_)) @def.enum
(type_definition declarator: (type_identifier) @name) @def.type
(namespace_definition name: (namespace_identifier) @name) @def.namespace
(preproc_function_def name: (identifier) @name) @def.macro
""",
}

# References: every identifier-like node (not comments or strings). Counted
# per file; the outline's graph only needs "file A uses name N k times".
REF_NODES = {
    "python": ("identifier",),
    "javascript": ("identifier", "property_identifier"),
    "typescript": ("identifier", "property_identifier", "type_identifier"),
    "go": ("identifier", "type_identifier", "field_identifier"),
    "rust": ("identifier", "type_identifier", "field_identifier"),
    "java": ("identifier", "type_identifier"),
    "c": ("identifier", "type_identifier", "field_identifier"),
    "cpp": ("identifier", "type_identifier", "field_identifier", "namespace_identifier"),
}

# Kinds whose text is worth a chunk of its own (a prototype or a constant is
# one line: the windows and the outline already carry it).
CHUNKED = frozenset({"function", "method", "class", "struct", "enum", "interface",
                     "trait", "type", "macro", "namespace"})

_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class Def:
    name: str
    kind: str
    line: int       # 1-based, first line of the definition
    end_line: int   # 1-based, inclusive
    depth: int      # nesting among this file's definitions (method in class = 1)
    signature: str  # the head only: never the body


@dataclass(frozen=True)
class Chunk:
    kind: str       # "def" or "window"
    name: str       # the definition's name; "" for a window
    start: int      # 1-based, inclusive
    end: int
    text: str


@lru_cache(maxsize=None)
def _queries(lang: str):
    """(def query, ref query) for `lang`, or None when the grammar is missing."""
    from limner.fim import treesitter

    language = treesitter.language(lang)
    if language is None or lang not in DEF_QUERIES:
        return None
    import tree_sitter

    refs = "[" + " ".join(f"({t})" for t in REF_NODES[lang]) + "] @ref"
    return tree_sitter.Query(language, DEF_QUERIES[lang]), tree_sitter.Query(language, refs)


def supported(lang: str | None) -> bool:
    try:
        return bool(lang) and _queries(lang) is not None
    except Exception:  # noqa: BLE001 - a query that does not compile = windows only
        return False


def _signature(node, data: bytes) -> str:
    """The definition's head: from its start to its body, whitespace collapsed."""
    body = node.child_by_field_name("body")
    end = body.start_byte if body is not None and body.start_byte > node.start_byte else node.end_byte
    head = data[node.start_byte:end].decode("utf-8", "replace")
    if body is None:  # a constant or prototype: its first line is enough
        head = head.split("\n", 1)[0]
    sig = _WS.sub(" ", head).strip()
    if sig.endswith("{"):
        sig = sig[:-1].rstrip()
    return sig if len(sig) <= MAX_SIG else sig[: MAX_SIG - 3] + "..."


def definitions_and_refs(data: bytes, lang: str) -> tuple[list[Def], dict[str, int]]:
    from limner.fim import treesitter
    import tree_sitter

    dq, rq = _queries(lang)
    tree = treesitter.parser(lang).parse(data)
    root = tree.root_node
    raw = []
    for _, caps in tree_sitter.QueryCursor(dq).matches(root):
        names = caps.get("name")
        kind = next((k[4:] for k in caps if k.startswith("def.")), None)
        if not names or kind is None:
            continue
        node = caps["def." + kind][0]
        name = names[0].text.decode("utf-8", "replace")
        # A node that ends at column 0 (a #define and its newline) ends on the line before.
        end = max(node.start_point[0] + 1, node.end_point[0] + (1 if node.end_point[1] else 0))
        raw.append((node.start_point[0] + 1, -end, name, kind, node))
    raw.sort(key=lambda r: (r[0], r[1], r[2]))
    defs: list[Def] = []
    stack: list[int] = []  # end lines of the enclosing definitions
    seen = set()
    for line, neg_end, name, kind, node in raw:
        end = -neg_end
        if (node.start_byte, name) in seen:  # two patterns matched one definition
            continue
        seen.add((node.start_byte, name))
        while stack and stack[-1] < line:
            stack.pop()
        depth = len(stack)
        if kind == "function" and depth and lang in ("python", "javascript", "typescript"):
            kind = "method"
        defs.append(Def(name, kind, line, end, depth, _signature(node, data)))
        if end > line:
            stack.append(end)
    counts: Counter = Counter()
    for nodes in tree_sitter.QueryCursor(rq).captures(root).values():
        counts.update(n.text for n in nodes)
    refs = {k.decode("utf-8", "replace"): v for k, v in counts.items()}
    return defs, refs


def chunks(lines: list[str], defs: list[Def]) -> list[Chunk]:
    """A chunk per definition (its head, MAX_DEF_LINES at most), plus windows."""
    out = []
    for d in defs:
        if d.kind not in CHUNKED or d.end_line <= d.line:
            continue
        end = min(d.end_line, d.line + MAX_DEF_LINES - 1)
        out.append(Chunk("def", d.name, d.line, end, "\n".join(lines[d.line - 1:end])))
    n = len(lines)
    start = 0
    while start < n:
        end = min(n, start + WINDOW)
        text = "\n".join(lines[start:end])
        if text.strip():
            out.append(Chunk("window", "", start + 1, end, text))
        if end == n:
            break
        start += STRIDE
    return out


def analyze(data: bytes, lang: str | None) -> tuple[list[Def], dict[str, int], list[Chunk]]:
    """Everything the index stores for one file. Unparsable languages get windows."""
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    defs: list[Def] = []
    refs: dict[str, int] = {}
    if supported(lang):
        defs, refs = definitions_and_refs(data, lang)
    return defs, refs, chunks(lines, defs)
