"""The Compute API's error answers, worded as Nova's."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class Fault(Exception):
    """An error answer, worded as Nova's: ``{kind: {"message", "code"}}``."""

    def __init__(self, code: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind
        self.message = message

    def response(self) -> JSONResponse:
        body = {self.kind: {"message": self.message, "code": self.code}}
        return JSONResponse(body, status_code=self.code)


def bad_request(message: str) -> Fault:
    return Fault(400, "badRequest", message)


def not_found(message: str) -> Fault:
    return Fault(404, "itemNotFound", message)


def conflict(message: str) -> Fault:
    return Fault(409, "conflictingRequest", message)
