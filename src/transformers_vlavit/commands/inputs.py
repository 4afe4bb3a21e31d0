"""Checks every ``vlavit`` command runs on its paths before it loads a model.

A command raises :class:`CommandInputError` for input it cannot use; ``vlavit`` prints its one-line message
(``vlavit COMMAND: ...``) on standard error and exits with code 2, without a traceback. The checks are cheap
(file system, a PIL header, or the video decomposition the command needs anyway), so a typo costs nothing
instead of the minutes of loading a released-size model. No torch import here: the CLI imports this module
at start-up.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# `namespace/name` of a hub repository (a missing local folder that does not look like one is a typo)
_HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class CommandInputError(ValueError):
    """A command's media, folder or option cannot be used; the message names the path and the cause."""


def check_model(model: str, option: str = "--model") -> None:
    """A ``from_pretrained`` argument: a saved checkpoint folder (with ``config.json``) or a hub id ``namespace/name``."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CommandInputError(
                f"{option} {model}: the folder has no config.json, so it is no saved checkpoint "
                "(`vlavit tiny-checkpoint DIR` writes a tiny one, `vlavit convert` the released one)"
            )
        return
    if path.exists():
        raise CommandInputError(f"{option} {model}: is a file; pass the checkpoint folder")
    if not _HUB_REPO_ID.fullmatch(model):
        raise CommandInputError(f"{option} {model}: no such folder (and not a hub id of the form namespace/name)")


def check_input_file(path: str | os.PathLike, what: str) -> Path:
    """An existing, readable regular file; returns it as a ``Path``."""
    path = Path(path)
    if not path.exists():
        raise CommandInputError(f"{path}: no such {what} file")
    if not path.is_file():
        raise CommandInputError(f"{path}: is a directory, not a {what} file")
    if not os.access(path, os.R_OK):
        raise CommandInputError(f"{path}: the {what} file is not readable")
    return path


def read_image(path: str | os.PathLike):
    """The RGB PIL image in ``path``, or :class:`CommandInputError` naming the file and why it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    path = check_input_file(path, "image")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise CommandInputError(f"{path}: not a readable image ({error})") from error


def decompose_input_video(path: str | os.PathLike, **options):
    """``decompose_video(path, **options)``, with a bad video reported as :class:`CommandInputError`."""
    from ..video_decomposition import VideoDecodeError, decompose_video

    try:
        return decompose_video(path, **options)
    except VideoDecodeError as error:
        raise CommandInputError(str(error)) from error


def check_video(path: str | os.PathLike) -> Path:
    """A file PyAV opens with a video stream and a first frame it decodes (a quick probe, no decomposition)."""
    import av

    path = check_input_file(path, "video")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise CommandInputError(f"{path}: has no video stream")
            next(container.decode(video=0))
    except (av.FFmpegError, StopIteration) as error:
        raise CommandInputError(f"{path}: not a readable video ({error or 'no frame'})") from error
    return path


def check_output_file(path: str | os.PathLike) -> Path:
    """A file the command may write: not an existing folder, and its parent not a file."""
    path = Path(path)
    if path.is_dir():
        raise CommandInputError(f"{path}: is a directory; pass the output file name (e.g. out.mp4)")
    parent = next((folder for folder in path.absolute().parents if folder.exists()), None)
    if parent is not None and not parent.is_dir():
        raise CommandInputError(f"{path}: {parent} is a file, so the output cannot be written there")
    return path


def check_output_folder(path: str | os.PathLike) -> Path:
    """A folder the command may write into: missing or a folder, not a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CommandInputError(f"{path}: is a file; pass an output folder")
    return path


def model_load_error(option: str, model: str, error: Exception) -> CommandInputError:
    """One-line :class:`CommandInputError` for a checkpoint that failed to load (missing files, hub unreachable)."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return CommandInputError(f"{option} {model}: cannot be loaded ({first_line})")
