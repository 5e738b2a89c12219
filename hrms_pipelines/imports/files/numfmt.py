"""The text Excel displays for a number under a number format: `render(123, '000000') == '000123'`.

Only number formats made of digit placeholders (`0 # ?`), a decimal point, thousands separators,
percent and literals (`"EMP"`, `\\-`, `(`, ` `...), in up to four sections with conditions
(`[<=9999999]###-####;(###) ###-####`) and colours. Dates, times, fractions, scientific notation
and text (`@`) sections return None: the caller keeps the General text (calamine already reads date
cells as dates). python-calamine does not expose number formats, hence this module.
"""

from __future__ import annotations

import functools
import math
import re
from decimal import ROUND_HALF_UP, Decimal

# Excel's built-in number formats that change how a number reads (ids 14-22, 45-47: dates and times)
BUILTIN = {1: "0", 2: "0.00", 3: "#,##0", 4: "#,##0.00", 9: "0%", 10: "0.00%", 37: "#,##0 ;(#,##0)",
           38: "#,##0 ;[Red](#,##0)", 39: "#,##0.00;(#,##0.00)", 40: "#,##0.00;[Red](#,##0.00)"}
CONDITION = re.compile(r"^\[(<=|>=|<>|<|>|=)(-?\d+(?:\.\d+)?)\]")
LITERAL_CHARS = set("$-+/():!^&'~{}<>= ")


@functools.lru_cache(maxsize=256)
def _sections(code: str) -> tuple[str, ...]:
    out, current, quoted, escaped = [], [], False, False
    for ch in code:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch == ";" and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return tuple(out)


@functools.lru_cache(maxsize=1024)
def _condition(section: str):
    """(condition or None, the section without its brackets) -- colours and locales dropped."""
    condition = None
    while section.startswith("["):
        match = CONDITION.match(section)
        end = section.find("]")
        if end < 0:
            return None, None
        if match:
            condition = (match.group(1), float(match.group(2)))
        elif not re.fullmatch(r"\[(Red|Black|Blue|Green|White|Yellow|Cyan|Magenta|Color\d+|\$[^\]]*)\]",
                              section[: end + 1], re.IGNORECASE):
            return None, None     # [h], [mm], elapsed times: not a number format we render
        section = section[end + 1:]
    return condition, section


def _holds(op: str, bound: float, value: float) -> bool:
    return {"<": value < bound, "<=": value <= bound, ">": value > bound, ">=": value >= bound,
            "=": value == bound, "<>": value != bound}[op]


def _choose(code: str, value: float) -> tuple[str, bool] | None:
    """The section that applies and whether the value is shown without its sign."""
    parsed = [_condition(s) for s in _sections(code)]
    if any(s is None for _, s in parsed):
        return None
    numeric = parsed[:3]
    if any(c is not None for c, _ in numeric):
        for index, (condition, section) in enumerate(numeric):
            if condition is None or _holds(*condition, value):
                return section, index > 0 and condition is None
        return None
    if len(numeric) == 1 or value > 0 or (value == 0 and len(numeric) == 2):
        return numeric[0][1], False
    if value < 0:
        return numeric[1][1], True
    return numeric[2][1], False


@functools.lru_cache(maxsize=1024)
def _tokens(section: str) -> tuple[tuple[str, str], ...] | None:
    """('digit', '0'|'#'|'?'), ('point', '.'), ('comma', ','), ('percent', '%'), ('text', ...)."""
    tokens, i = [], 0
    while i < len(section):
        ch = section[i]
        if ch == '"':
            end = section.find('"', i + 1)
            if end < 0:
                return None
            tokens.append(("text", section[i + 1:end]))
            i = end + 1
            continue
        if ch == "\\" and i + 1 < len(section):
            tokens.append(("text", section[i + 1]))
            i += 2
            continue
        if ch in "_*" and i + 1 < len(section):
            tokens.append(("text", " " if ch == "_" else ""))
            i += 2
            continue
        if ch in "0#?":
            tokens.append(("digit", ch))
        elif ch == ".":
            tokens.append(("point", ch))
        elif ch == ",":
            tokens.append(("comma", ch))
        elif ch == "%":
            tokens.append(("percent", ch))
        elif ch in LITERAL_CHARS:
            tokens.append(("text", ch))
        else:
            return None           # letters (dates, E+, General, @) or anything else: not rendered here
        i += 1
    return tuple(tokens)


def render(value: float, code: str) -> str | None:
    """The displayed text, or None when the format is not one this module renders."""
    if not math.isfinite(value) or not code or code.strip().lower() == "general":
        return None
    chosen = _choose(code, value)
    if chosen is None:
        return None
    section, unsigned = chosen
    tokens = _tokens(section)
    if tokens is None or not any(kind == "digit" for kind, _ in tokens):
        return None
    point = next((i for i, (kind, _) in enumerate(tokens) if kind == "point"), len(tokens))
    integer_digits = [i for i, (kind, _) in enumerate(tokens[:point]) if kind == "digit"]
    decimals = [i for i, (kind, _) in enumerate(tokens) if kind == "digit" and i > point]
    # a comma right after the last integer placeholder (not followed by a digit) scales by 1,000
    last = integer_digits[-1] if integer_digits else -1
    scale = 0
    j = last + 1
    while j < point and tokens[j][0] == "comma":
        scale += 1
        j += 1
    grouping = any(kind == "comma" for kind, _ in tokens[:last]) if integer_digits else False
    number = Decimal(repr(abs(value)))
    number = number * (100 ** sum(1 for kind, _ in tokens if kind == "percent")) / (1000 ** scale)
    number = number.quantize(Decimal(1).scaleb(-len(decimals)), rounding=ROUND_HALF_UP)
    whole, _, fraction = f"{number:f}".partition(".")
    whole = whole.lstrip("0")
    out = [text for _, text in tokens]
    for index, (kind, _) in enumerate(tokens):
        if kind == "comma":
            out[index] = ""
    if grouping:
        first = integer_digits[0]
        if any(kind == "text" for kind, _ in tokens[first:last + 1]):
            return None           # literals inside a grouped number: not rendered here
        zeros = sum(1 for p in integer_digits if tokens[p][1] == "0")
        grouped = f"{int(whole or '0'):,}" if (whole or zeros) else ""
        grouped = grouped if len(whole) >= zeros else f"{int(whole or '0'):0{zeros + (zeros - 1) // 3},}"
        for position in integer_digits:
            out[position] = ""
        out[first] = grouped
    else:
        digits = list(whole)      # integer placeholders right to left; extra digits go before the leftmost
        for position in reversed(integer_digits):
            out[position] = digits.pop() if digits else {"0": "0", "?": " ", "#": ""}[tokens[position][1]]
        if integer_digits and digits:
            out[integer_digits[0]] = "".join(digits) + out[integer_digits[0]]
    fraction = fraction.ljust(len(decimals), "0")
    kept = len(decimals)
    while kept > 0 and tokens[decimals[kept - 1]][1] in "#?" and fraction[kept - 1] == "0":
        kept -= 1
    for index, position in enumerate(decimals):
        out[position] = fraction[index] if index < kept else {"?": " ", "#": ""}[tokens[position][1]]
    sign = "-" if value < 0 and not unsigned and number != 0 else ""
    return sign + "".join(out)
