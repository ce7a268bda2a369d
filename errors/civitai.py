"""Civitai said no, at the one boundary where its answers become errors: sources/civitai.py."""

from __future__ import annotations

from typing import Any

from errors.base import DaemonError

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
