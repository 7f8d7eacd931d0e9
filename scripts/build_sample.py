#!/usr/bin/env python3
"""Build the bundled sample corpus in ``pajama/sample/``.

The folder is a tiny stand-in shaped like RedPajama-Data-1T-Sample: the same
eleven ``*_sample.jsonl`` file names, one ``{"text": ..., "meta": {...}}``
object per line.  It is NOT RedPajama data.  Every document is real,
human-written text that is available offline and permissively licensed:

=================  ==========================================================
file               documents
=================  ==========================================================
github             source files of Python's own test suite (PSF-2.0) and the
                   C examples shipped with zlib (Zlib / public domain)
book               one long "manual" per standard-library package, assembled
                   from its docstrings, plus the IDLE user guide (PSF-2.0)
wikipedia          the reference topics of ``pydoc_data.topics`` (PSF-2.0)
arxiv              prose comment blocks of standard-library modules
                   (PSF-2.0), zlib's technical notes (Zlib / public domain)
                   and the XZ Utils history (public domain)
stackexchange      question/answer pairs from the lsof (Purdue licence),
                   zlib (Zlib) and XZ Utils (public domain) FAQs
c4                 docstrings of single-file standard-library modules
                   (PSF-2.0)
cc_*               long descriptions (README pages) of installed,
                   permissively licensed PyPI packages, as recorded in their
                   ``*.dist-info/METADATA``
=================  ==========================================================

No text appears in more than one file.  Every document records its origin and
licence in ``meta``.

The build reads only local files (no network) and is deterministic: inputs are
sorted and every random choice uses a fixed seed, so two runs on the same
machine write byte-identical files.  The output depends on the Python version
(its standard library and ``ast.unparse``), on the Debian documentation files
present (``/usr/share/doc/{lsof,zlib1g-dev,xz-utils}``; missing ones are
skipped with a warning) and on the versions of the installed PyPI packages
named in ``README_PACKAGES``, so it may differ on another machine.

Usage::

    python scripts/build_sample.py [--output pajama/sample] [--seed 1234]
"""

from __future__ import annotations

import argparse
import ast
import gzip
import importlib.metadata
import json
import os
import platform
import random
import re
import sys
import sysconfig
import textwrap
import tokenize
from html.parser import HTMLParser
from pathlib import Path

SAMPLE_FILES = (
    "arxiv_sample.jsonl",
    "book_sample.jsonl",
    "c4_sample.jsonl",
    "cc_2019-30_sample.jsonl",
    "cc_2020-05_sample.jsonl",
    "cc_2021-04_sample.jsonl",
    "cc_2022-05_sample.jsonl",
    "cc_2023-06_sample.jsonl",
    "github_sample.jsonl",
    "stackexchange_sample.jsonl",
    "wikipedia_sample.jsonl",
)
CC_FILES = tuple(f for f in SAMPLE_FILES if f.startswith("cc_"))

DEFAULT_SEED = 1234

# Approximate caps, in bytes of JSON lines, for the subsets whose pools are
# larger than needed.  The other subsets take their whole pool.
GITHUB_PYTHON_BUDGET = 300_000
ARXIV_COMMENT_BUDGET = 420_000
C4_BUDGET = 700_000

PSF = "PSF-2.0"
PYTHON_VERSION = platform.python_version()
STDLIB = Path(sysconfig.get_paths()["stdlib"])
DOC = Path("/usr/share/doc")

