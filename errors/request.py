"""A job request, or a change asked of the daemon, that cannot be accepted (HTTP 4xx)."""

from __future__ import annotations

from typing import Any

from errors.base import DaemonError

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
