"""Document filters on RedPajama-Data-V2's quality signals: built-in rule sets and rules from YAML.

Every signal of a document is a list of ``[start, end, value]`` character spans of its text:
one span for a document-level signal (``rps_doc_*``, ``ccnet_*``), one per line for the
line-level ones (``rps_lines_*``). A :class:`Rule` reduces a signal to one number (its first
value, or the sum or mean of its lines' values, optionally divided by another signal), and
rejects the document when the comparison with its threshold holds. A value that is missing or
null is *null*: the rule then neither passes nor fails on evidence, and does what its
``on_null`` says (``keep`` by default), and the report counts it under ``null``.

Built-in rule sets (``--filters``):

* ``gopher``: the quality and repetition rules of Rae et al. 2021 ("Scaling Language Models:
  Methods, Analysis & Insights from Training Gopher", appendix A.1.1) as far as the V2 signals
  carry them: 50 to 100,000 words, mean word length 3 to 10, symbol-to-word ratio, bullet-point
  and ellipsis lines, words without an alphabetic character, and the top n-gram and duplicate
  n-gram character fractions. Not carried, so not applied: "at least two of *the, be, to, of,
  and, that, have, with*" (V2's ``rps_doc_stop_word_fraction`` is a fraction over a longer
  list), and the duplicate line and paragraph fractions (V2 has no such signals).
* ``gopher_card``: the RedPajama-V2 dataset card's example of Gopher rules, a subset with
  another word-count cap: 50 to 10,000 words, mean word length 3 to 10, symbol-to-word ratio,
  bullet-point lines, top 2-gram fraction.
* ``c4``: the page-level rules of C4 (Raffel et al. 2020, "Exploring the Limits of Transfer
  Learning with a Unified Text-to-Text Transformer", section 2.2) on the signals that the V2
  README maps to them. C4 removed *lines* without terminal punctuation or mentioning
  JavaScript; from document-level signals we can only reject documents where such lines
  dominate, at thresholds of our choosing (stated below).
* ``refinedweb``: RefinedWeb's document filters (Penedo et al. 2023, "The RefinedWeb Dataset
  for Falcon LLM", section 3.2 and appendix G.1), which reuse Gopher's quality and repetition
  heuristics with a wider word-count range, and its URL filter's UT1 blacklist.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pajama import PajamaError

OPS: dict[str, Callable] = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne}
AGGREGATES = ("first", "sum", "mean")
ON_NULL = ("keep", "reject")


@dataclass(frozen=True)
class Rule:
    """Reject a document when ``value(signal) op threshold`` holds.

    ``aggregate`` reduces the signal's spans: ``first`` (a document-level signal's one value),
    ``sum`` or ``mean`` (over the lines of a line-level signal; null lines are left out, all
    null is null). With ``divide_by``, the value is divided by that document-level signal
    (null when it is null or 0). ``on_null`` is what a null value does: ``keep`` or ``reject``.
    """

    name: str
    signal: str
    op: str
    threshold: float | int | str | bool | None
    aggregate: str = "first"
    divide_by: str | None = None
    on_null: str = "keep"
    source: str = ""  # where the rule and its threshold come from

    def value(self, signals: Mapping[str, list]) -> object | None:
        """The rule's number for a document's signals, or None when it is null."""
        value = _reduce(signals.get(self.signal), self.aggregate)
        if value is None or self.divide_by is None:
            return value
        divisor = _reduce(signals.get(self.divide_by), "first")
        if not _is_number(value) or not _is_number(divisor) or divisor == 0:
            return None
        return value / divisor

    def rejects(self, signals: Mapping[str, list]) -> bool | None:
        """True to reject, False to keep, None when the value is null (``on_null`` then decides)."""
        value = self.value(signals)
        if value is None:
            return None
        try:
            return bool(OPS[self.op](value, self.threshold))
        except TypeError:  # e.g. a string compared with <: not a number, so null
            return None

    def describe(self) -> str:
        what = f"{self.aggregate}({self.signal})" if self.aggregate != "first" else self.signal
        if self.divide_by:
            what += f" / {self.divide_by}"
        return f"{what} {self.op} {self.threshold}"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _reduce(spans: object, aggregate: str) -> object | None:
    if not isinstance(spans, list) or not spans:
        return None
    if aggregate == "first":
        span = spans[0]
        return span[2] if isinstance(span, list) and len(span) >= 3 else None
    try:  # the common case, a few hundred lines of numbers: no check per line
        values = [s[2] for s in spans]
        total = sum(values)
        if not math.isfinite(total) or any(v.__class__ is bool for v in values):
            raise TypeError
    except (TypeError, IndexError, KeyError):  # nulls, or malformed spans: left out one by one
        values = [s[2] for s in spans if isinstance(s, list) and len(s) >= 3 and _is_number(s[2])]
        if not values:
            return None
        total = sum(values)
    return total if aggregate == "sum" else total / len(values)


GOPHER_SOURCE = "Gopher (Rae et al. 2021, app. A.1.1)"
GOPHER_CARD_SOURCE = "RedPajama-V2 dataset card, its Gopher example"
C4_SOURCE = "C4 (Raffel et al. 2020, sec. 2.2)"
REFINEDWEB_SOURCE = "RefinedWeb (Penedo et al. 2023, sec. 3.2, app. G.1; Gopher's heuristics)"
# Gopher's repetition limits: most frequent 2/3/4-gram, and duplicated 5- to 10-grams (fractions of characters).
TOP_NGRAM_LIMITS = ((2, 0.20), (3, 0.18), (4, 0.16))
DUPE_NGRAM_LIMITS = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))


def _gopher_quality(prefix: str, max_words: int, source: str) -> tuple[Rule, ...]:
    """The rules Gopher's paper and the dataset card's example share, but for the word-count cap."""
    return (
        Rule(f"{prefix}_word_count_min", "rps_doc_word_count", "<", 50, source=source),
        Rule(f"{prefix}_word_count_max", "rps_doc_word_count", ">", max_words, source=source),
        Rule(f"{prefix}_mean_word_length_min", "rps_doc_mean_word_length", "<", 3, source=source),
        Rule(f"{prefix}_mean_word_length_max", "rps_doc_mean_word_length", ">", 10, source=source),
        Rule(f"{prefix}_symbol_to_word_ratio", "rps_doc_symbol_to_word_ratio", ">", 0.1, source=source),
        Rule(f"{prefix}_bullet_lines", "rps_lines_start_with_bulletpoint", ">", 0.9, aggregate="sum", divide_by="ccnet_nlines", source=source),
    )


BUILTIN: dict[str, tuple[Rule, ...]] = {
    "gopher": (
        *_gopher_quality("gopher", 100_000, GOPHER_SOURCE),
        Rule("gopher_ellipsis_lines", "rps_doc_frac_lines_end_with_ellipsis", ">", 0.3, source=GOPHER_SOURCE),
        Rule("gopher_alphabetic_words", "rps_doc_frac_no_alph_words", ">", 0.2, source=GOPHER_SOURCE),  # at least 80 % with a letter
        *(Rule(f"gopher_top_{n}gram", f"rps_doc_frac_chars_top_{n}gram", ">", limit, source=GOPHER_SOURCE) for n, limit in TOP_NGRAM_LIMITS),
        *(Rule(f"gopher_dupe_{n}grams", f"rps_doc_frac_chars_dupe_{n}grams", ">", limit, source=GOPHER_SOURCE) for n, limit in DUPE_NGRAM_LIMITS),
    ),
    "gopher_card": (
        *_gopher_quality("gopher_card", 10_000, GOPHER_CARD_SOURCE),
        Rule("gopher_card_top_2gram", "rps_doc_frac_chars_top_2gram", ">", 0.2, source=GOPHER_CARD_SOURCE),
    ),
    "c4": (
        # C4 dropped any page with a curly bracket (code), "lorem ipsum" (placeholder text) or a
        # word of the "List of Dirty, Naughty, Obscene or Otherwise Bad Words".
        Rule("c4_curly_bracket", "rps_doc_curly_bracket", ">", 0, source=C4_SOURCE),
        Rule("c4_lorem_ipsum", "rps_doc_lorem_ipsum", ">", 0, source=C4_SOURCE),
        Rule("c4_bad_words", "rps_doc_ldnoobw_words", ">", 0, source=C4_SOURCE),
        # C4 kept only lines ending in terminal punctuation and then dropped pages of fewer
        # than 3 sentences; here: reject when under half the lines end in one (our threshold).
        Rule("c4_terminal_punctuation", "rps_lines_ending_with_terminal_punctution_mark", "<", 0.5, aggregate="mean", source=C4_SOURCE + ", threshold ours"),
        Rule("c4_num_sentences", "rps_doc_num_sentences", "<", 3, source=C4_SOURCE),
        # C4 removed lines mentioning JavaScript (cookie and script warnings); reject when
        # more than a quarter of the lines do (our threshold).
        Rule("c4_javascript", "rps_lines_javascript_counts", ">", 0.25, aggregate="mean", source=C4_SOURCE + ", threshold ours"),
    ),
    "refinedweb": (
        Rule("refinedweb_word_count_min", "rps_doc_word_count", "<", 50, source=REFINEDWEB_SOURCE),
        Rule("refinedweb_word_count_max", "rps_doc_word_count", ">", 100_000, source=REFINEDWEB_SOURCE),
        Rule("refinedweb_mean_word_length_min", "rps_doc_mean_word_length", "<", 2, source=REFINEDWEB_SOURCE),
        Rule("refinedweb_mean_word_length_max", "rps_doc_mean_word_length", ">", 10, source=REFINEDWEB_SOURCE),
        Rule("refinedweb_symbol_to_word_ratio", "rps_doc_symbol_to_word_ratio", ">", 0.1, source=REFINEDWEB_SOURCE),
        *(Rule(f"refinedweb_top_{n}gram", f"rps_doc_frac_chars_top_{n}gram", ">", limit, source=REFINEDWEB_SOURCE) for n, limit in TOP_NGRAM_LIMITS),
        *(Rule(f"refinedweb_dupe_{n}grams", f"rps_doc_frac_chars_dupe_{n}grams", ">", limit, source=REFINEDWEB_SOURCE) for n, limit in DUPE_NGRAM_LIMITS),
        # The signal is null for domains not on the UT1 blacklist, else their category.
        Rule("refinedweb_ut1_blacklist", "rps_doc_ut1_blacklist", "!=", 0, source=REFINEDWEB_SOURCE),
    ),
}


def builtin_rules(names: list[str] | str | None) -> list[Rule]:
    """The rules of the named built-in sets (a list, or a comma-separated string), in order."""
    rules: list[Rule] = []
    for name in split_names(names):
        if name not in BUILTIN:
            raise PajamaError(f"unknown filter set {name!r}; known: {', '.join(BUILTIN)} (or --filter_rules FILE.yaml)")
        rules.extend(BUILTIN[name])
    return rules


def split_names(names: list[str] | str | None) -> list[str]:
    """``["gopher,c4"]``, ``"gopher, c4"`` and ``["gopher", "c4"]`` alike: the names, deduplicated."""
    if not names:
        return []
    if isinstance(names, str):
        names = [names]
    return list(dict.fromkeys(n.strip() for item in names for n in str(item).split(",") if n.strip()))


def load_rules(path: Path) -> list[Rule]:
    """Rules from a YAML file: a list (or ``rules:`` holding a list) of mappings with
    ``signal``, ``op`` (one of < <= > >= == !=), ``threshold``, and optionally ``name``,
    ``aggregate`` (first, sum, mean), ``divide_by`` (a document-level signal) and ``on_null``
    (keep, reject). Errors name the file and the rule."""
    import yaml

    path = Path(path).expanduser()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise PajamaError(f"{path}: cannot read the filter rules: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise PajamaError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if isinstance(data, dict) and set(data) == {"rules"}:
        data = data["rules"]
    if not isinstance(data, list) or not data:
        raise PajamaError(f"{path}: expected a list of rules (mappings with signal, op, threshold), got {type(data).__name__}")
    rules = []
    known = {"name", "signal", "op", "threshold", "aggregate", "divide_by", "on_null"}
    for i, entry in enumerate(data, 1):
        where = f"{path}: rule {i}"
        if not isinstance(entry, dict):
            raise PajamaError(f"{where}: expected a mapping with signal, op, threshold, got {entry!r}")
        if isinstance(entry.get("name"), str):
            where += f" ({entry['name']})"
        unknown = sorted(set(map(str, entry)) - known)
        if unknown:
            raise PajamaError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for key in ("signal", "op", "threshold"):
            if key not in entry:
                raise PajamaError(f"{where}: missing {key!r}")
        signal, op, threshold = entry["signal"], entry["op"], entry["threshold"]
        if not isinstance(signal, str) or not signal:
            raise PajamaError(f"{where}: signal must name a quality signal, got {signal!r}")
        if op not in OPS:
            raise PajamaError(f"{where}: op {op!r} is not one of {' '.join(OPS)}")
        if op not in ("==", "!=") and not _is_number(threshold):
            raise PajamaError(f"{where}: threshold {threshold!r} must be a number for op {op}")
        if threshold is not None and not isinstance(threshold, (int, float, str, bool)):
            raise PajamaError(f"{where}: threshold {threshold!r} must be a number, a string, true/false or null")
        aggregate = entry.get("aggregate", "first")
        if aggregate not in AGGREGATES:
            raise PajamaError(f"{where}: aggregate {aggregate!r} is not one of {', '.join(AGGREGATES)}")
        on_null = entry.get("on_null", "keep")
        if on_null not in ON_NULL:
            raise PajamaError(f"{where}: on_null {on_null!r} is not one of {', '.join(ON_NULL)}")
        divide_by = entry.get("divide_by")
        if divide_by is not None and (not isinstance(divide_by, str) or not divide_by):
            raise PajamaError(f"{where}: divide_by must name a document-level signal, got {divide_by!r}")
        name = entry.get("name", f"{signal} {op} {threshold}")
        if not isinstance(name, str) or not name:
            raise PajamaError(f"{where}: name must be a non-empty string, got {name!r}")
        rules.append(Rule(name, signal, op, threshold, aggregate, divide_by, on_null, source=str(path)))
    return rules


def check_unique(rules: list[Rule]) -> list[Rule]:
    """The rules, refusing two of one name (the report counts by name)."""
    seen: dict[str, Rule] = {}
    for rule in rules:
        other = seen.setdefault(rule.name, rule)
        if other is not rule and other != rule:
            raise PajamaError(f"two filter rules are named {rule.name!r} ({other.describe()}; {rule.describe()}): name them apart")
    return list(dict.fromkeys(rules))


def judge(rules: list[Rule] | tuple[Rule, ...], signals: Mapping[str, list]) -> tuple[list[str], list[str]]:
    """(names of the rules that reject the document, names of those whose value is null)."""
    rejected, null = [], []
    for rule in rules:
        verdict = rule.rejects(signals)
        if verdict is None:
            null.append(rule.name)
            if rule.on_null == "reject":
                rejected.append(rule.name)
        elif verdict:
            rejected.append(rule.name)
    return rejected, null
