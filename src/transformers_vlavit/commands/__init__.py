"""Sub-commands of the ``vlavit`` CLI (see :mod:`transformers_vlavit.cli`)."""
