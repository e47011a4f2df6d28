"""The errors of ``tp serve``'s service as the HTTP layer answers them: an HTTP error, or a
failed future in Tinker's ``User`` category."""

from __future__ import annotations


class ApiError(Exception):
    """Answered as an HTTP error with a JSON body (not a failed future)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class UserError(Exception):
    """A failed future in Tinker's ``User`` category (bad input, unknown name)."""


__all__ = ["ApiError", "UserError"]
