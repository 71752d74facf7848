"""Figures that move without a kernel: frame k = draw(values[k]), shown at slider position k.

A widget (``ipywidgets.interact``) redraws its figure in a running kernel; the static HTML book
has none. :func:`slider` therefore draws the figure beforehand for a few parameter values
``v_0, ..., v_{n-1}``, stores frame ``k`` as a PNG image and returns :class:`Frames`, whose HTML
is the images and a range input: moving the input to ``k`` shows frame ``k``. The page needs no
kernel, no server and no network (the images are ``data:`` URLs, the script is one ``oninput``
attribute), and the frames are the widget's own figures when ``draw`` is the function the widget
calls.

Frames cost page weight, ``n`` PNG images in base64: keep ``n`` to about ten and read
:attr:`Frames.nbytes` (the book's chapters add 0.1 to 0.3 MB each at the default 100 dpi, with
the palette of :func:`slider`). matplotlib (the ``book`` extra) is needed only to draw them.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Frames", "slider"]

# One attribute without '"', '&' or '<', so it needs no escaping, no <script> element and no id:
# it finds the images in the range input's grandparent div, so sliders on one page are independent.
_ON_INPUT = (
    "var f=this.parentNode.parentNode.querySelectorAll('img'),k=+this.value;"
    "for(var i=0;i!==f.length;i++)f[i].style.display=i===k?'':'none';"
    "this.nextElementSibling.textContent=f[k].alt;"
)


@dataclass(frozen=True)
class Frames:
    """Precomputed frames of a figure over a parameter, shown as HTML with a slider.

    Jupyter and the book display it through ``_repr_html_``. ``pngs[k]`` is the PNG image drawn
    for ``values[k]``, ``texts[k]`` its caption (``"θ = 0.5"``), ``start`` the frame shown first.
    """

    label: str
    values: tuple
    texts: tuple[str, ...]
    pngs: tuple[bytes, ...]
    size: tuple[int, int]  # width, height of every frame in pixels
    start: int = 0

    def __len__(self) -> int:
        return len(self.pngs)

    def distinct(self) -> int:
        """Number of different images: below ``len(self)``, some slider positions look alike."""
        return len(set(self.pngs))

    @property
    def html(self) -> str:
        width, height = self.size
        images = "\n".join(
            f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" '
            f'alt="{html.escape(text)}" width="{width}" height="{height}" '
            f'style="max-width:100%;height:auto{"" if k == self.start else ";display:none"}">'
            for k, (png, text) in enumerate(zip(self.pngs, self.texts, strict=True))
        )
        return (
            '<div class="irn-frames">\n'
            f"{images}\n"
            '<div style="display:flex;align-items:center;gap:0.8em">'
            f'<input type="range" min="0" max="{len(self) - 1}" step="1" value="{self.start}" '
            f'aria-label="{html.escape(self.label)}" style="width:{min(width, 360)}px" '
            f'oninput="{_ON_INPUT}"><output>{html.escape(self.texts[self.start])}</output>'
            "</div>\n</div>"
        )

    @property
    def nbytes(self) -> int:
        """The bytes the frames add to a page (the UTF-8 size of the HTML)."""
        return len(self.html.encode())

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return (
            f"<Frames: {len(self)} frames of {self.label} ({self.texts[0]} to "
            f"{self.texts[-1]}), {self.size[0]}×{self.size[1]} px, {self.nbytes / 1e3:.0f} kB>"
        )


def slider(
    draw: Callable[[Any], Any],
    values: Sequence,
    *,
    label: str,
    start: int = 0,
    dpi: float = 100,
    colors: int | None = 256,
    fmt: str = "{:g}",
) -> Frames:
    """Draw ``draw(v)`` for every ``v`` in ``values`` and return the frames behind a slider.

    ``draw(v)`` must build a new matplotlib figure and return it without showing it (no
    ``plt.show()``); :func:`slider` saves it as a PNG at ``dpi`` dots per inch (100, as the
    notebooks' inline figures) and closes it, so nothing else is displayed. Every figure must
    have the same size, so that the page does not jump as the slider moves. ``colors`` keeps
    each frame's most frequent colours exactly and maps the rare rest to the nearest of them
    (``None``: full colour), which makes a plot's PNG 2 to 4 times smaller at no visible
    cost. ``label`` names the parameter; frame ``k`` is captioned
    ``f"{label} = {fmt.format(values[k])}"``. ``start`` is the frame shown first, e.g. the
    widget's default value.
    """
    import matplotlib.pyplot as plt  # the book extra; importing irn needs no matplotlib
    from matplotlib.figure import Figure

    values = tuple(values)
    if not values:
        raise ValueError("slider needs at least one value to draw")
    if not isinstance(label, str) or not label:
        raise ValueError(f"label must name the parameter the slider moves, got {label!r}")
    if not 0 <= start < len(values):
        raise ValueError(f"start={start} is not a frame index: use 0 to {len(values) - 1}")
    if not dpi > 0:
        raise ValueError(f"dpi must be positive, got {dpi!r}")
    if colors is not None and not 2 <= colors <= 256:
        raise ValueError(f"colors must be from 2 to 256 (a PNG palette) or None, got {colors!r}")
    pngs, sizes = [], set()
    for value in values:
        before = set(plt.get_fignums())
        try:
            fig = draw(value)
            if not isinstance(fig, Figure):
                raise TypeError(
                    f"draw({value!r}) returned {type(fig).__name__}, not a matplotlib Figure: "
                    "end it with `return fig` instead of `plt.show()`"
                )
            buf = io.BytesIO()
            # No bbox_inches="tight": it would crop every frame differently and the image
            # would change size under the slider. No Software tag: frames depend on data only.
            fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
        finally:
            # close what draw opened, also when it failed, so the notebook shows no stray figure
            for num in set(plt.get_fignums()) - before:
                plt.close(num)
        pngs.append(buf.getvalue() if colors is None else _palette(buf.getvalue(), colors))
        sizes.add(_png_size(pngs[-1]))
    if len(sizes) != 1:
        raise ValueError(
            f"the figures have different sizes {sorted(sizes)} px: give draw one figsize"
        )
    return Frames(
        label=label,
        values=values,
        texts=tuple(f"{label} = {fmt.format(v)}" for v in values),
        pngs=tuple(pngs),
        size=sizes.pop(),
        start=start,
    )


def _palette(png: bytes, colors: int) -> bytes:
    """The image as a palette PNG of its ``colors`` most frequent colours, over white."""
    import numpy as np
    from PIL import Image  # a dependency of matplotlib

    image = Image.open(io.BytesIO(png)).convert("RGBA")
    flat = Image.new("RGB", image.size, "white")
    flat.paste(image, mask=image.getchannel("A"))
    rgb = np.asarray(flat, dtype=np.int64)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]  # one integer per colour
    uniq, inverse, counts = np.unique(code.ravel(), return_inverse=True, return_counts=True)
    # The most frequent colours stay exact: background, lines, text, fills and most of a colour
    # map. Only rarer ones, blends at antialiased edges and between colour-map entries, move to
    # the nearest kept colour: measured, 1 % of a line plot's pixels and 7 % of an interpolated
    # colour map's, and 1 % or less by more than 10 of 255 levels. Pillow's quantizers were no
    # alternative here: the closest of them (maximum coverage) moved the white background by up
    # to 6 levels and banded a colour map unless dithered, which doubled the PNG.
    keep = uniq[np.argsort(-counts, kind="stable")[:colors]]
    distance = ((_channels(uniq)[:, None, :] - _channels(keep)[None, :, :]) ** 2).sum(-1)
    index = distance.argmin(1)[inverse].astype(np.uint8)
    small = Image.frombytes("P", flat.size, index.tobytes())
    small.putpalette(_channels(keep).astype(np.uint8).ravel().tolist())
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _channels(code):
    # (..., 3) red, green and blue of colours coded as 0xRRGGBB integers
    import numpy as np

    return np.stack([code >> 16, (code >> 8) & 255, code & 255], -1)


def _png_size(png: bytes) -> tuple[int, int]:
    # width and height are the first two fields of the IHDR chunk, right after the signature
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
