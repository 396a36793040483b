"""WIT builder: find, balance, download, filter and score image-text pairs, the CLIP WIT recipe."""

import os as _os

# img2dataset imports albumentations and wandb; keep both off the network.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
_os.environ.setdefault("WANDB_MODE", "disabled")
_os.environ.setdefault("WANDB_DISABLED", "true")

__version__ = "0.1.0"
