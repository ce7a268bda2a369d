"""The daemon's exceptions, one module per branch of the tree below (base, request, civitai,
download), all reached as `errors.<Name>`. Each builds its message, one a person can act on,
from its context.

DaemonError
├── GaveUp                        every attempt failed; counted under the last error's class
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
├── CivitaiError                  Civitai said no, at the one boundary: sources/civitai.py
│   ├── TokenRequired             401, or a redirect to the login page
│   ├── DownloadsDisabled         401: the creator disabled downloads
│   ├── EarlyAccess               403 {"error": "Early Access"}
│   ├── NoAccess                  403 Forbidden: this account may not download the file
│   ├── NotFoundOnCivitai         404: ModelNotFound, ModelVersionNotFound, FileNotFound,
│   │                             NoDownloadableVersion, OnlyTrainingData (no model file)
│   │                             CreatorNotFound (no such username)
│   ├── Archived                  410
│   ├── SearchRefused             422: Civitai refused a Browse search (sources/browse.py)
│   ├── SearchRateLimited         429: Civitai rate limits searches (sources/browse.py)
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
    ├── StoreCopyFailed           the shared store answered an error (the source is used)
    └── PreviewUnavailable        no preview image to save (logged; the job still completes)
        ├── ImageHostRefused      422: an image URL off Civitai's image hosts (sidecars.py)
        └── ImageNotFound         404: Civitai's image host has no such image (sidecars.py)

Every module imports errors, so errors imports nothing of the project but logger.

Must not import: daemon, main, database, events, safefs, engine, sources, library, web, config,
notify, updater, fastapi, starlette
"""

from __future__ import annotations

from errors.base import (  # noqa: F401 (the tree, as one namespace)
    DaemonError,
    GaveUp,
)
from errors.civitai import (  # noqa: F401 (the tree, as one namespace)
    Archived,
    CivitaiError,
    CloudflareChallenge,
    CreatorNotFound,
    DownloadsDisabled,
    EarlyAccess,
    FileNotFound,
    ModelNotFound,
    ModelVersionNotFound,
    NetworkError,
    NoAccess,
    NoDownloadableVersion,
    NotFoundOnCivitai,
    NotJSON,
    OnlyTrainingData,
    RateLimited,
    Retryable,
    ServerError,
    TokenRequired,
)
from errors.download import (  # noqa: F401 (the tree, as one namespace)
    CertificateRefused,
    DownloadError,
    FileConflict,
    HashMismatch,
    LinkRefused,
    NotEnoughSpace,
    PreviewUnavailable,
    RangeIgnored,
    RedirectRefused,
    SchemeRefused,
    SizeMismatch,
    StoreCopyFailed,
    SymlinkRefused,
    UnexpectedContent,
)
from errors.request import (  # noqa: F401 (the tree, as one namespace)
    CompletedNotFound,
    DeleteRefused,
    FolderOutside,
    HostNotAllowed,
    InvalidRequest,
    InvalidSetting,
    JobFinished,
    JobNotFound,
    ModelTypeRequired,
    ModelTypeUnknown,
    NotRetryable,
    OutsideLibrary,
    PathTaken,
    RequestError,
    SameFileActive,
    SameFileElsewhere,
    SettingOverridden,
    TooDeeplyNested,
    UnsupportedMediaType,
    WrongState,
)
