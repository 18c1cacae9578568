"""The lifecycle every `pairuni serve ...` command shares: start, print, hold, shut down.

In the bottom layer because commands of two packages serve (``pairing``'s augmentation
endpoint, ``rewards``' reward endpoints) and neither may import the driver's package.
Ray is imported inside the function only."""

from __future__ import annotations

import time
from collections.abc import Callable


def hold_until_interrupted(start: Callable[[], None], detach: bool) -> None:
    """Run ``start()`` (Ray is up; it starts Serve applications and prints their addresses),
    then block until Ctrl-C and shut Serve and Ray down. With ``detach`` it returns right
    after ``start()`` and leaves the applications running on the cluster."""
    import ray
    from ray import serve

    try:
        start()
        if detach:
            return
        print("serving; Ctrl-C stops", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if not detach:
            serve.shutdown()
            ray.shutdown()
