"""HTTP routers, one module per concern; main.py wires them."""
