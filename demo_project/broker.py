"""The demo's server-less broker: kombu's filesystem transport, each message written whole.

kombu's ``filesystem://`` transport creates a message's file and then writes it, while a
worker polling the folder moves and reads every file it finds: a file caught between the
two was read empty, and the worker stopped with ``JSONDecodeError`` ("Unrecoverable
error"), which stopped ``make demo`` (once in seven starts here). Here a message is
written under a name the worker does not read (``….msg.part``) and renamed into place when
complete; a rename within one folder is atomic. ``demo_project/celery.py`` makes this the
transport of ``filesystem://`` URLs in every process of the demo.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        """Put ``payload`` onto ``queue``: written in full, then renamed into the folder."""
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        part = f"{path}.part"
        try:
            with open(part, "wb") as f:
                f.write(dumps(payload).encode("utf-8"))
            os.replace(part, path)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {path!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
