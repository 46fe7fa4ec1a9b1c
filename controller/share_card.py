"""The shareable picture of a monument's current state: a 1200 by 630 PNG card (the size
link previews use), drawn with Pillow from words already translated.

The state is drawn as an icon and written in words (never colour alone); only a lit
monument's card carries the campaign colour, in a band and a swatch. The picture holds
what the monument's public page says and nothing else.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 1200, 630
BACKGROUND = (18, 20, 23)
TEXT = (236, 236, 236)
MUTED = (185, 188, 194)
NEUTRAL = (90, 95, 102)
STATE_COLOURS = {
    "lit": (111, 220, 140),
    "pending": (240, 184, 74),
    "scheduled": (138, 180, 248),
    "unconfirmed": (255, 138, 128),
    "offline": (185, 188, 194),
    "off": (185, 188, 194),
}
_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
MARGIN = 80


@dataclass(frozen=True)
class Card:
    """What the card says, in the reader's language."""

    name: str
    city: str
    state: str
    """The state's code (`lit`, `pending`, ...): picks the icon."""
    state_label: str
    lines: tuple[str, ...] = ()
    """Further lines under the state: when it was confirmed, the campaign."""
    color: str | None = None
    """The campaign colour, drawn only when the state is `lit`."""
    footer: str = "Illuminate"


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size)


def _rgb(color: str) -> tuple[int, int, int]:
    return (int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16))


def _fit(draw: ImageDraw.ImageDraw, text: str, size: int, width: int) -> str:
    """`text`, cut with an ellipsis to fit `width` pixels."""
    font = _font(size)
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _icon(draw: ImageDraw.ImageDraw, state: str, x: int, y: int, size: int) -> None:
    """The state's icon (the page's shapes), its top left at (x, y)."""
    colour = STATE_COLOURS.get(state, MUTED)
    s = size / 24
    w = max(3, int(2 * s))

    def p(px: float, py: float) -> tuple[float, float]:
        return (x + px * s, y + py * s)

    def circle(cx: float, cy: float, r: float, fill: bool = False) -> None:
        box = [p(cx - r, cy - r), p(cx + r, cy + r)]
        draw.ellipse(box, outline=colour, width=w, fill=colour if fill else None)

    if state == "lit":
        circle(12, 12, 4.5, fill=True)
        for a, b in (
            ((12, 2), (12, 5)),
            ((12, 19), (12, 22)),
            ((2, 12), (5, 12)),
            ((19, 12), (22, 12)),
            ((4.9, 4.9), (7, 7)),
            ((17, 17), (19.1, 19.1)),
            ((4.9, 19.1), (7, 17)),
            ((17, 7), (19.1, 4.9)),
        ):
            draw.line([p(*a), p(*b)], fill=colour, width=w)
    elif state == "pending":
        draw.line([p(6, 3), p(18, 3)], fill=colour, width=w)
        draw.line([p(6, 21), p(18, 21)], fill=colour, width=w)
        draw.line([p(7, 3), p(17, 21)], fill=colour, width=w)
        draw.line([p(17, 3), p(7, 21)], fill=colour, width=w)
    elif state == "scheduled":
        circle(12, 12, 9)
        draw.line([p(12, 7), p(12, 12), p(15.5, 14)], fill=colour, width=w, joint="curve")
    elif state == "unconfirmed":
        draw.polygon([p(12, 3), p(2, 20.5), p(22, 20.5)], outline=colour, width=w)
        draw.line([p(12, 9.5), p(12, 14.5)], fill=colour, width=w)
        circle(12, 17.5, 0.8, fill=True)
    elif state == "offline":
        circle(12, 12, 9)
        draw.line([p(5.6, 5.6), p(18.4, 18.4)], fill=colour, width=w)
    elif state == "off":
        circle(12, 12, 7)
    else:
        circle(12, 12, 9)
        circle(12, 17, 0.8, fill=True)


def render_card(card: Card) -> bytes:
    """The card as PNG bytes (the same card gives the same bytes)."""
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    lit = card.state == "lit" and card.color is not None and bool(_COLOR_RE.match(card.color))
    band = _rgb(card.color) if lit and card.color else NEUTRAL
    draw.rectangle([0, 0, 23, HEIGHT], fill=band)
    width = WIDTH - 2 * MARGIN
    y = 70
    draw.text((MARGIN, y), _fit(draw, card.city, 38, width), font=_font(38), fill=MUTED)
    y += 60
    draw.text((MARGIN, y), _fit(draw, card.name, 68, width), font=_font(68), fill=TEXT)
    y += 120
    _icon(draw, card.state, MARGIN, y, 72)
    label = _fit(draw, card.state_label, 60, width - 200)
    colour = STATE_COLOURS.get(card.state, MUTED)
    draw.text((MARGIN + 96, y + 2), label, font=_font(60), fill=colour)
    if lit:
        at = MARGIN + 96 + int(draw.textlength(label, font=_font(60))) + 32
        draw.rounded_rectangle(
            [at, y + 8, at + 56, y + 64], radius=8, fill=band, outline=TEXT, width=3
        )
    y += 110
    for line in card.lines[:3]:
        draw.text((MARGIN, y), _fit(draw, line, 36, width), font=_font(36), fill=TEXT)
        y += 52
    draw.text((MARGIN, HEIGHT - 80), card.footer, font=_font(32), fill=MUTED)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
