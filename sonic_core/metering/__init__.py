"""Service side of a Sonic deployment: the token ledger and Prometheus metrics.

Nothing here imports torch or ComfyUI; the Redis client is imported only when a ``redis://`` ledger is opened.
"""