# Installed PyPI distributions whose long description (README) is used for the
# cc_* files, with the licence each declares (verified against the licence file
# in its dist-info; normalised to an SPDX expression).  Packages that are not
# installed are skipped.
README_PACKAGES = {
    "aiohappyeyeballs": "PSF-2.0",
    "aiohttp": "Apache-2.0 AND MIT",
    "aiosignal": "Apache-2.0",
    "annotated-types": "MIT",
    "asttokens": "Apache-2.0",
    "attrs": "MIT",
    "aws-sam-translator": "Apache-2.0",
    "aws-xray-sdk": "Apache-2.0",
    "awscli": "Apache-2.0",
    "boto3": "Apache-2.0",
    "botocore": "Apache-2.0",
    "cfn-lint": "MIT-0",
    "charset-normalizer": "MIT",
    "click": "BSD-3-Clause",
    "cloudpickle": "BSD-3-Clause",
    "colorama": "BSD-3-Clause",
    "cryptography": "Apache-2.0 OR BSD-3-Clause",
    "decorator": "BSD-2-Clause",
    "docker": "Apache-2.0",
    "docstring-parser": "MIT",
    "executing": "MIT",
    "flask": "BSD-3-Clause",
    "flask-cors": "MIT",
    "frozenlist": "Apache-2.0",
    "fsspec": "BSD-3-Clause",
    "graphql-core": "MIT",
    "idna": "BSD-3-Clause",
    "iniconfig": "MIT",
    "jedi": "MIT",
    "jinja2": "BSD-3-Clause",
    "jmespath": "MIT",
    "joserfc": "BSD-3-Clause",
    "jsonargparse": "MIT",
    "jsonpath-ng": "Apache-2.0",
    "jsonschema": "MIT",
    "jsonschema-path": "Apache-2.0",
    "lazy-object-proxy": "BSD-2-Clause",
    "libcst": "MIT AND PSF-2.0",
    "lightning": "Apache-2.0",
    "lightning-utilities": "Apache-2.0",
    "markupsafe": "BSD-3-Clause",
    "moto": "Apache-2.0",
    "mpmath": "BSD-3-Clause",
    "multidict": "Apache-2.0",
    "networkx": "BSD-3-Clause",
    "numpy": "BSD-3-Clause AND 0BSD AND MIT AND Zlib AND CC0-1.0",
    "openapi-schema-validator": "BSD-3-Clause",
    "openapi-spec-validator": "Apache-2.0",
    "orjson": "Apache-2.0 OR MIT",
    "packaging": "Apache-2.0 OR BSD-2-Clause",
    "parso": "MIT",
    "pathable": "Apache-2.0",
    "pip": "MIT",
    "pluggy": "MIT",
    "prompt-toolkit": "BSD-3-Clause",
    "propcache": "Apache-2.0",
    "pure-eval": "MIT",
    "py-partiql-parser": "MIT",
    "pyasn1": "BSD-2-Clause",
    "pycparser": "BSD-3-Clause",
    "pydantic": "MIT",
    "pydantic-core": "MIT",
    "pyparsing": "MIT",
    "pytest": "MIT",
    "pytest-benchmark": "BSD-2-Clause",
    "python-dateutil": "Apache-2.0 AND BSD-3-Clause",
    "python-dotenv": "BSD-3-Clause",
    "pytorch-lightning": "Apache-2.0",
    "requests": "Apache-2.0",
    "responses": "Apache-2.0",
    "rpds-py": "MIT",
    "rsa": "Apache-2.0",
    "scipy": "BSD-3-Clause",
    "sentencepiece": "Apache-2.0",
    "setuptools": "MIT",
    "sniffio": "MIT OR Apache-2.0",
    "sortedcontainers": "Apache-2.0",
    "stack-data": "MIT",
    "sympy": "BSD-3-Clause",
    "torch": "BSD-3-Clause",
    "torchmetrics": "Apache-2.0",
    "traitlets": "BSD-3-Clause",
    "trio": "MIT OR Apache-2.0",
    "typeshed-client": "MIT",
    "typing-extensions": "PSF-2.0",
    "urllib3": "MIT",
    "wcwidth": "MIT",
    "werkzeug": "BSD-3-Clause",
    "wrapt": "BSD-2-Clause",
    "xmltodict": "MIT",
    "yarl": "Apache-2.0",
    "zstandard": "BSD-3-Clause",
}
README_MIN_CHARS = 1500

