"""Keyboard and labels: every control of every page has an accessible name, and a person without a
mouse can sign in and reach the prompt, the sources, the options and Train, in reading order."""

from __future__ import annotations

from typing import Any

import pytest
from web_support import PASSWORD, WebSuite, email, new_page, no_csp_violations, sign_up

pytestmark = pytest.mark.slow

#: Controls the user can reach that have no accessible name (label, aria-label/-labelledby, text, title).
UNNAMED = """() => [...document.querySelectorAll('a[href], input, select, textarea, button, summary')]
  .filter(el => el.type !== 'hidden' && !el.disabled && el.getClientRects().length > 0)
  .filter(el => {
    const byLabel = el.labels ? [...el.labels].map(l => l.textContent.trim()).join(' ') : '';
    const byRef = (el.getAttribute('aria-labelledby') || '').split(/\\s+/).filter(Boolean)
      .map(id => (document.getElementById(id) || {}).textContent || '').join(' ').trim();
    const named = byLabel || el.getAttribute('aria-label') || byRef || el.textContent.trim() || el.title;
    return !named;
  })
  .map(el => el.outerHTML.slice(0, 160))"""

#: What has the keyboard focus: its tag and accessible text, to follow Tab presses.
FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return 'body';
  const label = el.labels && el.labels.length ? el.labels[0].textContent.trim() : '';
  return `${el.tagName.toLowerCase()}:${label || el.getAttribute('aria-label') || el.textContent.trim().slice(0, 40)}`;
}"""


def tab_until(page: Any, wanted: str, limit: int = 40) -> list[str]:
    """Press Tab until the focused control's description starts with ``wanted``; the path taken."""
    seen: list[str] = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        seen.append(page.evaluate(FOCUSED))
        if seen[-1].startswith(wanted):
            return seen
    raise AssertionError(f"Tab never reached {wanted!r}; focus went through {seen}")


def test_a_keyboard_alone_signs_in_and_reaches_every_control_of_the_dashboard(
    web_browser: Any, web_suite: WebSuite
) -> None:
    address = email()
    setup = new_page(web_browser)
    sign_up(setup, web_suite.url, address, PASSWORD)
    setup.context.close()

    page = new_page(web_browser)
    page.goto(web_suite.url + "/signin")
    page.get_by_role("heading", name="Sign in").wait_for()
    tab_until(page, "input:Email")
    page.keyboard.type(address)
    tab_until(page, "input:Password", limit=2)
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Train a model").wait_for()

    path = tab_until(page, "textarea:What should the model do?")
    assert any(step.startswith("a:") for step in path), f"the navigation links come first: {path}"
    page.keyboard.type("Classify handwritten digits")
    path = tab_until(page, "button:Train")
    assert any("Data sources" in step for step in path) and any("Options" in step for step in path), path
    # The sources and options open from the keyboard, and their fields are in the tab order then.
    page.get_by_text("Data sources (optional)").focus()
    page.keyboard.press("Enter")
    tab_until(page, "textarea:URLs, one per line", limit=3)
    no_csp_violations(page)


@pytest.mark.parametrize("path", ["/", "/models", "/datasets", "/settings", "/signin", "/signup"])
def test_every_control_of_every_page_has_an_accessible_name(
    web_browser: Any, web_suite: WebSuite, path: str
) -> None:
    page = new_page(web_browser)
    if path not in ("/signin", "/signup"):
        sign_up(page, web_suite.url, email(), PASSWORD)
    page.goto(web_suite.url + path)
    page.locator("main h1, main h2").first.wait_for()
    page.wait_for_load_state("networkidle")
    closed = page.locator("details:not([open]) > summary")
    while closed.count():
        closed.first.click()  # closed sections hide their controls from the check
    unnamed = page.evaluate(UNNAMED)
    assert unnamed == [], f"{path}: controls without a name: {unnamed}"
    no_csp_violations(page)


def test_the_name_check_does_see_unnamed_controls(web_browser: Any) -> None:
    page = new_page(web_browser)
    page.set_content(
        '<label for="a">Named</label><input id="a"><input id="b" placeholder="not a name">'
        '<button aria-label="Close"></button><button></button><a href="/x">link</a>'
    )
    unnamed = page.evaluate(UNNAMED)
    assert [u.split(" ")[0:2] for u in unnamed] == [["<input", 'id="b"'], ["<button></button>"]]
