"""Typed errors for wardend's error codes (proto/PROTOCOL.md, "Error codes")."""

from __future__ import annotations

from typing import Dict, Optional, Type


class WardenError(Exception):
    """A request wardend refused, or could not be made. ``code`` is the protocol's error code."""

    code = "internal"

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class BadRequest(WardenError):
    code = "bad_request"


class UnknownOp(WardenError):
    code = "unknown_op"


class FrameTooLarge(WardenError):
    code = "frame_too_large"


class UnsupportedProtocol(WardenError):
    code = "unsupported_protocol"


class NotFound(WardenError):
    code = "not_found"


class PermissionDenied(WardenError):
    code = "permission_denied"


class NoSuchProcess(WardenError):
    code = "no_such_process"


class InvalidState(WardenError):
    code = "invalid_state"


class LimitExceeded(WardenError):
    code = "limit_exceeded"


class Unavailable(WardenError):
    """wardend cannot be reached (not running, connection lost) or cannot serve now.

    ``request_sent``: the request was written whole before its answer failed to come, so a
    wardend that was only slow applies it once it reads on; False where it never got it."""

    code = "unavailable"
    request_sent = False


_BY_CODE: Dict[str, Type[WardenError]] = {cls.code: cls for cls in (
    BadRequest, UnknownOp, FrameTooLarge, UnsupportedProtocol, NotFound, PermissionDenied,
    NoSuchProcess, InvalidState, LimitExceeded, Unavailable)}


def error_for(code: str, message: str) -> WardenError:
    """The exception for a wire error code; unknown codes become a plain WardenError."""
    cls = _BY_CODE.get(code, WardenError)
    return cls(message, code)
