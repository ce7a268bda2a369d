"""What runs inside other programs and talks to the daemon over HTTP only: the ComfyUI package
(`integrations/comfyui/`, a custom-node folder ComfyUI imports into its own process).

Must not import: daemon, main, engine, sources, library, web, config, notify, updater, errors,
database, events, job_secrets, json_body, safefs, logger, schema, cli, install, launch, run_tests,
webhook_server, tests, bench, fastapi
"""
