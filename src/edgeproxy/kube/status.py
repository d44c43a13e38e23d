"""metav1.Status errors: the one way an API error is raised and rendered.

Every error a client can receive from the proxy or the simulator is a
`StatusError`; it knows its HTTP code, reason and message and renders itself
to the exact JSON body kube-apiserver sends (k8s-api-semantics.md sec. 5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()


class StatusError(Exception):
    """An API error carrying a metav1.Status."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        # An explicit empty `details` is rendered (`"details":{}` on unknown paths).
        self._render_details = details is not None
        if retry_after is not None:
            self.details["retryAfterSeconds"] = retry_after
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
        }
        if self.reason:  # StatusReasonUnknown is "", omitted like any empty field
            status["reason"] = self.reason
        if self.details or self._render_details:
            status["details"] = self.details
        status["code"] = self.code
        return status

    def body(self) -> bytes:
        return _encoder.encode(self.to_dict())

    def headers(self) -> dict[str, str]:
        """Extra response headers: Retry-After mirrors details.retryAfterSeconds."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(self.retry_after)}

    def watch_event(self) -> bytes:
        """The in-stream ERROR event form, for errors after a watch was accepted."""
        return b'{"type":"ERROR","object":' + self.body() + b"}\n"

    def __repr__(self) -> str:
        return f"StatusError({self.code}, {self.reason!r}, {self.message!r})"


def _details(resource: str, name: str, group: str) -> dict[str, Any]:
    # metav1.StatusDetails: every field is omitempty, so the core group's ""
    # is left out.
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = resource
    return details


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def unauthorized() -> StatusError:
    return StatusError(401, "Unauthorized", "Unauthorized")


def not_found_path() -> StatusError:
    """An unknown URL path, exactly as kube-apiserver says it."""
    return StatusError(
        404, "NotFound", "the server could not find the requested resource", details={}
    )


def not_found(resource: str, name: str, group: str = "") -> StatusError:
    return StatusError(
        404, "NotFound", f'{resource} "{name}" not found', details=_details(resource, name, group)
    )


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> StatusError:
    """405. kube-apiserver's router says only this, with empty details, for a
    verb a resource path has no route for."""
    return StatusError(405, "MethodNotAllowed", message, details={})


def not_acceptable(message: str) -> StatusError:
    return StatusError(406, "NotAcceptable", message)


def already_exists(resource: str, name: str, group: str = "") -> StatusError:
    return StatusError(
        409,
        "AlreadyExists",
        f'{resource} "{name}" already exists',
        details=_details(resource, name, group),
    )


def conflict(resource: str, name: str, group: str = "", detail: str = "") -> StatusError:
    detail = detail or (
        "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    return StatusError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource} "{name}": {detail}',
        details=_details(resource, name, group),
    )


def expired(message: str) -> StatusError:
    return StatusError(410, "Expired", message)


def entity_too_large(message: str) -> StatusError:
    return StatusError(413, "RequestEntityTooLarge", message)


def unsupported_media_type(message: str) -> StatusError:
    return StatusError(415, "UnsupportedMediaType", message)


def invalid(
    kind: str,
    name: str,
    causes: Sequence[tuple[str, str, str]],
    group: str = "",
) -> StatusError:
    """422 Invalid. `causes` are (reason, field, message-without-field) triples.

    Renders like apimachinery's NewInvalid: the message joins every cause as
    "<field>: <message>", a single cause without brackets.
    """
    rendered = list(dict.fromkeys(f"{field}: {msg}" if field else msg for _, field, msg in causes))
    qualified = f"{kind}.{group}" if group else kind
    if not rendered:
        suffix = ""
    elif len(rendered) == 1:
        suffix = ": " + rendered[0]
    else:
        suffix = ": [" + ", ".join(rendered) + "]"
    details = _details(kind, name, group)
    # apimachinery omits empty cause fields.
    details["causes"] = [
        {k: v for k, v in (("reason", reason), ("message", msg), ("field", field)) if v}
        for reason, field, msg in causes
    ]
    return StatusError(422, "Invalid", f'{qualified} "{name}" is invalid{suffix}', details=details)


def too_many_requests(message: str, retry_after: int = 1) -> StatusError:
    return StatusError(429, "TooManyRequests", message, retry_after=retry_after)


def internal_error(message: str) -> StatusError:
    return StatusError(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        details={"causes": [{"message": message}]},
    )


def service_unavailable(message: str, retry_after: int | None = None) -> StatusError:
    return StatusError(503, "ServiceUnavailable", message, retry_after=retry_after)


def timeout(message: str, retry_after: int | None = None) -> StatusError:
    return StatusError(504, "Timeout", message, retry_after=retry_after)


def too_large_resource_version(requested: int, current: int) -> StatusError:
    """504 for an RV newer than the server has reached after waiting (sec. 2.1)."""
    err = StatusError(
        504,
        "Timeout",
        f"Timeout: Too large resource version: {requested}, current: {current}",
        details={
            "causes": [
                {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
            ]
        },
        retry_after=1,
    )
    return err
