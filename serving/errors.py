"""The one error type the request layer turns into a 4xx answer."""

from __future__ import annotations


class RequestError(Exception):
    """A client error: the HTTP layer answers ``status`` with the message and the field named."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status
