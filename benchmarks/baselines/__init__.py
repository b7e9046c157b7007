"""Reference servers the benchmark measures the service against (see naive_server.py)."""
