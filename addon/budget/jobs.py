"""Reservations held for jobs: a call that creates a job whose usage arrives only with its result
(fal's queue) hands its reservation to the job, and the result's fetch settles it.

A job's lease is `job:<object key>`, in the books of whoever created it (only they may fetch
its result: ownership).
"""

from __future__ import annotations

from urllib.parse import unquote

from mitmproxy import http

from addon import header_index
from addon.budget.books import Lease
from addon.config.operations import Operation
from addon.config.provider import Provider
from addon.jobs import objects

# How long a job's reservation is held for its result: fetched later, the expiry has charged
# the reservation and the result is charged only what it costs beyond.
JOB_HOLD = 3600
_BILLS_LATER = "units"  # the meter of jobs whose usage comes with their result


def lease_fetched(
    provider: Provider, operation: Operation | None, method: str, host: str, path: str
) -> str | None:
    """The lease of the job whose result a read fetches (fal's `GET .../requests/{id}`)."""
    if operation is None or operation.meter != _BILLS_LATER:
        return None
    found = operation.match(method, host, path) or {}
    specs = provider.catalogue.objects
    for kind, value in found.items():
        return f"job:{specs[kind].key(unquote(value).lower())}"
    return None


def created(
    provider: Provider, operation: Operation | None, response: http.Response
) -> Lease | None:
    """The job a successful answer created, when its usage comes later: the lease that holds
    the call's reservation for it. None: no such job, or its id cannot be read."""
    if (
        operation is None
        or operation.creates is None
        or operation.meter != _BILLS_LATER
        or not 200 <= response.status_code < 300
    ):
        return None
    spec = provider.catalogue.objects[operation.creates]
    body = b"" if response.stream else header_index.content(response) or b""
    job = objects.id_in_answer(spec, body, header_index.lookup(response.headers))
    return Lease(f"job:{spec.key(job)}", JOB_HOLD, charge=True) if job else None