# Debian documentation files (text taken as-is from the upstream projects).
LSOF_FAQ = DOC / "lsof" / "00FAQ.gz"
ZLIB_FAQ = DOC / "zlib1g-dev" / "FAQ.gz"
XZ_FAQ = DOC / "xz-utils" / "faq.txt.gz"
ZLIB_EXAMPLES = DOC / "zlib1g-dev" / "examples"
# (project, Debian package, path, title, licence) of technical notes for arxiv.
TECH_NOTES = (
    ("zlib", "zlib1g-dev", DOC / "zlib1g-dev" / "algorithm.txt.gz",
     "zlib: Algorithm", "Zlib"),
    ("zlib", "zlib1g-dev", DOC / "zlib1g-dev" / "txtvsbin.txt.gz",
     "zlib: A Fast Method for Identifying Plain Text Files", "Zlib"),
    ("zlib", "zlib1g-dev", DOC / "zlib1g-dev" / "examples" / "zlib_how.html",
     "zlib Usage Example", "Zlib"),
    ("XZ Utils", "xz-utils", DOC / "xz-utils" / "history.txt.gz",
     "History of LZMA Utils and XZ Utils", "public-domain"),
)
# zlib examples that are not under the zlib licence.
ZLIB_PUBLIC_DOMAIN = {"fitblk.c", "zpipe.c"}

_warned: list[str] = []


def warn(msg: str) -> None:
    _warned.append(msg)
    print(f"warning: {msg}", file=sys.stderr)


# ---------------------------------------------------------------------------
# text helpers


def clean(text: str) -> str:
    """Normalise newlines, drop NULs and surrounding blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return text.strip("\n")


def read_text(path: Path) -> str | None:
    """Read a (possibly gzipped) UTF-8 file; None if missing or not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


