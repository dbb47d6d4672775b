"""Which metrics and labels a PromQL expression uses, for the monitoring tests.

A small parser of the PromQL the rules and the dashboard use (selectors, aggregations,
functions, binary operators with on / ignoring / group_left / group_right, subqueries):
`analyse(expr, metrics)` walks the expression with `metrics` (name -> label names) and
returns the labels of its result and a list of problems: a metric that is not known, or a
label a matcher, a `by` / `without`, an `on` / `ignoring` / `group_*` or a function names
that the series reaching it do not carry. Syntax itself is promtool's to judge (the tests
run `promtool check rules` as well); this raises ValueError only on what it cannot read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<number>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![a-zA-Z_:])|[Ii]nf\b|NaN\b)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>==|!=|<=|>=|=~|!~|[-+*/%^<>=(){}\[\],:@])
""", re.VERBOSE)

AGGREGATIONS = {"sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
                "topk", "bottomk", "quantile", "count_values", "limitk", "limit_ratio"}
_PARAM_AGGREGATIONS = {"topk", "bottomk", "quantile", "count_values", "limitk",
                       "limit_ratio"}
_KEEP_ALL_AGGREGATIONS = {"topk", "bottomk", "limitk", "limit_ratio"}
_SCALAR_FUNCTIONS = {"time", "scalar", "pi"}
_PRECEDENCE = {"or": 1, "and": 2, "unless": 2, "==": 3, "!=": 3, "<=": 3, "<": 3,
               ">=": 3, ">": 3, "+": 4, "-": 4, "*": 5, "/": 5, "%": 5, "atan2": 5,
               "^": 6}
_SET_OPERATORS = {"and", "or", "unless"}


@dataclass
class Value:
    kind: str  # vector | scalar | string
    labels: frozenset = frozenset()
    text: str = ""  # a string literal's value
    equal: dict = field(default_factory=dict)  # a bare selector's label="value" matchers


@dataclass
class Analysis:
    labels: frozenset
    metrics: set
    problems: list


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if not match:
            raise ValueError(f"cannot read {expr[pos:pos + 20]!r} in {expr!r}")
        pos = match.end()
        if match.lastgroup != "ws":
            out.append((match.lastgroup, match.group()))
    return out


