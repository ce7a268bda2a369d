"""The daemon's exceptions. Each builds its message, one a person can act on, from its context.

DaemonError
├── RequestError                  a job request that cannot be accepted (HTTP 4xx)
│   ├── InvalidRequest            422: wrong fields, bad model_type, unsafe filename
│   ├── TooDeeplyNested           422: a JSON body nested past the limit
│   ├── UnsupportedMediaType      415: a body in an encoding the route does not take
│   ├── HostNotAllowed            422: a direct url on a host outside allowed_hosts
│   ├── ModelTypeRequired         422: a direct url off Civitai without model_type
│   ├── ModelTypeUnknown          422: no model_type, and Civitai cannot be asked for it now
│   ├── FolderOutside             422: a model_type folder that is a link out of download_dir
│   ├── JobNotFound               404
│   ├── JobFinished               409: too late, e.g. cancelling a job that already completed
│   ├── WrongState                409: pause, resume or reorder a job in a state that refuses it
│   ├── NotRetryable              409: a retry of a failure no retry can fix (without force)
│   ├── SameFileActive            409: the same file is already queued under another model_type
│   ├── SameFileElsewhere         409: Civitai's answer shows another active job has this file
│   ├── PathTaken                 409: another active job writes a different file at the path
│   ├── InvalidSetting            422: a settings change config.json's rules refuse
│   ├── CompletedNotFound         404: no such completed download in the library
│   ├── OutsideLibrary            422: a library file to delete that lies outside download_dir
│   ├── DeleteRefused             409: a link on the way to it, or not a regular file
│   └── SettingOverridden         409: a setting the environment overrides (CIVITAI_TOKEN)
├── CivitaiError                  Civitai said no, at the one boundary: civitai.py
│   ├── TokenRequired             401, or a redirect to the login page
│   ├── DownloadsDisabled         401: the creator disabled downloads
│   ├── EarlyAccess               403 {"error": "Early Access"}
│   ├── NoAccess                  403 Forbidden: this account may not download the file
│   ├── NotFoundOnCivitai         404: ModelNotFound, ModelVersionNotFound, FileNotFound,
│   │                             NoDownloadableVersion, OnlyTrainingData (no model file)
│   │                             CreatorNotFound (no such username)
│   ├── Archived                  410
│   ├── SearchRefused             422: Civitai refused a search of the Browse tab (in browse.py)
│   ├── SearchRateLimited         429: Civitai rate limits searches (in browse.py)
│   └── Retryable                 worth another attempt
│       ├── RateLimited           429 (retry_after when the server sent one)
│       ├── ServerError           5xx
│       ├── NotJSON               an HTML page (Cloudflare) where JSON was expected
│       ├── CloudflareChallenge   403 with a Cloudflare "Just a moment…" check
│       └── NetworkError          connection refused, reset, timed out, stalled
├── HubError                      the Hugging Face Hub said no (another 4xx): defined, with its
│   │                             two below, in sources/huggingface.py, the Hub's one boundary
│   ├── HubGated                  401/403 GatedRepo, or 401 without a token: a licence to accept
│   └── HubNotFound               404 RepoNotFound, RevisionNotFound, EntryNotFound
└── DownloadError                 the bytes themselves
    ├── HashMismatch
    ├── GitBlobMismatch           a Hub file kept in git, not its ETag's SHA-1 (in huggingface.py)
    ├── FileConflict              a different file is at the final path
    ├── NotEnoughSpace
    ├── UnexpectedContent         a web page where a model file was expected (retryable)
    ├── LinkRefused               the CDN refused a signed link (resolve a new one)
    ├── RedirectRefused           a direct link redirected into a private network
    ├── SchemeRefused             a redirect to a scheme other than http(s) (file://, ftp://)
    ├── CertificateRefused        an https server whose certificate is not trusted
    ├── SymlinkRefused            a link where the daemon writes a file: never written through
    ├── RangeIgnored              the server answered 200 to a Range request
    ├── SizeMismatch              a file verified by size only came in another size
    └── PreviewUnavailable        no preview image to save (logged; the job still completes)
        ├── ImageHostRefused      422: an image URL off Civitai's image hosts (in metadata.py)
        └── ImageNotFound         404: Civitai's image host has no such image (in metadata.py)
"""

from __future__ import annotations

from typing import Any

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


# Requests -----------------------------------------------------------------------------------


class RequestError(DaemonError):
    status_code = 422


class InvalidRequest(RequestError):
    pass


class TooDeeplyNested(RequestError):
    def __init__(self, source: str, limit: int) -> None:
        super().__init__(
            f"{source} is nested more than {limit} levels deep; a job request needs only a few"
        )


class UnsupportedMediaType(RequestError):
    status_code = 415


