"""mkdocs hook: the analyzer's rule catalogue (docs/migrations/rules.md), generated at build time from
the rule modules in hrms_pipelines/migrations/check/rules/, so a rule added there is in the manual
with its doc and its failing and passing examples without anyone copying it by hand.

Every module of that package is read (pkgutil, not the registry's list), and every `Rule` object at
its top level is documented once, by id; the registry (`rules.ALL`) is checked against them, so a
rule module the analyzer does not run, or a registered rule no module holds, fails the build."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

MARKER = "<!-- analyzer-rules -->"
PACKAGE = "hrms_pipelines.migrations.check.rules"


def collect() -> list:
    from hrms_pipelines.migrations.check import rules as registry
    from hrms_pipelines.migrations.check.model import Rule

    found: dict[str, Rule] = {}
    for info in sorted(pkgutil.iter_modules(registry.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{PACKAGE}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, Rule):
                found.setdefault(value.id, value)
    unregistered = sorted(set(found) - set(registry.ALL))
    missing = sorted(set(registry.ALL) - set(found))
    if unregistered or missing:
        raise RuntimeError(f"analyzer rules: in a rule module but not registered in rules.ALL: {unregistered}; "
                           f"registered but in no rule module: {missing}")
    return sorted(found.values(), key=lambda rule: rule.id)


def severity(rule) -> str:
    """The rule's severity; "by table size" for the rules whose check grades a finding by the table's size
    tier (FileState.tier: DANGER on a large table, WARNING on another existing one)."""
    if rule.check is not None and "tier(" in inspect.getsource(inspect.getmodule(rule.check)):
        return "by table size"
    return rule.severity.value


def kind(rule) -> str:
    if rule.found_by_trace:
        return "trace mode"
    if rule.escalation:
        return "privilege escalation (never suppressible)"
    if not rule.node_types:
        return "the file as a whole"
    return "statement"


def fence(sql: str) -> str:
    body = sql.rstrip("\n")
    ticks = "````" if "```" in body else "```"
    return f"{ticks}sql\n{body}\n{ticks}\n"


def render(rules: list) -> str:
    out = ["| rule | severity | squawk | kind |", "|---|---|---|---|"]
    for rule in rules:
        out.append(f"| [`{rule.id}`](#{rule.id}) | {severity(rule)} | {f'`{rule.squawk}`' if rule.squawk else ''} | {kind(rule)} |")
    out.append("")
    for rule in rules:
        out.append(f"## {rule.id} {{ #{rule.id} }}\n")
        facts = [f"**{severity(rule)}**", kind(rule)]
        if rule.squawk:
            facts.append(f"squawk: `{rule.squawk}`")
        if rule.node_types:
            facts.append("looks at " + ", ".join(f"`{t}`" for t in rule.node_types))
        if rule.in_down_files:
            facts.append("also in down files")
        out.append(" · ".join(facts) + "\n")
        out.append(f"**Why.** {rule.why}\n")
        out.append(f"**Instead.** {rule.fix}\n")
        if rule.bad.strip():
            out.append("Fails:\n\n" + fence(rule.bad))
        if rule.good.strip():
            out.append("Passes:\n\n" + fence(rule.good))
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render(collect()))
