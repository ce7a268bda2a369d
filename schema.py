"""The database's schema, built by named migrations (sqlite-utils): opening an old database
brings it up to date, opening a current one changes nothing. Add a change as a new migration at
the end; never edit one that has shipped."""

from __future__ import annotations

import json
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

import job_secrets
from library import catalog

migrations = Migrations("civitai-daemon")


@migrations(name="001_initial")
def _initial(db: Database) -> None:
    db["jobs"].create(
        {
            "id": int,
            "status": str,
            "model_type": str,
            "modelId": int,
            "modelVersionId": int,
            "fileId": int,
            "url": str,  # what the user asked for (page, download or direct URL)
            "download_url": str,  # where the bytes come from, before any redirect
            "filename": str,
            "path": str,
            "sha256": str,
            "size": int,
            "priority": int,
            "bytes_done": int,
            "bytes_total": int,
            "speed_bps": float,
            "attempts": int,
            "error": str,
            "dedupe_key": str,
            "validator": str,  # ETag or Last-Modified of the bytes being resumed
            "info": str,  # version JSON for sidecars
            "model_name": str,
            "version_name": str,
            "source": str,  # api, batch, manifest, update, webhook
            "replaces": str,  # path of the file an update supersedes
            "created_at": str,
            "updated_at": str,
            "completed_at": str,
        },
        pk="id",
        not_null={"status", "model_type", "priority", "created_at"},
        defaults={"priority": 5, "bytes_done": 0, "attempts": 0, "speed_bps": 0},
    )
    db["jobs"].create_index(["status", "priority", "id"])
    db["jobs"].create_index(["dedupe_key"])
    db["parts"].create(
        {"job_id": int, "idx": int, "start": int, "end": int, "done": int},
        pk=("job_id", "idx"),
    )
    db["completed"].create(
        {
            "id": int,
            "job_id": int,
            "model_type": str,
            "modelId": int,
            "modelVersionId": int,
            "filename": str,
            "path": str,
            "sha256": str,
            "size": int,
            "model_name": str,
            "version_name": str,
            "completed_at": str,
        },
        pk="id",
    )
    db["completed"].create_index(["path"])
    db["updates"].create(
        {
            "id": int,
            "modelId": int,
            "model_name": str,
            "old_version_id": int,
            "new_version_id": int,
            "version_name": str,
            "model_type": str,
            "job_id": int,
            "found_at": str,
        },
        pk="id",
    )
    db["updates"].create_index(["modelId", "new_version_id"], unique=True)
    db["file_hashes"].create({"path": str, "size": int, "mtime_ns": int, "sha256": str}, pk="path")


@migrations(name="002_job_request_and_timing")
def _job_request_and_timing(db: Database) -> None:
    # The request as given, so a job queued while Civitai was unreachable can be resolved later;
    # and the seconds spent transferring, for the average speed in /api/metrics.
    db["jobs"].add_column("request", str)
    db["jobs"].add_column("elapsed_s", float)
    db["completed"].add_column("elapsed_s", float)


@migrations(name="003_webhook_deliveries")
def _webhook_deliveries(db: Database) -> None:
    # Inbound webhook deliveries already handled, so a replay queues nothing twice.
    db["webhook_deliveries"].create({"id": str, "received_at": str, "result": str}, pk="id")


@migrations(name="004_revoked_sessions")
def _revoked_sessions(db: Database) -> None:
    # GUI sessions ended by Log out, kept until they would have expired (Unix seconds).
    db["revoked_sessions"].create({"jti": str, "expires_at": int}, pk="jti")


@migrations(name="005_completed_mtime")
def _completed_mtime(db: Database) -> None:
    # The completed file's mtime (ns) beside its size: "still in place" means both unchanged.
    db["jobs"].add_column("mtime_ns", int)
    db["completed"].add_column("mtime_ns", int)


@migrations(name="006_job_request_key")
def _job_request_key(db: Database) -> None:
    # What the request asked for (job_rows.request_key), kept beside dedupe_key (what Civitai said
    # it means): a batch is accepted before Civitai is asked, so the same request is recognised
    # by its own key while its dedupe_key is still unknown.
    db["jobs"].add_column("request_key", str)
    db["jobs"].create_index(["request_key"])
    db.execute(
        """update jobs set request_key = case
            when json_extract(request, '$.modelVersionId') is not null then 'civitai:'
                || json_extract(request, '$.modelVersionId') || ':'
                || coalesce(json_extract(request, '$.fileId'), 'primary')
            when json_extract(request, '$.modelId') is not null then 'model:'
                || json_extract(request, '$.modelId') || ':'
                || coalesce(json_extract(request, '$.fileId'), 'primary')
            else 'url:' || json_extract(request, '$.url') end
        where request is not null"""
    )


