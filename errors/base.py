"""The root of the tree: every error the daemon raises is a DaemonError."""

from __future__ import annotations

from logger import safe_url


class DaemonError(Exception):
    retryable = False  # the daemon tries again by itself
    # Why a person's retry cannot help either (the job's `why_not_retryable`); None: it can.
    retry_blocked: str | None = None
    status_code = 500
    retry_after: float | None = None

    def __init__(self, message: str) -> None:
        # Messages reach the API, job errors and webhooks: never with a URL's credentials.
        message = safe_url(message)
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    @property
    def error_class(self) -> str:
        """The name a failure is counted under (GET /metrics): this class's."""
        return type(self).__name__


class GaveUp(DaemonError):
    """Every attempt failed with a retryable error; counted under the last one's class."""

    def __init__(self, attempts: int, last: DaemonError) -> None:
        super().__init__(f"Gave up after {attempts} attempts; last error: {last}")
        self.last_class = last.error_class

    @property
    def error_class(self) -> str:
        return self.last_class


def size_text(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
