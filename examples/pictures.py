"""The PNG picture of each badge level, that a baked credential is made from
(`GET /openbadges/credentials/{award_id}.png`).

The badges' own pictures are SVG, white on the tier's disc that the pages' stylesheet draws.
A baked badge needs a PNG that stands on its own, so `python -m examples.pictures` rendered the
disc and the picture of each level once, with the headless Chromium at `/usr/bin/chromium`, into
`examples/static/badges/{slug}-{level}.png` (256 by 256 pixels, transparent corners); they are
committed. Run it again after changing a badge's picture or adding a level.
"""

from __future__ import annotations

import pathlib
import subprocess
import tempfile

from abadges import Badge, badges

HERE = pathlib.Path(__file__).parent
PICTURES = HERE / "static" / "badges"
CHROMIUM = "/usr/bin/chromium"
SIZE = 256
#: The tiers' discs, as `static/style.css` draws them.
DISCS = {
    "bronze": "linear-gradient(135deg, #e7a56c, #9c5a25)",
    "silver": "linear-gradient(135deg, #d5dbe3, #7f8b99)",
    "gold": "linear-gradient(135deg, #f8d86a, #c48f12)",
    "plain": "linear-gradient(135deg, #8b93ff, #4f46e5)",
}
PAGE = """<!doctype html>
<html><body style="margin: 0; background: transparent">
<div style="width: {size}px; height: {size}px; border-radius: 50%; background: {disc};
            box-shadow: inset 0 0 0 12px #ffffff55; display: grid; place-items: center">
  <img src="{image}" width="{inner}" height="{inner}" alt="">
</div>
</body></html>
"""


def picture(slug: str, level: int) -> pathlib.Path:
    """The PNG file of a badge's level (which may not exist, for a badge added since)."""
    return PICTURES / f"{slug}-{level}.png"


def render(badge: Badge, level: int, directory: pathlib.Path) -> pathlib.Path:
    """Render the PNG of `badge`'s `level` from its SVG, on its tier's disc."""
    from .pages import tier  # Not at the top: the pages import the API, which imports this.

    image = badge.image_of(level)
    assert image is not None and image.startswith("/static/"), image
    page = directory / f"{badge.slug}-{level}.html"
    page.write_text(
        PAGE.format(
            size=SIZE,
            inner=SIZE * 5 // 8,
            disc=DISCS[tier(badge, level)],
            image=(HERE / image.removeprefix("/")).as_uri(),
        )
    )
    out = picture(badge.slug, level)
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--default-background-color=00000000",
            f"--window-size={SIZE},{SIZE}",
            f"--screenshot={out}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


def main() -> None:
    from . import badges as _registered  # noqa: F401  (registers the example's badges)

    with tempfile.TemporaryDirectory() as directory:
        for badge in badges.registered.values():
            for level in range(1, len(badge.levels) + 1):
                out = render(badge, level, pathlib.Path(directory))
                print(f"{out.relative_to(HERE.parent)}: {out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
