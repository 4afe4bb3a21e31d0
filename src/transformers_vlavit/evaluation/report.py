"""The run's pictures and Markdown report: a contact sheet of sampled outputs next to their text."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np

# contact-sheet geometry in pixels
THUMBNAIL = 112
TEXT_WIDTH = 300
PADDING = 6
CHARS_PER_LINE = 46


def sample_frames(path: str | os.PathLike, count: int = 4) -> list:
    """``count`` evenly spaced frames of a video (PIL images); fewer when the video is shorter."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        total = stream.frames
        if total <= 0:  # the container does not say: count by decoding
            total = sum(1 for _ in container.decode(stream))
            container.seek(0)
        wanted = set(
            np.linspace(0, max(total - 1, 0), min(count, max(total, 1))).round().astype(int).tolist()
        )
        frames = []
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                frames.append(frame.to_image().convert("RGB"))
            if len(frames) == len(wanted):
                break
    return frames


def contact_sheet(rows: list[tuple[list, str]], path: str | os.PathLike, frames_per_row: int = 4) -> Path:
    """Write a PNG grid: per row, the text (wrapped) on the left and up to ``frames_per_row`` frames.

    Args:
        rows: ``(frames, text)`` pairs; frames are PIL images (resized to ``THUMBNAIL`` high).
        path: output PNG.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    height = THUMBNAIL + 2 * PADDING
    width = TEXT_WIDTH + frames_per_row * (THUMBNAIL + PADDING) + PADDING
    sheet = Image.new("RGB", (width, max(1, len(rows)) * height), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (frames, text) in enumerate(rows):
        top = row * height + PADDING
        lines = [line for part in text.split("\n") for line in textwrap.wrap(part, CHARS_PER_LINE) or [""]]
        draw.multiline_text((PADDING, top), "\n".join(lines[:9]), fill="black", font=font)
        for column, frame in enumerate(frames[:frames_per_row]):
            thumbnail = frame.resize((THUMBNAIL, THUMBNAIL))
            sheet.paste(thumbnail, (TEXT_WIDTH + column * (THUMBNAIL + PADDING), top))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "n/a" if value is None else str(value)


def _flatten(metrics: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested metrics as ``("group.key", value)`` rows, in order."""
    rows = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        rows += _flatten(value, f"{name}.") if isinstance(value, dict) else [(name, value)]
    return rows


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_report(
    path: str | os.PathLike,
    task: str,
    metrics: dict,
    protocol: dict,
    images: list[str] = (),
    examples: list[dict] | None = None,
    example_keys: tuple[str, ...] = (),
) -> Path:
    """A short Markdown report: metrics, the exact protocol, pictures and example rows."""
    path = Path(path)
    lines = [f"# Evaluation: {task}", "", "## Metrics", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {key} | {_cell(_format(value))} |" for key, value in _flatten(metrics)]
    lines += ["", "## Protocol", ""] + [f"- **{key}**: {_cell(value)}" for key, value in protocol.items()]
    if images:
        lines += ["", "## Samples", ""] + [f"![{Path(image).stem}]({image})" for image in images]
    if examples:
        lines += [
            "",
            "## Examples",
            "",
            "| " + " | ".join(example_keys) + " |",
            "|" + " --- |" * len(example_keys),
        ]
        lines += ["| " + " | ".join(_cell(_format(e.get(k))) for k in example_keys) + " |" for e in examples]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