class HostNotAllowed(RequestError):
    def __init__(self, host: str, allowed: list[str]) -> None:
        super().__init__(
            f"Downloads from {host!r} are not allowed. Allowed hosts: {', '.join(allowed)} "
            f"(add the host to allowed_hosts in config.json to allow it)."
        )


class ModelTypeRequired(RequestError):
    def __init__(self, url: str) -> None:
        super().__init__(
            f"model_type is required for {url}: it is not on Civitai, so the folder cannot be "
            f"taken from Civitai. Give model_type, e.g. 'lora', 'checkpoint' or 'vae'."
        )


class ModelTypeUnknown(RequestError):
    def __init__(self, why: object) -> None:
        super().__init__(
            f"Civitai could not be asked for this model's type ({why}). Try again later, or "
            f"give model_type, e.g. 'lora', 'checkpoint' or 'vae'."
        )


class FolderOutside(RequestError):
    def __init__(self, folder: str, real: str, root: str) -> None:
        super().__init__(
            f"The folder {folder} leads to {real}, outside download_dir ({root}); the daemon "
            f"never writes through a link out of download_dir. Replace the link with a real "
            f"folder, or point download_dir itself at the disk you want."
        )


class JobNotFound(RequestError):
    status_code = 404

    def __init__(self, job_id: int) -> None:
        super().__init__(f"No job {job_id}")


class JobFinished(RequestError):
    status_code = 409


class WrongState(RequestError):
    status_code = 409


class NotRetryable(RequestError):
    status_code = 409

    def __init__(self, job_id: int, reason: str) -> None:
        super().__init__(
            f'Job {job_id} is not retried: {reason} To try anyway, send {{"force": true}} '
            f"(./civitai retry {job_id} --force)."
        )


class SameFileActive(RequestError):
    status_code = 409

    def __init__(self, job_id: int, status: str, model_type: str) -> None:
        super().__init__(
            f"This file is already {status} as job {job_id} with model_type {model_type!r}. "
            f"Cancel job {job_id} first to download it as another type, or ask for "
            f"{model_type!r}."
        )


class SameFileElsewhere(RequestError):
    status_code = 409

    def __init__(self, job_id: int, status: str, model_type: str) -> None:
        super().__init__(
            f"This is the same file as job {job_id} (model_type {model_type!r}), which is already "
            f"{status}; it is not downloaded twice"
        )


class PathTaken(RequestError):
    """Another active job will write a different file at the same path (two types sharing a
    folder, or two models whose files have one name)."""

    status_code = 409

    def __init__(self, job: dict[str, Any], path: str) -> None:
        super().__init__(
            f"Job {job['id']} (model_type {job['model_type']!r}, {job['status']}) already writes "
            f"{path}; a "
            f"different file of the same name cannot go there too. Queue this one with another "
            f"filename."
        )


class InvalidSetting(RequestError):
    pass


class CompletedNotFound(RequestError):
    status_code = 404

    def __init__(self, completed_id: int) -> None:
        super().__init__(f"No completed download {completed_id} in the library")


class OutsideLibrary(RequestError):
    def __init__(self, path: str, root: str) -> None:
        super().__init__(
            f"{path} is outside download_dir ({root}); the daemon deletes nothing outside it. "
            f"Nothing was removed: delete it by hand if you mean to."
        )


class DeleteRefused(RequestError):
    status_code = 409

    @classmethod
    def through_link(cls, path: str, link: str, target: str) -> DeleteRefused:
        return cls(
            f"{path} is reached through a symbolic link ({link} -> {target}); the daemon never "
            f"deletes through a link. Nothing was removed: remove the link, or delete the file "
            f"by hand."
        )

    @classmethod
    def not_a_file(cls, path: str) -> DeleteRefused:
        return cls(f"{path} is not a regular file; nothing was removed.")


class SettingOverridden(RequestError):
    status_code = 409

    def __init__(self, key: str, variable: str) -> None:
        super().__init__(
            f"{variable} is set in the daemon's environment and overrides {key} in config.json, "
            f"so this change would have no effect. Change or remove {variable} where the daemon "
            f"is started (e.g. Environment= in its systemd unit), then restart it."
        )


# Civitai ------------------------------------------------------------------------------------


class CivitaiError(DaemonError):
    status_code = 502


class TokenRequired(CivitaiError):
    status_code = 401

    def __init__(self, have_token: bool) -> None:
        if have_token:
            message = (
                "Civitai refused the API token: it is wrong or expired. Create a new key at "
                "civitai.com (Account settings, API keys), set it as civitai_token (GUI "
                "Settings, or config.json then reload the daemon; or the CIVITAI_TOKEN "
                "environment variable and restart), then retry the job."
            )
        else:
            message = (
                "This model needs a Civitai login: create an API key at civitai.com (Account "
                "settings, API keys), set it as civitai_token (GUI Settings, or config.json "
                "then reload the daemon; or the CIVITAI_TOKEN environment variable and "
                "restart), then retry the job."
            )
        super().__init__(message)


