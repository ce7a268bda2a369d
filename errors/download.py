"""The bytes themselves: what goes wrong between a link and a verified file."""

from __future__ import annotations

from errors.base import DaemonError, size_text

# Downloads ----------------------------------------------------------------------------------


class DownloadError(DaemonError):
    pass


class HashMismatch(DownloadError):
    retry_blocked = (
        "The file was fetched twice and its SHA256 differed from the one its source publishes "
        "both times; a retry fetches the same bytes."
    )

    def __init__(self, expected: str, actual: str, kept: str | None = None) -> None:
        keep = f"; the bytes are kept as {kept}" if kept else ""
        super().__init__(
            f"SHA256 mismatch: expected {expected}, got {actual}{keep}. A source sometimes "
            f"publishes a wrong hash (Civitai does); check the file before using it."
        )
        self.expected = expected
        self.actual = actual


class FileConflict(DownloadError):
    status_code = 409

    def __init__(self, path: str) -> None:
        super().__init__(
            f"A different file is already at {path}; it is not overwritten. Move it away, or "
            f"queue the job with another filename."
        )


class NotEnoughSpace(DownloadError):
    status_code = 507

    def __init__(self, needed: int, free: int, where: str, margin: int = 0) -> None:
        keep = f" (plus {size_text(margin)} kept free)" if margin else ""
        super().__init__(
            f"Not enough disk space in {where}: {size_text(needed)} needed{keep}, "
            f"{size_text(free)} free. Free some space and retry the job; the part already "
            f"downloaded is kept."
        )


class UnexpectedContent(DownloadError):
    retryable = True

    def __init__(self, content_type: str, url_host: str) -> None:
        super().__init__(
            f"{url_host} sent a web page ({content_type}) where a model file was expected"
        )


class LinkRefused(DownloadError):
    retryable = True

    def __init__(self, status: int) -> None:
        super().__init__(f"The download link was refused ({status}); it has probably expired")
        self.status = status


class RedirectRefused(DownloadError):
    def __init__(self, host: str) -> None:
        super().__init__(
            f"The download redirected to {host}, a private or local address that is not in "
            f"allowed_hosts; refused"
        )


class SchemeRefused(DownloadError):
    retry_blocked = "The link redirects to a scheme other than http(s); a retry follows it again."

    def __init__(self, scheme: str) -> None:
        super().__init__(
            f"The download redirected to a {scheme}: URL; only http and https are followed. "
            f"The link is broken or hostile; it is not tried again."
        )


class CertificateRefused(DownloadError):
    def __init__(self, host: str, reason: str) -> None:
        super().__init__(
            f"The certificate of {host} is not trusted ({reason}); nothing was downloaded. If "
            f"the server uses a private certificate authority, start the daemon with "
            f"SSL_CERT_FILE set to a file holding that authority's certificate."
        )


class SymlinkRefused(DownloadError):
    status_code = 409

    def __init__(self, path: str, target: str) -> None:
        super().__init__(
            f"{path} is a symbolic link (to {target}); the daemon never writes through a link. "
            f"Remove the link and retry the job."
        )


class SizeMismatch(DownloadError):
    retry_blocked = "The file was fetched twice and came in another size than announced both times."

    def __init__(self, expected: int, actual: int, kept: str) -> None:
        super().__init__(
            f"The file came twice with {actual} bytes, not the {expected} announced (it has no "
            f"published SHA256: its size is what is checked); the bytes are kept at {kept}."
        )


class RangeIgnored(DownloadError):
    retryable = True

    def __init__(self) -> None:
        super().__init__("The server ignored a Range request and sent the whole file")


class StoreCopyFailed(DownloadError):
    """The shared store's copy could not be fetched: the job goes on from its source."""

    retryable = True

    def __init__(self, why: str) -> None:
        super().__init__(f"The shared store's copy could not be fetched: {why}")


class PreviewUnavailable(DownloadError):
    """Why a model has no `.preview.png`: only ever logged, the model is in place anyway."""

    status_code = 502  # as GET /api/civitai/image answers it: what was served is no image
