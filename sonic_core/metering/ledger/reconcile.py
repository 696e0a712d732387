"""Settling the holds whose owner died: the part of crash recovery that every runner of jobs shares.

A hold (a reserved :class:`Charge`) names its job (``job_id``), the runner that reserved it (``owner``: a ComfyUI
server, a fleet worker), when it was reserved and, once its run wrote it, its output. Whether that owner is still
alive is the runner's knowledge, not the ledger's, so :func:`reconcile_holds` takes it as a function of the hold:

- a ComfyUI server restarting after a crash: every hold of its own ``owner`` belongs to the dead process
  (``alive=lambda hold: False``, ``owner=`` its id);
- a fleet: ask the broker whether the worker named by ``hold.owner`` still answers, or treat a hold older than the
  longest job as expired (``lambda hold: now - hold.reserved_at < max_job_time``).

A dead owner's hold is committed where ``seconds_run`` says the job's work exists (it returns the seconds to record)
and refunded otherwise, so tokens are neither held forever nor charged for work that was not done.
"""

from __future__ import annotations

from typing import Callable

from .base import Charge, Ledger, LedgerStateError

OwnerAlive = Callable[[Charge], bool]
SecondsRun = Callable[[Charge], "float | None"]


def refund_all(hold: Charge) -> float | None:
    """The default ``seconds_run``: no work of a dead owner is proven, so every hold is refunded."""
    return None


def reconcile_holds(ledger: Ledger, alive: OwnerAlive, *, owner: str | None = None,
                    seconds_run: SecondsRun = refund_all) -> list[Charge]:
    """Settle each hold (of ``owner`` only, if given) for which ``alive`` is false, oldest first: commit it with
    ``seconds_run(hold)`` seconds, or refund it where that is ``None``. A hold that someone else (an operator,
    another reconciler) settled the other way meanwhile is skipped; one settled the same way is returned as stored
    (the ledger's transitions are exactly-once). Returns the settled charges."""
    settled = []
    for hold in ledger.holds(owner):
        if alive(hold):
            continue
        seconds = seconds_run(hold)
        try:
            settled.append(ledger.refund(hold.job_id) if seconds is None else ledger.commit(hold.job_id, seconds))
        except LedgerStateError:
            continue
    return settled