class DownloadsDisabled(CivitaiError):
    status_code = 403
    retry_blocked = (
        "The creator disabled downloads of this model on Civitai; a retry is refused the same way."
    )

    def __init__(self) -> None:
        super().__init__("The creator of this model has disabled downloads on Civitai.")


class EarlyAccess(CivitaiError):
    status_code = 403

    def __init__(self, deadline: str | None = None) -> None:
        until = f" until {deadline}" if deadline else ""
        super().__init__(
            f"This version is in early access{until}: only supporters who paid for it can "
            f"download it now. Retry the job once early access ends."
        )


class NoAccess(CivitaiError):
    status_code = 403

    def __init__(self, said: str, have_token: bool) -> None:
        said = f" ({said})" if said else ""
        if have_token:
            fix = (
                "Check that civitai_token belongs to an account that may download it (a "
                "membership, purchase or permission the creator requires), then retry the job."
            )
        else:
            fix = (
                "No Civitai token is set: create an API key at civitai.com (Account settings, "
                "API keys) for an account with access, set civitai_token, then retry the job."
            )
        super().__init__(f"Civitai refused the download: no access to this file{said}. {fix}")


class NotFoundOnCivitai(CivitaiError):
    status_code = 404
    retry_blocked = "Civitai has no such model, version or file; a retry gets the same answer."


class ModelNotFound(NotFoundOnCivitai):
    def __init__(self, model_id: int) -> None:
        super().__init__(f"No model {model_id} on Civitai")


class ModelVersionNotFound(NotFoundOnCivitai):
    def __init__(self, version_id: int) -> None:
        super().__init__(f"No model version {version_id} on Civitai")


class FileNotFound(NotFoundOnCivitai):
    def __init__(self, what: str) -> None:
        super().__init__(f"File not found on Civitai: {what}")


class NoDownloadableVersion(NotFoundOnCivitai):
    def __init__(self, model_id: int) -> None:
        super().__init__(
            f"Model {model_id} has no published version that can be downloaded now (drafts, "
            f"early access and training data only); ask for a version by its modelVersionId."
        )


class CreatorNotFound(NotFoundOnCivitai):
    def __init__(self, username: str) -> None:
        super().__init__(
            f"Civitai has no creator named {username!r}: check the name as it appears in their "
            f"profile's address, civitai.com/user/<name>"
        )


class OnlyTrainingData(NotFoundOnCivitai):
    retry_blocked = "The version holds only training data; ask for that file by its fileId."

    def __init__(self, version_id: Any, files: list[dict[str, Any]]) -> None:
        names = ", ".join(f"{f.get('name')} (fileId {f.get('id')})" for f in files)
        super().__init__(
            f"Model version {version_id} has no model file, only training data: {names}. "
            f"Ask for that file by its fileId to download it anyway."
        )


class Archived(CivitaiError):
    status_code = 410
    retry_blocked = "The model is archived on Civitai; a retry cannot download it."

    def __init__(self) -> None:
        super().__init__("This model was archived on Civitai and can no longer be downloaded.")


class Retryable(CivitaiError):
    retryable = True
    status_code = 503


class RateLimited(Retryable):
    def __init__(self, retry_after: float | None, where: str = "Civitai") -> None:
        wait = f"; it asked to wait {retry_after:g} s" if retry_after else ""
        super().__init__(f"{where} is rate limiting requests (429){wait}")
        self.retry_after = retry_after


class ServerError(Retryable):
    def __init__(self, status: int, where: str = "Civitai") -> None:
        super().__init__(f"{where} answered with a server error ({status})")
        self.status = status


class NotJSON(Retryable):
    def __init__(self, what: str = "an HTML page") -> None:
        super().__init__(
            f"Civitai sent {what} instead of data (it is probably overloaded or behind a check)"
        )


class CloudflareChallenge(Retryable):
    def __init__(self) -> None:
        super().__init__(
            "Civitai answered with a Cloudflare browser check (403) instead of the file; it "
            "usually passes after a while"
        )


class NetworkError(Retryable):
    pass


# Hugging Face -------------------------------------------------------------------------------


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
        keep = f" (plus {_size(margin)} kept free)" if margin else ""
        super().__init__(
            f"Not enough disk space in {where}: {_size(needed)} needed{keep}, {_size(free)} "
            f"free. Free some space and retry the job; the part already downloaded is kept."
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


class PreviewUnavailable(DownloadError):
    """Why a model has no `.preview.png`: only ever logged, the model is in place anyway."""

    status_code = 502  # as GET /api/civitai/image answers it: what was served is no image


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