@migrations(name="007_update_checks")
def _update_checks(db: Database) -> None:
    # Each finished update check (its summary as JSON), so "last update check" survives a restart.
    db["update_checks"].create(
        {"id": int, "started_at": str, "finished_at": str, "summary": str}, pk="id"
    )


@migrations(name="008_job_waiting")
def _job_waiting(db: Database) -> None:
    # A job waiting between attempts says when the next one starts, and how many it may make.
    db["jobs"].add_column("next_attempt_at", str)
    db["jobs"].add_column("max_attempts", int)


@migrations(name="009_completed_base_model")
def _completed_base_model(db: Database) -> None:
    # The base model (SD 1.5, SDXL 1.0, Flux.1 D, ...) the Library filters by: Civitai's version
    # JSON holds it; rows completed before this came from a job whose `info` holds that JSON.
    db["completed"].add_column("base_model", str)
    db.execute(
        """update completed set base_model = (
            select json_extract(jobs.info, '$.baseModel') from jobs
            where jobs.id = completed.job_id and json_valid(jobs.info))
        where base_model is null and job_id is not null"""
    )


@migrations(name="010_job_retry_blocked")
def _job_retry_blocked(db: Database) -> None:
    # A failed job that a retry cannot help (a 404, an archived model, a wrong published hash)
    # says why; null: a retry can help.
    db["jobs"].add_column("retry_blocked", str)


@migrations(name="011_job_track")
def _job_track(db: Database) -> None:
    # A job asked with "track": true adds its model to manifest.json once its file is verified.
    db["jobs"].add_column("track", int)


@migrations(name="012_update_early_access")
def _update_early_access(db: Database) -> None:
    # An update found while its version is in early access: when it can be downloaded. Its job
    # is queued (and this cleared) by the first check after that.
    db["updates"].add_column("early_access_until", str)


@migrations(name="013_job_folder")
def _job_folder(db: Database) -> None:
    # The folder (relative to download_dir) the layout gave the job when it was queued: a job
    # whose file name Civitai tells later keeps it when the layout changes meanwhile.
    db["jobs"].add_column("folder", str)


@migrations(name="014_huggingface")
def _huggingface(db: Database) -> None:
    # What a job's bytes are checked against: "sha256", or "size" for a Hugging Face file kept
    # in git (no published hash); null: nothing known. An update of a tracked Hugging Face file
    # names its URL (its new_version_id is the commit).
    db["jobs"].add_column("verified_by", str)
    db["updates"].add_column("url", str)


@migrations(name="015_url_secrets")
def _url_secrets(db: Database) -> None:
    # A job URL's credentials (user:password@, ?token=, a signature) move to url_secrets: the
    # other columns keep the URL with *** in their place (job_secrets.py).
    db["jobs"].add_column(job_secrets.COLUMN, str)
    fields = ", ".join(job_secrets.URL_FIELDS)
    for row in list(db.query(f"select id, {fields} from jobs")):
        kept = job_secrets.kept_apart({k: row[k] for k in job_secrets.URL_FIELDS})
        if job_secrets.COLUMN in kept:
            db["jobs"].update(row["id"], kept)


@migrations(name="016_git_sha1")
def _git_sha1(db: Database) -> None:
    # A Hugging Face file kept in git is verified by its git blob SHA-1 (the Hub's ETag), kept
    # here; its verified_by is "git-sha1".
    db["jobs"].add_column("git_sha1", str)


@migrations(name="017_fleet-metrics_origin_and_error_class")
def _fleet_metrics(db: Database) -> None:
    # GET /metrics counts bytes by where they came from (engine/origins.py: civitai, huggingface,
    # direct), kept on the completed row as its job may leave the history; and failures by the
    # errors/ class that failed the job.
    db["completed"].add_column("origin", str)
    db["jobs"].add_column("error_class", str)
    hosts = ("huggingface.co", "www.huggingface.co", "hf.co")  # sources/huggingface.HUB_HOSTS
    hub = " or ".join(f"jobs.url like 'https://{host}/%'" for host in hosts)
    db.execute(
        f"""update completed set origin = case
            when modelVersionId is not null then 'civitai'
            when exists (select 1 from jobs where jobs.id = completed.job_id and ({hub}))
                then 'huggingface'
            else 'direct' end"""
    )


@migrations(name="018_follows_tables")
def _follows_tables(db: Database) -> None:
    # Follows (issue 28): a rule (its JSON as the API took it) and what its checks found; the
    # models each has seen (its newest version then), and each version it took or holds, so
    # nothing is queued twice across checks or restarts.
    db["follows"].create(
        {
            "id": int,
            "rule": str,
            "created_at": str,
            "updated_at": str,
            "checked_at": str,
            "full_pass_at": str,
            "last_result": str,
        },
        pk="id",
    )
    db["follow_seen"].create(
        {"follow_id": int, "modelId": int, "versionId": int}, pk=("follow_id", "modelId")
    )
    db["follow_taken"].create(
        {
            "follow_id": int,
            "modelVersionId": int,
            "modelId": int,
            "state": str,  # "queued", "notified" or "held" (early access, until `until`)
            "until": str,
            "job_id": int,
            "item": str,  # what was found (model, version, file, size, folder) as JSON
            "found_at": str,
            "taken_at": str,
        },
        pk=("follow_id", "modelVersionId"),
    )


