"""The routers, one module per concern, each declaring its own APIRouter; main.py wires them.

Must not import: main
"""
