"""Render a report page to PNG with headless Chromium (Debian's `chromium`, which `hwsim setup` installs)."""

import shutil
import subprocess
import tempfile
from pathlib import Path

from hwsim.errors import HwsimError

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# flags for a closed network and a root user (shared/notes: without the background-networking ones Chromium
# spends its start retrying connections)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def browser() -> str:
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        raise HwsimError(f"a report screenshot needs Chromium ({' or '.join(BROWSERS)} on PATH): run `hwsim setup`")
    return found


def screenshot(page: Path, png: Path, width: int = 1400, height: int = 2400) -> Path:
    """The top `height` pixels of `page` at `width`, written to `png` atomically."""
    png = Path(png)
    tmp = png.with_name(f".{png.name}.tmp.png")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={tmp}", Path(page).resolve().as_uri()]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or not tmp.is_file():
        raise HwsimError(f"chromium could not render {page}: {(r.stderr.strip().splitlines() or ['no output'])[-1]}")
    tmp.replace(png)
    return png
