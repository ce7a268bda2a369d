"""The HTTP surface: who may ask what (keys, roles, sessions, the CLI's proof), the request
bodies, and the routers (web/routes). The only place besides main.py that knows a request.

Must not import: main
"""
