"""Screenshot one page of a project's running local Airflow (`smaker-airflow up`) for the docs.

Logs in with the project's SimpleAuthManager login, opens each UI path in headless Chromium,
waits for the page to settle and saves a PNG cut to the given height (the docs keep pictures
under ~250 KB). Needs playwright, which is not a dependency of the package:

    uv pip install playwright
    python scripts/ui_screenshot.py --project /path/to/project \\
        /dags/landing_mapped/runs/RUN_ID/tasks/count_rows/mapped docs/layout-mapped.png --height 580

Run ids contain `+`: write it as `%2B` in the path. Uses Debian's /usr/bin/chromium by
default (no `playwright install` needed); `--chromium ''` uses playwright's own browser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from smaker_airflow.deploy.local import LocalAirflow


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="UI path, e.g. /dags/<dag_id>/runs/<run_id>")
    parser.add_argument("output", type=Path, help="PNG file to write")
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="project root (default: current folder)")
    parser.add_argument("--width", type=int, default=1400, help="viewport width in pixels")
    parser.add_argument("--height", type=int, default=850, help="viewport height = picture height in pixels")
    parser.add_argument("--settle-ms", type=int, default=2500, help="wait after the network is idle (charts animate)")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="browser executable ('' for playwright's)")
    args = parser.parse_args()

    info = LocalAirflow.for_project(args.project).status()
    if info is None:
        sys.exit(f"No local Airflow of {args.project} is running: start it with `smaker-airflow up`.")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium or None, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(info.url + "/")  # redirects to the login form
            page.fill("input[name=username]", info.username)
            page.fill("input[name=password]", info.password)
            page.keyboard.press("Enter")
            page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)
            page.goto(info.url + args.path)
            page.wait_for_load_state("networkidle", timeout=60_000)
            page.wait_for_timeout(args.settle_ms)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.output))
        finally:
            browser.close()
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KiB) from {info.url}{args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