class _Parser:
    def __init__(self, expr: str, metrics: dict[str, frozenset]):
        self.expr, self.tokens, self.i = expr, _tokens(expr), 0
        self.metrics, self.used, self.problems = metrics, set(), []

    # -- tokens ---------------------------------------------------------------------
    def peek(self, offset: int = 0) -> tuple[str, str]:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else ("end", "")

    def next(self) -> tuple[str, str]:
        token = self.peek()
        self.i += 1
        return token

    def expect(self, text: str) -> None:
        kind, got = self.next()
        if got != text:
            raise ValueError(f"expected {text!r}, found {got!r} in {self.expr!r}")

    def word(self) -> str:
        kind, text = self.peek()
        return text.lower() if kind == "ident" else text

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def need(self, labels, have: frozenset, where: str) -> None:
        for label in labels:
            if label not in have:
                self.problem(f"{where}: label {label!r} not on {sorted(have)}")

    # -- grammar --------------------------------------------------------------------
    def parse(self) -> Value:
        value = self.expression(0)
        if self.peek()[0] != "end":
            raise ValueError(f"unexpected {self.peek()[1]!r} in {self.expr!r}")
        return value

    def expression(self, min_precedence: int) -> Value:
        left = self.unary()
        while True:
            op = self.word()
            precedence = _PRECEDENCE.get(op)
            if precedence is None or precedence < min_precedence:
                return left
            self.next()
            returns_bool = self.word() == "bool"
            if returns_bool:
                self.next()
            matching, on_labels, group, include = None, (), None, ()
            if self.word() in ("on", "ignoring"):
                matching = self.next()[1].lower()
                on_labels = self.label_list()
            if self.word() in ("group_left", "group_right"):
                group = self.next()[1].lower()
                include = self.label_list() if self.peek()[1] == "(" else ()
            right = self.expression(precedence + (0 if op == "^" else 1))
            left = self.binary(op, left, right, matching, on_labels, group, include,
                               returns_bool)

    def binary(self, op, left: Value, right: Value, matching, on_labels, group, include,
               returns_bool) -> Value:
        where = f"'{op}'"
        if left.kind != "vector" or right.kind != "vector":
            if left.kind == "vector":
                return Value("vector", left.labels)
            if right.kind == "vector":
                return Value("vector", right.labels)
            return Value("scalar")
        if matching == "on":
            self.need(on_labels, left.labels, f"{where} on() left side")
            self.need(on_labels, right.labels, f"{where} on() right side")
        elif matching == "ignoring":
            self.need(on_labels, left.labels | right.labels, f"{where} ignoring()")
        if op in _SET_OPERATORS:
            return Value("vector", left.labels | right.labels if op == "or" else left.labels)
        if group == "group_left":
            self.need(include, right.labels, f"{where} group_left()")
            return Value("vector", left.labels | frozenset(include))
        if group == "group_right":
            self.need(include, left.labels, f"{where} group_right()")
            return Value("vector", right.labels | frozenset(include))
        if matching == "on":
            return Value("vector", frozenset(on_labels))
        if matching == "ignoring":
            return Value("vector", left.labels - frozenset(on_labels))
        return Value("vector", left.labels)

    def label_list(self) -> tuple[str, ...]:
        self.expect("(")
        labels = []
        while self.peek()[1] != ")":
            kind, text = self.next()
            if kind != "ident":
                raise ValueError(f"expected a label name, found {text!r} in {self.expr!r}")
            labels.append(text)
            if self.peek()[1] == ",":
                self.next()
        self.expect(")")
        return tuple(labels)

    def unary(self) -> Value:
        if self.peek()[1] in ("-", "+"):
            self.next()
            return self.unary()
        value = self.primary()
        while True:  # range, subquery, offset and @ modifiers keep the labels
            if self.peek()[1] == "[":
                while self.next()[1] != "]":
                    if self.peek()[0] == "end":
                        raise ValueError(f"unclosed '[' in {self.expr!r}")
            elif self.word() == "offset":
                self.next()
                if self.peek()[1] == "-":
                    self.next()
                self.next()
            elif self.peek()[1] == "@":
                self.next()
                self.next()
                if self.peek()[1] == "(":
                    self.next()
                    self.expect(")")
            else:
                return value

    def primary(self) -> Value:
        kind, text = self.peek()
        if kind == "number":
            self.next()
            return Value("scalar")
        if kind == "string":
            self.next()
            return Value("string", text=text[1:-1])
        if text == "(":
            self.next()
            value = self.expression(0)
            self.expect(")")
            return value
        if text == "{":
            return self.selector(None)
        if kind == "ident":
            name = text.lower()
            after = self.peek(1)[1]
            if name in AGGREGATIONS and (after == "(" or after.lower() in ("by", "without")):
                return self.aggregation()
            if self.peek(1)[1] == "(":
                return self.function()
            self.next()
            return self.selector(text)
        raise ValueError(f"unexpected {text!r} in {self.expr!r}")

    def selector(self, name: str | None) -> Value:
        matchers = []
        if self.peek()[1] == "{":
            self.next()
            while self.peek()[1] != "}":
                kind, label = self.next()
                if kind != "ident":
                    raise ValueError(f"expected a label name, found {label!r} in {self.expr!r}")
                op = self.next()[1]
                kind, value = self.next()
                if kind != "string":
                    raise ValueError(f"expected a string after {label}{op} in {self.expr!r}")
                matchers.append((label, op, value[1:-1]))
                if self.peek()[1] == ",":
                    self.next()
            self.next()
        if name is None:
            names = [v for label, op, v in matchers if label == "__name__" and op == "="]
            if not names:
                raise ValueError(f"a selector without a metric name in {self.expr!r}")
            name = names[0]
        self.used.add(name)
        if name not in self.metrics:
            self.problem(f"unknown metric {name!r}")
            return Value("vector", frozenset(label for label, _, _ in matchers))
        have = self.metrics[name]
        self.need([label for label, _, _ in matchers if label != "__name__"], have, name)
        equal = {label: v for label, op, v in matchers if op == "="}
        return Value("vector", have, equal=equal)

    def arguments(self) -> list[Value]:
        self.expect("(")
        args = []
        while self.peek()[1] != ")":
            args.append(self.expression(0))
            if self.peek()[1] == ",":
                self.next()
        self.expect(")")
        return args

    def aggregation(self) -> Value:
        op = self.next()[1].lower()
        grouping, labels = None, ()
        if self.word() in ("by", "without"):
            grouping = self.next()[1].lower()
            labels = self.label_list()
        args = self.arguments()
        if grouping is None and self.word() in ("by", "without"):
            grouping = self.next()[1].lower()
            labels = self.label_list()
        inner = args[-1] if args else Value("vector")
        have = inner.labels
        where = f"{op} {grouping or ''}({', '.join(labels)})"
        if grouping:
            self.need(labels, have, where)
        if op in _KEEP_ALL_AGGREGATIONS:
            return Value("vector", have)
        if grouping == "by":
            out = frozenset(labels)
        elif grouping == "without":
            out = have - frozenset(labels)
        else:
            out = frozenset()
        if op == "count_values" and args and args[0].kind == "string":
            out |= {args[0].text}
        return Value("vector", out)

    def function(self) -> Value:
        name = self.next()[1]
        args = self.arguments()
        vectors = [a for a in args if a.kind == "vector"]
        strings = [a.text for a in args if a.kind == "string"]
        if name in _SCALAR_FUNCTIONS:
            return Value("scalar")
        if name == "vector":
            return Value("vector")
        if not vectors:
            return Value("vector")
        have = vectors[0].labels
        if name in ("histogram_quantile", "histogram_fraction"):
            self.need(["le"], have, name)
            return Value("vector", have - {"le"})
        if name == "label_replace":
            destination, _, source, _ = strings
            if source:
                self.need([source], have, "label_replace source")
            return Value("vector", have | {destination})
        if name == "label_join":
            self.need(strings[2:], have, "label_join sources")
            return Value("vector", have | {strings[0]})
        if name in ("absent", "absent_over_time"):
            return Value("vector", frozenset(vectors[0].equal))
        return Value("vector", have)


def analyse(expr: str, metrics: dict[str, frozenset]) -> Analysis:
    parser = _Parser(expr, metrics)
    value = parser.parse()
    return Analysis(value.labels if value.kind == "vector" else frozenset(), parser.used,
                    parser.problems)
