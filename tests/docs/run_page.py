"""Run one page's examples in order: Python blocks in one namespace, as a reader pasting them
would, shell blocks with bash (-e, -u, pipefail) in the same folder.

    python run_page.py BLOCKS.json

BLOCKS.json is a list of {"name": "page.md:LINE", "language": "python" | "bash", "code": ...}. Stops at the first block that
raises and names it, so a failure points at the example, not at this script.
"""

from __future__ import annotations

import json
import subprocess
import sys
import traceback
from pathlib import Path


def main(path: str) -> int:
    namespace: dict[str, object] = {"__name__": "__main__"}
    for block in json.loads(Path(path).read_text()):
        try:
            if block["language"] == "bash":
                bash = ["bash", "-euo", "pipefail", "-c", block["code"]]
                subprocess.run(bash, check=True, timeout=600)
            else:
                # Running the docs' own code is the point of this script.
                exec(compile(block["code"], block["name"], "exec"), namespace)  # noqa: S102
        except BaseException:  # noqa: BLE001 - any failure of an example is reported as its own
            print(f"example {block['name']} failed:", file=sys.stderr)
            traceback.print_exc()
            return 1
        # On a line of its own, whatever the block printed last (curl ends without a newline).
        print(f"\nok {block['name']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
