"""Weight-name conversion from the released Video-LaVIT checkpoints to this project's modules.

One module per component, each exposing ``convert_<component>_state_dict(original_state_dict)`` and a
``DROPPED_KEYS`` mapping (original name or pattern -> reason) for names left out on purpose.
"""
