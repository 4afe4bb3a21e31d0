"""Saving Video-LaVIT pipelines so that ``DiffusionPipeline.from_pretrained`` can load them.

diffusers loads classes that live outside diffusers and transformers through its custom-code mechanism:
``model_index.json`` names ``[module_file, class_name]`` for the pipeline (``module_file.py`` in the folder)
and for each custom component (``<component>/module_file.py``). We write each of those files as a one-line
import from the installed ``diffusers_vlavit`` / ``transformers_vlavit`` packages, so loading runs the
packages' own code, never a copy of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# libraries diffusers imports components from by itself
_NATIVE_LIBRARIES = ("diffusers", "transformers")

_LOADER_TEMPLATE = '''"""Loads {class_name} from the installed {package} package (see save_pretrained)."""

from {module} import {class_name}  # noqa: F401
'''


def _write_loader(folder: Path, module: str, class_name: str) -> str:
    """Write ``folder/<module stem>.py`` importing ``class_name`` from ``module``; return the stem."""
    stem = module.rsplit(".", 1)[-1]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.py").write_text(
        _LOADER_TEMPLATE.format(package=module.split(".")[0], module=module, class_name=class_name),
        encoding="utf-8",
    )
    return stem


class CustomPipelineSavingMixin:
    """Adds diffusers' custom-code entry points to ``save_pretrained`` of a ``DiffusionPipeline`` subclass.

    After ``pipe.save_pretrained(folder)``, both
    ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` and
    ``type(pipe).from_pretrained(folder, trust_remote_code=True)`` rebuild the pipeline.
    """

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Save every component like ``DiffusionPipeline.save_pretrained`` plus the loader modules.

        The loader modules are written after the components, so upload the finished folder (for example
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
                index[name] = [_write_loader(folder / name, library, class_name), class_name]
        cls = type(self)
        index["_class_name"] = [_write_loader(folder, cls.__module__, cls.__name__), cls.__name__]
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
