"""What a fleet of daemons shares: the S3 store of verified files, keyed by SHA256 (`s3.py`: the
bucket, through boto3 imported only when `store` is set; `shared.py`: finding a file's shared
copy and uploading verified files in the background, retried across restarts).

Must not import: engine, web, daemon, main, updater, notify, library, fastapi, starlette, uvicorn
"""