SEARCH_TEXT = (
    "coalesce(new.model_name, '') || ' ' || coalesce(new.version_name, '') || ' ' || "
    "coalesce(new.filename, '') || ' ' || coalesce(new.trained_words, '')"
)


@migrations(name="019_lib-page_catalog")
def _lib_page_catalog(db: Database) -> None:
    # The Library page searches trigger words and blurs NSFW previews (library/catalog.py); it
    # finds a file by hash and an update by the version on disk, so those are indexed. An update
    # names the new file (id, name, size): "Download all updates" shows its plan without asking
    # Civitai again.
    db["completed"].add_column("trained_words", str)
    db["completed"].add_column("preview_nsfw", int)
    # What a search reads, in one column (a LIKE over it is several times faster than over
    # the columns joined), kept by triggers whoever adds or renames a row.
    db["completed"].add_column("search_text", str)
    for event in ("insert", "update of model_name, version_name, filename, trained_words"):
        db.execute(
            f"create trigger if not exists completed_search_{event.split()[0]} after {event} "
            f"on completed begin update completed set search_text = {SEARCH_TEXT} "
            "where id = new.id; end"
        )
    db["completed"].create_index(["sha256"], if_not_exists=True)
    db["completed"].create_index(["modelVersionId"], if_not_exists=True)
    db["completed"].create_index(["modelId"], if_not_exists=True)
    db["updates"].add_column("file_id", int)
    db["updates"].add_column("filename", str)
    db["updates"].add_column("size", int)
    db["updates"].add_column(
        "untracked", int
    )  # 1: found for a file not tracked, never queued by the check
    db["updates"].create_index(["modelId", "old_version_id"], if_not_exists=True)
    # Rows recorded before: from their job's version JSON, else their .civitai.info sidecar.
    rows = db.execute(
        "select completed.id, completed.path, jobs.info from completed "
        "left join jobs on jobs.id = completed.job_id"
    ).fetchall()
    for row_id, path, info in rows:
        try:
            version = json.loads(info) if info else None
        except ValueError:
            version = None
        if not isinstance(version, dict) and path:
            version = catalog.sidecar_info(Path(path))
        values = {k: v for k, v in catalog.fields(version).items() if v is not None}
        if values:
            db["completed"].update(row_id, values)
    db.execute(f"update completed set search_text = {SEARCH_TEXT.replace('new.', '')}")


@migrations(name="020_policies_update_policy")
def _update_policy(db: Database) -> None:
    # The tracked model's update policy when the update was found or queued ("notify" lists it
    # only: no job), as a person reads it: notify, download, replace, keep 3.
    db["updates"].add_column("policy", str)


@migrations(name="021_lib-backend_file_status")
def _file_status(db: Database) -> None:
    # Every model file under download_dir the daemon did not download is a row here once a scan
    # found it: its type (from its folder), whether Civitai knows it ('matched'), does not
    # ('unknown') or was not asked yet ('pending'), and when it was last asked. Rows without a
    # status are only the hash cache of a completed download.
    db["file_hashes"].add_column("model_type", str)
    db["file_hashes"].add_column("status", str)
    db["file_hashes"].add_column("checked_at", str)
    db["file_hashes"].create_index(["status"])
    db["file_hashes"].create_index(["sha256"])
    db["completed"].create_index(["sha256"], if_not_exists=True)  # 019 made it too
    # A download that became a hard link to the same bytes elsewhere (link_duplicates) says where.
    db["jobs"].add_column("linked_from", str)
    # Which file of its version a completed download is (an export names it for the import).
    db["completed"].add_column("fileId", int)
    db.execute(
        "update completed set fileId = (select jobs.fileId from jobs where jobs.id = "
        "completed.job_id) where job_id is not null"
    )


@migrations(name="022_fleet-store_uploads")
def _fleet_store_uploads(db: Database) -> None:
    # Verified files waiting to be uploaded to the shared store (`store`), one row per SHA256:
    # kept until uploaded (or found there), so an upload a stop interrupted is made after it.
    db["store_uploads"].create(
        {
            "sha256": str,
            "path": str,
            "size": int,
            "meta": str,  # JSON: modelId, versionId, filename, the source URL without secrets
            "attempts": int,
            "next_at": float,  # seconds since the epoch: when to try again
            "error": str,
            "replace": int,  # 1: the store's copy failed its check; overwrite it
        },
        pk="sha256",
        if_not_exists=True,
    )
