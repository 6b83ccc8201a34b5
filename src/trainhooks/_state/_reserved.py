"""The one name trainhooks reserves in a saved state mapping.

A session saves its hooks' and listeners' own states (an early-stopping count, an
evaluation schedule) inside each checkpoint, beside the user's entries, under
``HOOK_STATE_KEY``. ``Saver.restore`` treats that entry as optional on both sides: a
checkpoint without it (older, or written by a bare ``Saver``) restores into a session, and
a session's checkpoint restores into a plain state mapping that lacks it.
"""

from __future__ import annotations

__all__ = ["DIST_HOOKS_ENTRY", "DIST_REPLICATED_ENTRY", "HOOK_STATE_KEY"]

HOOK_STATE_KEY = "__trainhooks__"

# A distributed session's checkpoint (``_dist/_state_dict.py``) holds its replicated entries
# and the chief's hooks' states as an encoded tree (a JSON string) plus its tensors, under
# these two names beside the DCP-native entries.
DIST_REPLICATED_ENTRY = "__trainhooks_state__"
DIST_HOOKS_ENTRY = "__trainhooks_hooks__"
