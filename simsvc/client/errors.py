"""What the client raises: answers the service refused, a service out of reach, a failed run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class SimsvcError(Exception):
    """Every error the simsvc client raises on purpose."""


@dataclass(frozen=True)
class FieldError:
    """One field the service rejected, and why."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ApiError(SimsvcError):
    """The service answered with an error (an RFC 9457 problem+json body, as a rule).

    `status` is the HTTP status, `detail` the service's explanation, and `errors` the
    fields it rejected (empty unless the request failed validation).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str = "",
        errors: tuple[FieldError, ...] = (),
        type: str = "about:blank",
        method: str = "",
        url: str = "",
    ) -> None:
        self.status = status
        self.detail = detail
        self.title = title
        self.errors = errors
        self.type = type
        self.method = method
        self.url = url
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" ({self.method} {self.url})" if self.method else ""
        text = f"{self.status} {self.title}: {self.detail}{where}".replace(" : ", ": ")
        return "; ".join([text, *map(str, self.errors)])

    @classmethod
    def from_answer(cls, status: int, reason: str, body: str, method: str, url: str) -> ApiError:
        """The error an answer carries, read from problem+json when the body is one."""
        problem = _problem(body)
        if problem is None:
            # Not from simsvc itself (a proxy, a gateway): keep the start of what it said.
            detail = " ".join(body.split())[:300] or reason
            return cls(status, detail, title=reason, method=method, url=url)
        errors = tuple(
            FieldError(str(e.get("field", "")), str(e.get("message", "")))
            for e in problem.get("errors") or []
            if isinstance(e, dict)
        )
        return cls(
            int(problem.get("status", status)),
            str(problem.get("detail", reason)),
            title=str(problem.get("title", reason)),
            errors=errors,
            type=str(problem.get("type", "about:blank")),
            method=method,
            url=url,
        )


def _problem(body: str) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if isinstance(value, dict) and ("detail" in value or "errors" in value):
        return value
    return None


class ServiceUnreachable(SimsvcError, ConnectionError):
    """No answer from the service at the client's URL: not running, wrong address, network."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"the simsvc service is unreachable at {url}: {reason}")


class RunFailed(SimsvcError):
    """A run or experiment that ended with status `failed`; `info` is its final state."""

    def __init__(self, what: str, info: dict[str, Any]) -> None:
        self.info = info
        super().__init__(f"{what} failed: {info.get('error') or 'no reason given'}")
