"""The README's method table (section "### Methods") lists the catalog: every method of
``engine.catalog.methods.CATALOG``, in catalog order, with its ``description`` word for word.

A row reads ``| `name` | description |``; a ``|`` inside the description may be written ``\\|`` (markdown's escape,
so that the table renders): it is read back as ``|``.
"""

import re

from engine.catalog.methods import CATALOG
from engine.paths import REPO_ROOT

README = REPO_ROOT / "README.md"
HEADING = "### Methods"
ROW = re.compile(r"^\|\s*`(?P<name>[^`]+)`\s*\|\s?(?P<description>.*?)\s?\|\s*$")


def readme_methods(text: str) -> list[tuple[str, str]]:
    """(name, description) of each row of the table under the first heading that starts with :data:`HEADING`."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(HEADING)), None)
    assert start is not None, f"README.md has no section {HEADING!r}"
    rows, in_table = [], False
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        if not line.startswith("|"):
            if in_table:
                break  # the table ended
            continue
        in_table = True
        m = ROW.match(line)
        if m:  # the header and the |---| line have no `name`
            rows.append((m["name"], m["description"].replace("\\|", "|")))
    return rows


def test_readme_rows_are_parsed():
    text = "## x\n### Methods (y)\n\n| name | what |\n|---|---|\n| `a` | s = \\|g\\| / b. |\n| `b` | two. |\n\nmore\n"
    assert readme_methods(text) == [("a", "s = |g| / b."), ("b", "two.")]


def test_readme_method_table_equals_the_catalog():
    rows = readme_methods(README.read_text(encoding="utf-8"))
    assert [name for name, _ in rows] == list(CATALOG), "README method names differ from the catalog's (or order)"
    for name, description in rows:
        assert description == CATALOG[name].description, f"README description of {name!r} differs from the catalog"
