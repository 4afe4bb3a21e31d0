"""Saving Video-LaVIT pipelines as self-contained diffusers custom code.

diffusers loads classes that live outside diffusers and transformers through its custom-code mechanism:
``model_index.json`` names ``[module_file, class_name]`` for the pipeline (``module_file.py`` in the folder)
and for each custom component (``<component>/module_file.py``), and diffusers copies the direct relative
imports (``from .x import y``) of each such file along with it. ``save_pretrained`` therefore copies the
source of the pipeline module and of each custom component's module, together with the sibling modules
they import, so that the folder loads with ``trust_remote_code=True`` where the Video-LaVIT packages are
not installed. The copied modules import only torch, NumPy, PIL, transformers, diffusers and their
siblings; this one imports only the standard library, because it is copied too.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
from pathlib import Path

# libraries diffusers imports components from by itself
_NATIVE_LIBRARIES = ("diffusers", "transformers")
_SIBLING_IMPORT = re.compile(r"^\s*from\s+\.(\w+)\s+import", re.MULTILINE)
_PARENT_IMPORT = re.compile(r"^\s*from\s+\.\.", re.MULTILINE)


class NotSelfContainedError(RuntimeError):
    """A module that a saved pipeline needs imports from a parent package, so it cannot travel as code."""


def module_files(cls: type) -> list[Path]:
    """The source file defining ``cls`` followed by every sibling module it imports, recursively.

    Raises:
        NotSelfContainedError: when one of them imports from a parent package (``from ..x import y``).
    """
    first = Path(inspect.getsourcefile(cls))
    files, pending = [], [first]
    while pending:
        path = pending.pop(0)
        if path in files:
            continue
        text = path.read_text(encoding="utf-8")
        if _PARENT_IMPORT.search(text):
            raise NotSelfContainedError(
                f"{path} imports from a parent package, so {cls.__name__} cannot be saved as custom code; "
                "import sibling modules only."
            )
        files.append(path)
        pending.extend(path.parent / f"{name}.py" for name in _SIBLING_IMPORT.findall(text))
    return files


def copy_module_files(cls: type, folder: str | os.PathLike) -> str:
    """Copy the module of ``cls`` and its sibling imports into ``folder``; return the module's stem."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = module_files(cls)
    for path in files:
        shutil.copyfile(path, folder / path.name)
    return files[0].stem


class CustomPipelineSavingMixin:
    """Makes ``save_pretrained`` of a ``DiffusionPipeline`` subclass write a folder that loads as custom code.

    After ``pipe.save_pretrained(folder)``, both
    ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` and
    ``type(pipe).from_pretrained(folder, trust_remote_code=True)`` rebuild the pipeline, with or without
    the Video-LaVIT packages installed.
    """

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Save every component like ``DiffusionPipeline.save_pretrained`` plus the code it needs.

        The code files are written after the components, so upload the finished folder (for example
        with ``huggingface_hub.upload_folder``) rather than passing ``push_to_hub=True``.
        """
        super().save_pretrained(save_directory, **kwargs)
        folder = Path(save_directory)
        index_path = folder / self.config_name
        index = json.loads(index_path.read_text(encoding="utf-8"))
        for name, entry in index.items():
            if name.startswith("_") or not isinstance(entry, list) or entry[0] is None:
                continue
            library, class_name = entry
            if library.split(".")[0] not in _NATIVE_LIBRARIES:
                index[name] = [copy_module_files(type(getattr(self, name)), folder / name), class_name]
        cls = type(self)
        index["_class_name"] = [copy_module_files(cls, folder), cls.__name__]
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
