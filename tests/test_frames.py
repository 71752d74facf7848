"""irn.frames: frame k is draw(values[k]), the HTML shows it at slider position k, nothing leaks."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import matplotlib
import numpy as np
import pytest
from PIL import Image

matplotlib.use("Agg")  # headless; the notebooks use the inline backend, also Agg-based

import matplotlib.pyplot as plt  # noqa: E402

from irn import frames  # noqa: E402

# One flat colour per value: frame k must be exactly the colour drawn for values[k].
COLOURS = {1: (200, 30, 30), 2: (30, 160, 60), 3: (40, 70, 220)}


def flat(value, figsize=(2.0, 1.0)):
    fig = plt.figure(figsize=figsize, facecolor=np.array(COLOURS[value]) / 255)
    return fig


def rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def line_plot(theta):
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    t = np.linspace(0, 2, 200)
    for j in range(2):
        ax.plot(t, np.cos(t * (1 + theta)) + j, "k-", lw=1)
        ax.plot(t[::10], np.cos(t[::10] * (1 + theta)) + j, "o-", color=f"C{j}", ms=3)
    ax.set(ylim=(-2, 3), title=f"θ = {theta:g}", xlabel="$t$", ylabel="$y$")
    fig.tight_layout()
    return fig


def colour_map(theta):
    fig, ax = plt.subplots(figsize=(5.0, 4.2))
    x, y = np.meshgrid(np.linspace(-3, 2, 300), np.linspace(-2, 2, 300))
    z = x + 1j * y
    r = np.abs((1 + (1 - theta) * z) / (1 - theta * z))
    im = ax.imshow(np.minimum(r, 3), extent=(-3, 2, -2, 2), origin="lower")
    ax.contour(x, y, r, [1], colors="k")
    fig.colorbar(im, ax=ax)
    return fig


class Page(HTMLParser):
    """The images, the range input and the caption of a Frames' HTML, as a browser parses it."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.inputs, self.caption, self._in_output = [], [], None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        elif tag == "input":
            self.inputs.append(attrs)
        self._in_output = tag == "output"

    def handle_data(self, data):
        if self._in_output:
            self.caption = data
            self._in_output = False


@pytest.mark.parametrize("colors", [256, None])
def test_frame_k_is_the_figure_drawn_for_value_k(colors):
    shown = frames.slider(flat, [1, 2, 3], label="v", dpi=20, colors=colors)
    assert len(shown) == 3 and shown.distinct() == 3
    assert shown.size == (40, 20)  # figsize × dpi, not cropped
    for png, value in zip(shown.pngs, (1, 2, 3), strict=True):
        assert (rgb(png) == COLOURS[value]).all()
    assert shown.texts == ("v = 1", "v = 2", "v = 3")


def test_html_shows_the_start_frame_and_the_slider_selects_the_others():
    shown = frames.slider(flat, [1, 2, 3], label="θ <a>", start=1, dpi=20)
    page = Page(shown._repr_html_())
    assert [base64.b64decode(i["src"].removeprefix("data:image/png;base64,")) for i in page.images
            ] == list(shown.pngs)  # fmt: skip
    assert [i["style"].endswith("display:none") for i in page.images] == [True, False, True]
    assert [i["alt"] for i in page.images] == ["θ <a> = 1", "θ <a> = 2", "θ <a> = 3"]
    assert all((i["width"], i["height"]) == ("40", "20") for i in page.images)
    (slider,) = page.inputs
    assert (slider["type"], slider["min"], slider["max"], slider["value"]) == (
        "range",
        "0",
        "2",
        "1",
    )
    assert slider["aria-label"] == "θ <a>"
    # The handler reaches the browser unchanged (escaping did not cut it) and reads the caption
    # from the alt text. That it moves the frame is checked in Chromium (tests/test_browser.py).
    assert slider["oninput"] == frames._ON_INPUT
    assert page.caption == "θ <a> = 2"
    assert shown.nbytes == len(shown.html.encode()) and "3 frames of θ <a>" in repr(shown)


def test_no_figure_is_left_open_to_show_up_in_the_notebook():
    frames.slider(flat, [1, 2], label="v", dpi=20)
    assert plt.get_fignums() == []

    def broken(value):
        flat(value)
        raise RuntimeError("draw failed")

    with pytest.raises(RuntimeError, match="draw failed"):
        frames.slider(broken, [1], label="v")
    assert plt.get_fignums() == []


def test_draw_that_shows_instead_of_returning_is_refused_with_the_fix():
    def shows(value):
        flat(value)  # and then plt.show(), as a widget's function does

    with pytest.raises(TypeError, match=r"draw\(1\) returned NoneType.*`return fig`"):
        frames.slider(shows, [1], label="v")
    assert plt.get_fignums() == []


def test_frames_of_different_sizes_are_refused():
    with pytest.raises(ValueError, match=r"different sizes \[\(40, 20\), \(60, 20\)\].*figsize"):
        frames.slider(lambda v: flat(v, (2.0 + (v == 2), 1.0)), [1, 2], label="v", dpi=20)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"values": []}, "at least one value"),
        ({"label": ""}, "label must name the parameter"),
        ({"start": 3}, "start=3 is not a frame index: use 0 to 2"),
        ({"start": -1}, "start=-1 is not a frame index"),
        ({"dpi": 0}, "dpi must be positive"),
        ({"colors": 1}, "colors must be from 2 to 256"),
        ({"colors": 512}, "colors must be from 2 to 256"),
    ],
)
def test_bad_arguments_fail_before_drawing(kwargs, message):
    drawn = []
    args = {"values": [1, 2, 3], "label": "v"} | kwargs
    with pytest.raises(ValueError, match=message):
        frames.slider(lambda v: drawn.append(v) or flat(v), **args)
    assert drawn == []


def test_positions_that_look_alike_are_counted():
    shown = frames.slider(lambda v: flat(1), [1, 2, 3], label="v", dpi=20)
    assert len(shown) == 3 and shown.distinct() == 1


@pytest.mark.parametrize("draw", [line_plot, colour_map])
def test_palette_frames_are_several_times_smaller_and_look_the_same(draw):
    # the claims of slider's docstring and _palette's comment
    full = frames.slider(draw, [0.3], label="θ", colors=None).pngs[0]
    small = frames.slider(draw, [0.3], label="θ").pngs[0]
    assert 2 < len(full) / len(small) < 5
    before, after = rgb(full), rgb(small)
    moved = np.abs(before - after).max(-1)
    assert (moved > 0).mean() < 0.1 and (moved > 10).mean() < 0.015  # rare blends, a little
    white = (before == 255).all(-1)
    assert white.mean() > 0.3 and not moved[white].any()  # the background stays white


def test_an_image_of_few_colours_keeps_them_exactly():
    shown = frames.slider(colour_map, [0.3], label="θ", colors=None).pngs[0]
    for colors in (256, 2):
        kept = rgb(frames._palette(shown, colors))
        codes, counts = np.unique(rgb(shown).reshape(-1, 3), axis=0, return_counts=True)
        most = {tuple(c) for c in codes[np.argsort(-counts)[:colors]]}
        assert {tuple(c) for c in np.unique(kept.reshape(-1, 3), axis=0)} == most
