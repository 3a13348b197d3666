"""Import-time noise of optional packages, silenced before anything imports them.

transformers imports torchao whenever it is installed: torchao then logs a warning for each of its GPU
kernels that cannot load on this machine, and its enums make torch's pytree warn about a future
torch.compile change. Neither is anything a user of this package can act on; real errors still show.
"""
import logging

QUIETED = ("torchao", "torch.utils._pytree")

for name in QUIETED:
    logging.getLogger(name).setLevel(logging.ERROR)
