"""The daily update check and its schedule: the Civitai check (checker.py), the Hugging Face
check (hub.py), their shared context and result (context.py), and the checks' history.

Must not import: web, main, fastapi, starlette, uvicorn
"""
