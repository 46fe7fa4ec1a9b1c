"""Accessibility checks in a real browser, over the DevTools protocol (`tests/support/cdp.py`).

- `Axe`: injects the vendored axe-core (`vendor/axe-core/axe.min.js`, never served by the
  product) into the page as it is now and runs the WCAG 2.1 A and AA rules; violations
  of impact `serious` or `critical` are kept, each with its page, rule, impact, target
  selectors and help address. What axe-core could not decide ("needs review") counts too,
  but for colour contrast.
- `motion`: what still moves on the page (animations, transitions), by computed style.
- `tab_walk`: presses Tab through the page as a keyboard user would, and tells which
  interactive elements were never reached and which showed no focus indicator.
- `text_spacing`: what is cut or spills out of its box once text takes the spacing of
  WCAG 1.4.12.

The script runs through `Runtime.evaluate`, so it works with the page's own scripts off
(`Emulation.setScriptExecutionDisabled`) and under the page's content security policy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.cdp import Browser, CdpError

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
FAILING_IMPACTS = ("serious", "critical")
# What axe-core could not decide ("needs review") fails too, but for colour contrast where
# it cannot tell the background (text over a picture, a glyph that is not text): that
# takes a human eye, at the screenshots the page's browser test keeps.
REVIEWED_BY_EYE = ["color-contrast"]
# And these, reviewed: the map's zoom buttons show a symbol ("+" and a minus), not text, and
# are named "Zoom in" and "Zoom out" in the page's language (WCAG 2.5.3 is about text).
REVIEWED: dict[str, list[str]] = {
    "label-content-name-mismatch": [".leaflet-control-zoom-in", ".leaflet-control-zoom-out"],
}


@dataclass(frozen=True)
class Violation:
    page: str
    rule: str
    impact: str
    help: str
    url: str
    targets: tuple[str, ...]
    summaries: tuple[str, ...]

    def describe(self) -> str:
        lines = [f"[{self.page}] {self.rule} ({self.impact}): {self.help}", f"    {self.url}"]
        for target, summary in zip(self.targets, self.summaries, strict=True):
            lines.append(f"    - {target}")
            if summary:
                lines.append("      " + summary.replace("\n", "\n      "))
        return "\n".join(lines)


def evaluate_async(browser: Browser, expression: str, timeout_s: float = 60.0) -> Any:
    """Evaluate an expression that yields a promise, and return what it resolves to."""
    result = browser.call(
        "Runtime.evaluate",
        timeout_s=timeout_s,
        expression=expression,
        awaitPromise=True,
        returnByValue=True,
    )
    if "exceptionDetails" in result:
        raise CdpError(f"{expression[:80]}: {result['exceptionDetails']}")
    return result["result"].get("value")


_RUN = """
(async (REVIEWED_BY_EYE, REVIEWED) => {
  const results = await axe.run(document, {
    runOnly: {type: "tag", values: %s},
    resultTypes: ["violations", "incomplete"],
  });
  const review = results.incomplete.filter(v => !REVIEWED_BY_EYE.includes(v.id))
    .map(v => ({...v, nodes: v.nodes.filter(n => !(REVIEWED[v.id] || []).includes(
      n.target.join(" ")))}))
    .filter(v => v.nodes.length);
  const undecided = review.map(v => ({...v, id: v.id + " (needs review)"}));
  return results.violations.concat(undecided).map(v => ({
    id: v.id, impact: v.impact, help: v.help, url: v.helpUrl,
    nodes: v.nodes.map(n => ({
      target: n.target.map(t => Array.isArray(t) ? t.join(" >>> ") : t).join(" "),
      impact: n.impact,
      summary: n.failureSummary || "",
    })),
  }));
})(%s, %s)
"""


@dataclass
class Axe:
    """Runs axe-core on page after page of one browser, and keeps what fails."""

    browser: Browser
    source: str = field(default_factory=lambda: AXE.read_text(encoding="utf-8"))
    violations: list[Violation] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)

    def check(self, page: str) -> list[Violation]:
        """Audit the document as it is now; `page` names it in the report."""
        if not self.browser.evaluate("typeof axe !== 'undefined'"):
            self.browser.call("Runtime.evaluate", expression=self.source, returnByValue=True)
            assert self.browser.evaluate("typeof axe !== 'undefined'"), "axe-core did not load"
        found = evaluate_async(
            self.browser,
            _RUN % (json.dumps(WCAG_21_AA), json.dumps(REVIEWED_BY_EYE), json.dumps(REVIEWED)),
        )
        kept: list[Violation] = []
        for v in found:
            nodes = [n for n in v["nodes"] if (n["impact"] or v["impact"]) in FAILING_IMPACTS]
            if not nodes:
                continue
            kept.append(
                Violation(
                    page=page,
                    rule=v["id"],
                    impact=v["impact"],
                    help=v["help"],
                    url=v["url"],
                    targets=tuple(n["target"] for n in nodes),
                    summaries=tuple(n["summary"] for n in nodes),
                )
            )
        self.violations.extend(kept)
        self.pages.append(page)
        return kept

    def report(self) -> str:
        return (
            f"{len(self.violations)} serious or critical WCAG 2.1 AA violations "
            f"on {len({v.page for v in self.violations})} of {len(self.pages)} pages:\n"
            + "\n".join(v.describe() for v in self.violations)
        )


_MOVING = """
(() => {
  const seconds = list => list.split(",").map(s => s.trim()).map(
    s => s.endsWith("ms") ? parseFloat(s) / 1000 : parseFloat(s));
  const moving = [];
  for (const el of document.querySelectorAll("*")) {
    for (const pseudo of [null, "::before", "::after"]) {
      const s = getComputedStyle(el, pseudo);
      const what = (el.id ? "#" + el.id : el.tagName.toLowerCase()) +
        (el.className && typeof el.className === "string"
          ? "." + el.className.trim().split(/\\s+/).join(".") : "") +
        (pseudo || "");
      if (s.animationName !== "none" && Math.max(...seconds(s.animationDuration)) > 0.01)
        moving.push(what + ": animation " + s.animationName + " " + s.animationDuration);
      if (s.transitionProperty !== "none" && Math.max(...seconds(s.transitionDuration)) > 0.01)
        moving.push(what + ": transition " + s.transitionProperty + " " + s.transitionDuration);
    }
  }
  return moving;
})()
"""


def motion(browser: Browser) -> list[str]:
    """Every element (and ::before, ::after) whose computed style animates or transitions."""
    moving: list[str] = browser.evaluate(_MOVING)
    return moving


# Interactive elements a keyboard user must reach: every rendered, enabled link, button,
# field and summary (a `tabindex="-1"` on one of them is a fault, not an excuse; of a
# group of radio buttons, the one Tab stops at), and any other element put in the tab
# order. `__a11yKey` names each one for the report, and
# `__a11yRest` keeps its look unfocused, to tell whether focus changes it.
_INTERACTIVE = """
(() => {
  const native = "a[href], button, input:not([type=hidden]), select, textarea, summary";
  const selector = "[tabindex]:not([tabindex='-1']), [contenteditable=true]";
  const key = el => {
    if (el.id) return "#" + el.id;
    const parts = [];
    for (let n = el; n && n !== document.body; n = n.parentElement) {
      const same = n.parentElement
        ? [...n.parentElement.children].filter(c => c.tagName === n.tagName) : [n];
      const nth = same.length > 1 ? ":nth-of-type(" + (same.indexOf(n) + 1) + ")" : "";
      parts.unshift(n.tagName.toLowerCase() + nth);
      if (n.id) { parts[0] = "#" + n.id; break; }
    }
    return parts.join(" > ");
  };
  const look = el => { const s = getComputedStyle(el); return [s.outlineStyle, s.outlineWidth,
    s.outlineColor, s.boxShadow, s.borderColor, s.backgroundColor, s.textDecorationLine
  ].join(" "); };
  window.__a11yKey = key;
  window.__a11yLook = look;
  window.__a11yRest = {};
  const custom = el => !el.matches(native) && el.tabIndex >= 0;
  // Tab stops once in a group of radio buttons: at the checked one, else the first
  const group = el => [...(el.form || document).querySelectorAll("input[type=radio]")]
    .filter(r => r.name === el.name);
  const stop = el => el.type !== "radio" || !el.name
    || el === (group(el).find(r => r.checked) || group(el)[0]);
  return [...document.querySelectorAll(native + ", " + selector)]
    .filter(el => !el.disabled && el.getClientRects().length > 0
      && getComputedStyle(el).visibility !== "hidden" && !el.closest("[inert]")
      && (el.matches(native) || custom(el)) && stop(el)
      && !(el.tagName === "SUMMARY" && el.parentElement.tagName !== "DETAILS"))
    .map(el => { const k = key(el); window.__a11yRest[k] = look(el); return k; });
})()
"""

_FOCUSED = """
(() => {
  const el = document.activeElement;
  if (!el || el === document.body || el === document.documentElement) return null;
  const s = getComputedStyle(el);
  const key = window.__a11yKey(el);
  const outline = s.outlineStyle !== "none" && parseFloat(s.outlineWidth) >= 1;
  const ring = s.boxShadow && s.boxShadow !== "none";
  const changed = window.__a11yLook(el) !== window.__a11yRest[key];
  return {key: key, indicator: (outline || ring) && changed,
          outline: s.outlineStyle + " " + s.outlineWidth + " " + s.outlineColor};
})()
"""


@dataclass(frozen=True)
class TabWalk:
    expected: list[str]
    visited: list[str]
    unreached: list[str]
    no_indicator: list[str]


def press_tab(browser: Browser) -> None:
    key = {"key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9, "nativeVirtualKeyCode": 9}
    browser.call("Input.dispatchKeyEvent", type="rawKeyDown", **key)
    browser.call("Input.dispatchKeyEvent", type="keyUp", **key)


def tab_walk(browser: Browser) -> TabWalk:
    """Tab from the top of the page until focus leaves it or comes round again."""
    browser.evaluate("document.activeElement && document.activeElement.blur()")
    expected: list[str] = browser.evaluate(_INTERACTIVE)
    visited: list[str] = []
    no_indicator: list[str] = []
    for _ in range(8 * len(expected) + 5):  # a date field takes a Tab per part
        press_tab(browser)
        focused = browser.evaluate(_FOCUSED)
        if visited and focused is not None and focused["key"] == visited[-1]:
            continue  # the next part of the same field
        if focused is None or focused["key"] in visited:
            break
        visited.append(focused["key"])
        if not focused["indicator"]:
            no_indicator.append(f"{focused['key']} (outline: {focused['outline']})")
    unreached = [k for k in expected if k not in visited]
    return TabWalk(expected, visited, unreached, no_indicator)


# WCAG 1.4.12: text must survive these spacings without being cut or overlapping.
TEXT_SPACING = [
    "* { line-height: 1.5 !important; letter-spacing: 0.12em !important;"
    " word-spacing: 0.16em !important; }",
    "p { margin-bottom: 2em !important; }",
]

_SPILLING = """
(() => {
  const spilling = new Set();
  for (const el of document.querySelectorAll("body *")) {
    if (el.closest(".sr-only, svg, template, script") || el.clientHeight === 0) continue;
    if (el.scrollHeight > el.clientHeight + 1 || el.scrollWidth > el.clientWidth + 1)
      spilling.add(window.__a11yKey ? window.__a11yKey(el) : el.tagName);
  }
  return [...spilling];
})()
"""


def text_spacing(browser: Browser) -> list[str]:
    """What spills out of its box once text takes WCAG 1.4.12's spacing, and did not
    before (the rules go in through the CSS object model, which the page's content
    security policy allows, and come out again)."""
    browser.evaluate(_INTERACTIVE)  # defines __a11yKey
    before = set(browser.evaluate(_SPILLING))
    rules = json.dumps(TEXT_SPACING)
    browser.evaluate(
        f"(s => {{ for (const r of {rules}) s.insertRule(r, s.cssRules.length);"
        " window.__a11ySpacing = s; })(document.styleSheets[document.styleSheets.length - 1])"
    )
    try:
        after: list[str] = browser.evaluate(_SPILLING)
    finally:
        browser.evaluate(
            f"(s => {{ for (const _ of {rules}) s.deleteRule(s.cssRules.length - 1); }})"
            "(window.__a11ySpacing)"
        )
    return [k for k in after if k not in before]