class _HTMLText(HTMLParser):
    """Plain text from simple HTML: block tags become line breaks."""

    BLOCK = {"p", "div", "section", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd",
             "pre", "br", "tr", "table", "ul", "ol", "dl", "blockquote", "hr", "title"}
    SKIP = {"script", "style", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.pre = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        if tag == "pre":
            self.pre += 1
        if tag in self.BLOCK and not (self.parts and self.parts[-1] == "* "):
            self.parts.append("\n\n")
        if tag == "li":
            self.parts.append("* ")

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.skip:
            self.skip -= 1
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if self.skip:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            if not self.parts or self.parts[-1].endswith("\n"):
                data = data.lstrip()
        self.parts.append(data)

    def text(self) -> str:
        out = "".join(self.parts).replace("\u00b6", "")
        out = "\n".join(ln.rstrip() for ln in out.split("\n"))
        return re.sub(r"\n{3,}", "\n\n", out).strip()


def html_to_text(markup: str) -> str:
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    return parser.text()


def jsonl_line(text: str, meta: dict) -> str:
    return json.dumps({"text": text, "meta": meta}, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------
# Python standard library


SKIP_DIRS = {"site-packages", "__pycache__", "lib-dynload", "pydoc_data", "__phello__"}
TEST_DIRS = {"test", "tests", "idle_test"}


def stdlib_py_files() -> list[str]:
    """Relative POSIX paths of the standard library's .py files, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(STDLIB):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in SKIP_DIRS and not d.startswith("config-"))
        for name in sorted(filenames):
            if name.endswith(".py"):
                out.append(Path(dirpath, name).relative_to(STDLIB).as_posix())
    return sorted(out)


def is_test(rel: str) -> bool:
    return any(part in TEST_DIRS for part in rel.split("/")[:-1])


def module_name(rel: str) -> str:
    name = rel[:-3].replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def parse(rel: str):
    src = read_text(STDLIB / rel)
    if src is None:
        return None, None
    try:
        return src, ast.parse(src)
    except (SyntaxError, ValueError):
        return src, None


def indent(text: str) -> str:
    return textwrap.indent(text, "    ")


def signature(node) -> str:
    return f"{node.name}({ast.unparse(node.args)})"


def _class_entries(node: ast.ClassDef, prefix: str) -> list[str]:
    out = []
    bases = ", ".join(ast.unparse(b) for b in node.bases + node.keywords)
    head = f"class {prefix}{node.name}" + (f"({bases})" if bases else "")
    doc = ast.get_docstring(node)
    members = []
    for child in node.body:
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            d = ast.get_docstring(child)
            if d:
                members.append(f"{prefix}{node.name}.{signature(child)}\n{indent(clean(d))}")
        elif isinstance(child, ast.ClassDef):
            members.extend(_class_entries(child, f"{prefix}{node.name}."))
    if doc or members:
        out.append(head + ("\n" + indent(clean(doc)) if doc else ""))
        out.extend(members)
    return out


def module_manual(rel: str, tree: ast.Module) -> str | None:
    """pydoc-like text of a module, made only of its own docstrings."""
    parts = []
    doc = ast.get_docstring(tree)
    if doc:
        parts.append(clean(doc))
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            parts.extend(_class_entries(node, ""))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            d = ast.get_docstring(node)
            if d:
                parts.append(f"{signature(node)}\n{indent(clean(d))}")
    if not parts:
        return None
    name = module_name(rel)
    return f"{name}\n{'-' * len(name)}\n\n" + "\n\n".join(parts)


def docstring_items(tree: ast.Module, modname: str):
    """(qualified name, docstring) in source order."""
    doc = ast.get_docstring(tree)
    if doc:
        yield modname, doc

    def walk(body, prefix):
        for node in body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                d = ast.get_docstring(node)
                if d:
                    yield f"{prefix}.{node.name}", d
                yield from walk(node.body, f"{prefix}.{node.name}")

    yield from walk(tree.body, modname)


_DECOR = re.compile(r"^[\s#=\-*_~+.]*$")
_CODEY = set("=()[]{};<>")


def comment_prose(src: str) -> list[str]:
    """Blocks of full-line comments that read as prose."""
    try:
        tokens = list(tokenize.generate_tokens(iter(src.splitlines(True)).__next__))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return []
    blocks, cur, last = [], [], -10
    for tok in tokens:
        if tok.type != tokenize.COMMENT or not tok.line.lstrip().startswith("#"):
            continue
        line = re.sub(r"^#+ ?", "", tok.string).rstrip()
        if tok.start[0] != last + 1 and cur:
            blocks.append(cur)
            cur = []
        last = tok.start[0]
        if tok.start[0] <= 2 and (line.startswith("!") or "coding" in line):
            continue
        cur.append(line)
    if cur:
        blocks.append(cur)
    out = []
    for lines in blocks:
        lines = [ln for ln in lines if not _DECOR.match(ln) or not ln.strip()]
        text = textwrap.dedent("\n".join(lines)).strip("\n")
        if not text:
            continue
        words = re.findall(r"[A-Za-z]{2,}", text)
        n = len(text)
        alpha = sum(c.isalpha() or c.isspace() for c in text) / n
        codey = sum(c in _CODEY for c in text) / n
        if len(words) >= 12 and alpha >= 0.8 and codey <= 0.03:
            out.append(re.sub(r"\n{3,}", "\n\n", text))
    return out


def stdlib_meta(rel: str, **extra) -> dict:
    meta = {"source": "Python standard library", "path": f"Lib/{rel}",
            "python_version": PYTHON_VERSION}
    meta.update(extra)
    meta["license"] = PSF
    return meta


# ---------------------------------------------------------------------------
# subsets


def build_github(rng: random.Random) -> list[str]:
    docs = []
    tests = [r for r in stdlib_py_files() if r.startswith("test/") and
             r.rsplit("/", 1)[-1].startswith("test_")]
    rng.shuffle(tests)
    used = 0
    for rel in tests:
        src, tree = parse(rel)
        if src is None or tree is None:
            continue
        text = clean(src)
        if not 2_000 <= len(text.encode()) <= 40_000:
            continue
        line = jsonl_line(text, {"repo_name": "python/cpython", "path": f"Lib/{rel}",
                                 "ref": f"v{PYTHON_VERSION}", "language": "Python",
                                 "license": PSF})
        docs.append(line)
        used += len(line.encode())
        if used >= GITHUB_PYTHON_BUDGET:
            break
    if ZLIB_EXAMPLES.is_dir():
        for path in sorted(ZLIB_EXAMPLES.iterdir()):
            if path.suffix not in (".c", ".h"):
                continue
            text = read_text(path)
            if not text:
                continue
            lic = "public-domain" if path.name in ZLIB_PUBLIC_DOMAIN else "Zlib"
            docs.append(jsonl_line(clean(text), {
                "repo_name": "madler/zlib", "path": f"examples/{path.name}",
                "source": "zlib examples as shipped in Debian's zlib1g-dev",
                "language": "C", "license": lic}))
    else:
        warn(f"{ZLIB_EXAMPLES} not found; github has no C files")
    return docs


def build_book() -> list[str]:
    packages: dict[str, list[str]] = {}
    for rel in stdlib_py_files():
        if "/" not in rel or is_test(rel) or rel.startswith("encodings/"):
            continue  # (encodings: ~100 near-identical generated codec docstrings)
        packages.setdefault(rel.split("/", 1)[0], []).append(rel)
    docs = []
    for pkg in sorted(packages):
        # __init__ first within each directory
        rels = sorted(packages[pkg], key=lambda r: (r.rsplit("/", 1)[0], not r.endswith("/__init__.py"), r))
        chapters = []
        for rel in rels:
            _, tree = parse(rel)
            if tree is not None:
                man = module_manual(rel, tree)
                if man:
                    chapters.append(man)
        if not chapters:
            continue
        title = f"The {pkg} package"
        text = f"{title}\n{'=' * len(title)}\n\n" + "\n\n\n".join(chapters)
        docs.append(jsonl_line(clean(text), stdlib_meta(
            f"{pkg}/", short_book_title=f"{title} (Python {PYTHON_VERSION} standard library)",
            content="docstrings", language="en")))
    help_html = read_text(STDLIB / "idlelib" / "help.html")
    if help_html:
        body = help_html
        m = re.search(r'<div class="body" role="main">(.*?)<div class="sphinxsidebar"', body, re.S)
        if m:
            body = m.group(1)
        docs.append(jsonl_line(html_to_text(body), stdlib_meta(
            "idlelib/help.html", short_book_title="IDLE (Python documentation)",
            content="user guide", language="en")))
    return docs


def build_wikipedia() -> list[str]:
    path = STDLIB / "pydoc_data" / "topics.py"
    src = read_text(path)
    if src is None:
        warn(f"{path} not found; wikipedia is empty")
        return []
    topics = ast.literal_eval(src.split("topics = ", 1)[1])
    docs, seen = [], set()
    for key in sorted(topics):
        text = clean(topics[key])
        if text and text not in seen:  # a few topics share one text
            seen.add(text)
            docs.append(jsonl_line(text, stdlib_meta(
                "pydoc_data/topics.py", title=key,
                url=f"https://docs.python.org/{sys.version_info[0]}.{sys.version_info[1]}/",
                language="en")))
    return docs


def build_arxiv(rng: random.Random) -> list[str]:
    scored = []
    for rel in stdlib_py_files():
        if is_test(rel):
            continue
        src, _ = parse(rel)
        if src is None:
            continue
        blocks = comment_prose(src)
        size = sum(len(b) for b in blocks)
        if size >= 3_000:
            scored.append((-size, rel, blocks))
    scored.sort(key=lambda t: (t[0], t[1]))
    docs, used = [], 0
    for _, rel, blocks in scored:
        name = module_name(rel)
        text = f"{name}\n{'=' * len(name)}\n\n" + "\n\n".join(blocks)
        line = jsonl_line(clean(text), stdlib_meta(
            rel, doc_id=f"cpython/Lib/{rel}", content="source comments", language="en"))
        docs.append(line)
        used += len(line.encode())
        if used >= ARXIV_COMMENT_BUDGET:
            break
    for project, package, path, title, lic in TECH_NOTES:
        text = read_text(path)
        if text is None:
            warn(f"{path} not found; skipped")
            continue
        if path.suffix == ".html":
            text = html_to_text(text)
        fname = path.name.removesuffix(".gz")
        docs.append(jsonl_line(clean(text), {
            "source": f"{project} documentation (Debian package {package})",
            "path": fname, "doc_id": f"{project}/{fname}",
            "title": title, "language": "en", "license": lic}))
    rng.shuffle(docs)
    return docs


def _qa(title: str, answer: str) -> str:
    return f"Q:\n\n{title.strip()}\n\nA:\n\n{answer.strip()}"


def _numbered_faq(text: str, head: re.Pattern):
    """Entries whose heading line matches ``head``; the title runs to the
    first blank line, the answer to the next heading."""
    entries, cur = [], None
    for line in text.split("\n"):
        m = head.match(line)
        if m:
            cur = [m.group(1), [m.group(2).strip()], [], True]
            entries.append(cur)
        elif cur is not None:
            if cur[3] and line.strip():
                cur[1].append(line.strip())
                continue
            cur[3] = False
            cur[2].append(line.expandtabs(8))
    for qid, title, ans, _ in entries:
        answer = textwrap.dedent("\n".join(ans)).strip("\n")
        if answer.strip():
            yield qid, " ".join(title), answer


def lsof_faq(text: str):
    # The questions follow the table of contents, after the second rule line.
    parts = re.split(r"^_{20,}[ \t]*$", text, flags=re.M)
    body = parts[-1] if len(parts) >= 3 else text
    body = re.sub(r"^_{20,}[ \t]*$", "", body, flags=re.M)
    return _numbered_faq(body, re.compile(r"^(\d+(?:\.\d+)+)[ \t]+(\S.*)$"))


def zlib_faq(text: str):
    return _numbered_faq(text, re.compile(r"^ {0,2}(\d+)\. (\S.*)$"))


def xz_faq(text: str):
    chunks = re.split(r"^Q:\s+", text, flags=re.M)[1:]
    for i, chunk in enumerate(chunks, 1):
        if "\nA:" not in chunk:
            continue
        q, a = chunk.split("\nA:", 1)
        q = " ".join(ln.strip() for ln in q.strip().split("\n"))
        a = textwrap.dedent("    " + a.lstrip(" ")).strip("\n")
        yield str(i), q, a


def build_stackexchange(rng: random.Random) -> list[str]:
    sources = (
        (LSOF_FAQ, lsof_faq, "lsof", "lsof FAQ", "Purdue"),
        (ZLIB_FAQ, zlib_faq, "zlib", "zlib FAQ", "Zlib"),
        (XZ_FAQ, xz_faq, "xz-utils", "XZ Utils FAQ", "public-domain"),
    )
    docs = []
    for path, parser, project, name, lic in sources:
        text = read_text(path)
        if text is None:
            warn(f"{path} not found; skipped")
            continue
        for qid, title, answer in parser(clean(text)):
            docs.append(jsonl_line(clean(_qa(title, answer)), {
                "source": f"{name} (Debian package documentation)", "project": project,
                "question_id": qid, "title": title, "language": "en", "license": lic}))
    rng.shuffle(docs)
    return docs


def build_c4(rng: random.Random) -> list[str]:
    items = []
    for rel in stdlib_py_files():
        if "/" in rel:
            continue
        _, tree = parse(rel)
        if tree is None:
            continue
        for qualname, doc in docstring_items(tree, module_name(rel)):
            doc = clean(doc)
            if len(doc) >= 200:
                items.append((rel, qualname, doc))
    rng.shuffle(items)
    docs, used, seen = [], 0, set()
    for rel, qualname, doc in items:
        if doc in seen:  # some docstrings are repeated verbatim
            continue
        seen.add(doc)
        line = jsonl_line(doc, stdlib_meta(rel, title=qualname, content="docstring", language="en"))
        docs.append(line)
        used += len(line.encode())
        if used >= C4_BUDGET:
            break
    return docs


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def build_cc(rng: random.Random) -> dict[str, list[str]]:
    roots = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    found = {}
    for dist in importlib.metadata.distributions(path=roots):
        name = _norm(dist.metadata["Name"] or "")
        if name in README_PACKAGES:
            found.setdefault(name, []).append(dist)
    pages = []
    for name in sorted(found):
        dist = sorted(found[name], key=lambda d: d.version)[-1]
        raw = dist.read_text("METADATA") or ""
        raw = raw.replace("\r\n", "\n")
        head, _, body = raw.partition("\n\n")
        meta = dist.metadata
        if not body.strip():
            body = meta.get("Description") or ""
            body = re.sub(r"^ {8}\|?", "", body, flags=re.M)
        body = clean(body)
        if len(body) < README_MIN_CHARS:
            continue
        url = meta.get("Home-page") or ""
        if not url:
            for entry in meta.get_all("Project-URL") or []:
                label, _, link = entry.partition(",")
                url = link.strip()
                if label.strip().lower() in ("homepage", "home", "source", "repository", "source code"):
                    break
        page_meta = {"source": "PyPI package description (dist-info METADATA)",
                     "package": dist.metadata["Name"], "version": dist.version}
        if url:
            page_meta["url"] = url
        page_meta.update({"content_type": meta.get("Description-Content-Type") or "text/plain",
                          "language": "en", "license": README_PACKAGES[name]})
        pages.append(jsonl_line(body, page_meta))
    missing = sorted(set(README_PACKAGES) - set(found))
    if missing:
        warn(f"{len(missing)} README packages not installed: {', '.join(missing)}")
    # Balance bytes over the cc files: largest page to the lightest file.
    pages.sort(key=lambda p: (-len(p.encode()), p))
    bins = {f: [] for f in CC_FILES}
    sizes = {f: 0 for f in CC_FILES}
    for page in pages:
        target = min(CC_FILES, key=lambda f: (sizes[f], f))
        bins[target].append(page)
        sizes[target] += len(page.encode())
    for f in CC_FILES:
        rng.shuffle(bins[f])
    return bins


# ---------------------------------------------------------------------------


def build(seed: int) -> dict[str, list[str]]:
    def rng(name: str) -> random.Random:
        return random.Random(f"{seed}:{name}")

    files = {
        "arxiv_sample.jsonl": build_arxiv(rng("arxiv")),
        "book_sample.jsonl": build_book(),
        "c4_sample.jsonl": build_c4(rng("c4")),
        "github_sample.jsonl": build_github(rng("github")),
        "stackexchange_sample.jsonl": build_stackexchange(rng("stackexchange")),
        "wikipedia_sample.jsonl": build_wikipedia(),
    }
    files.update(build_cc(rng("cc")))
    book = files["book_sample.jsonl"]
    random.Random(f"{seed}:book").shuffle(book)
    github = files["github_sample.jsonl"]
    rng("github-order").shuffle(github)
    # No document may appear twice, within a file or across files.
    seen: dict[str, str] = {}
    for name in SAMPLE_FILES:
        for line in files[name]:
            text = json.loads(line)["text"]
            if text in seen:
                raise SystemExit(f"duplicate document in {name} and {seen[text]}")
            seen[text] = name
    return {name: files[name] for name in SAMPLE_FILES}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", type=Path, default=None,
                    help="folder to write the 11 *_sample.jsonl files to "
                         "(default: pajama/sample in this repository)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default: %(default)s)")
    args = ap.parse_args(argv)

    if args.output is None:
        args.output = Path(__file__).resolve().parent.parent / "pajama" / "sample"
    files = build(args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    total_docs = total_bytes = 0
    print(f"{'file':<28} {'documents':>9} {'bytes':>10}")
    for name, lines in files.items():
        data = "".join(lines).encode("utf-8")
        (args.output / name).write_bytes(data)
        print(f"{name:<28} {len(lines):>9} {len(data):>10}")
        total_docs += len(lines)
        total_bytes += len(data)
    print(f"{'total':<28} {total_docs:>9} {total_bytes:>10}")
    if _warned:
        print(f"{len(_warned)} warning(s); see stderr", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
