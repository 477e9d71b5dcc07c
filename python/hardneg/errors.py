"""The exceptions the hardneg client raises.

Every failed call raises a `HardnegError` that carries the gRPC status code
(`.code`, a number; `.status_code`, the grpc.StatusCode) and the server's
message (`.message`). Mining raises its subclass `MineError`, publishing
`PublishError`, so one `except hardneg.HardnegError` catches all of them.
"""

from __future__ import annotations

from typing import Optional, Type, TypeVar

import grpc

__all__ = ["HardnegError", "MineError", "PublishError"]


def code_name(code: int) -> str:
    """The gRPC status name of a code number: 14 is "UNAVAILABLE"."""
    for c in grpc.StatusCode:
        if c.value[0] == code:
            return c.name
    return f"code {code}"


class HardnegError(Exception):
    """A call that failed: `.code` is the gRPC status code number (3 for
    INVALID_ARGUMENT, 14 for UNAVAILABLE), `.message` the server's (or the
    transport's) message."""

    def __init__(self, code: int, message: str,
                 request_id: Optional[int] = None) -> None:
        super().__init__(f"{code_name(code)}: {message}")
        self.code = int(code)
        self.message = message
        self.request_id = request_id

    @property
    def status_code(self) -> Optional[grpc.StatusCode]:
        """The code as a grpc.StatusCode (None for an unknown number)."""
        for c in grpc.StatusCode:
            if c.value[0] == self.code:
                return c
        return None


class MineError(HardnegError):
    """A mining request (or GetIndexInfo) the server refused or that failed.

    On a stream a refused request comes in-band and the stream stays usable.
    """


class PublishError(HardnegError):
    """A publish the server refused (nothing was installed) or that failed."""


E = TypeVar("E", bound=HardnegError)


def from_rpc(error: grpc.RpcError, cls: Type[E],
             request_id: Optional[int] = None) -> E:
    """`error` (a failed gRPC call) as a hardneg exception of class `cls`."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else None
    if code is None:  # not a call's error: keep what it said
        return cls(grpc.StatusCode.UNKNOWN.value[0], str(error), request_id)
    return cls(code.value[0], details or "", request_id)
