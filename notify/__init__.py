"""Telling others: outbound webhooks and the Discord and Telegram messages.

Must not import: engine, web, daemon, main, updater, fastapi, starlette, uvicorn
"""
