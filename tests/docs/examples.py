"""The code examples of the docs: every ```python and ```bash block of docs/*.md and README.md.

An example is run unless the line just above its fence says why not, as
`<!-- not run: REASON -->` (an install command, a server that would not return, a cluster).
Other fences (```json, ```text, ```console) show data or output, not examples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = (*sorted(DOCS.glob("*.md")), ROOT / "README.md")
RUN = {"python": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
FENCE = re.compile(r"^```(\w*)\s*$")
NOT_RUN = re.compile(r"^<!-- not run: (.+) -->$")
# The examples talk to the server at its documented address; the tests' server listens elsewhere.
ADDRESS = re.compile(r"(?:127\.0\.0\.1|localhost):8000")


@dataclass(frozen=True)
class Example:
    page: str
    line: int  # of the opening fence, 1-based
    language: str  # "python" or "bash"
    code: str
    not_run: str | None  # the reason, when the page says the block is not run

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"

    def at(self, address: str) -> str:
        """The code with the documented server address replaced by `address` (host:port)."""
        return ADDRESS.sub(address, self.code)


def examples(pages: tuple[Path, ...] = PAGES) -> list[Example]:
    found = []
    for page in pages:
        lines = page.read_text().splitlines()
        i = 0
        while i < len(lines):
            fence = FENCE.match(lines[i])
            if not fence:
                i += 1
                continue
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            language = RUN.get(fence.group(1))
            if language:
                reason = NOT_RUN.match(lines[i - 1]) if i else None
                found.append(
                    Example(
                        page=page.name,
                        line=i + 1,
                        language=language,
                        code="\n".join(lines[i + 1 : end]) + "\n",
                        not_run=reason.group(1) if reason else None,
                    )
                )
            i = end + 1
    return found
