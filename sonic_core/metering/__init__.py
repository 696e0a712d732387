"""Metering: what a job costs before it runs, who pays for it, and what the service reports.

``tiers`` (pricing tiers as data, ``tiers.toml``, and a tier's verdict on a job), ``cost`` (predicted seconds and
peak memory: arithmetic on the shipped ``network_counts.json`` and ``cost_coefficients.json``), ``graph_pricing``
(the cost of a ComfyUI prompt), ``enforcement`` (queue-time budgets of a ComfyUI server), ``ledger`` (balances
and charges per API key, one module per backend) and ``metrics`` (Prometheus).

Nothing here imports torch, the networks or ComfyUI (the network counts are made by ``bench/network_counts.py``);
the Redis client is imported only when a ``redis://`` ledger is opened.
"""
