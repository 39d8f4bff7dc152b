"""The web page's HTML: the layout, sign-in, jobs, batches, one batch and the moderation queue."""
from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import urlencode

from db.models import Batch

TASKS = (("caption", "Caption"), ("vqa", "Ask a question"), ("sentiment", "Sentiment"),
         ("classify", "Classify"))
STATUS_ORDER = ("succeeded", "failed", "cancelled", "running", "queued")
REVIEW_FILTERS = (("pending", "Pending"), ("upheld", "Upheld"), ("overturned", "Overturned"), ("all", "All"))
NAV = (("jobs", "/ui", "Jobs"), ("batches", "/ui/batches", "Batches"), ("moderation", "/ui/moderation", "Moderation"))


def e(value: Any) -> str:
    """Text made safe for HTML, attributes included."""
    return escape("" if value is None else str(value), quote=True)


def thumbnail_url(sha256: str | None) -> str:
    return "/ui/thumbnail?" + urlencode({"sha256": sha256}) if sha256 else ""


def layout(title: str, body: str, *, tenant_name: str | None = None, active: str = "") -> str:
    """A whole page: head, the top bar with its navigation and sign-out, and the body."""
    nav = ""
    if tenant_name is not None:
        links = "".join(f'<a href="{href}"{" aria-current=page" if name == active else ""}>{label}</a>'
                        for name, href, label in NAV)
        nav = (f'<nav class="nav">{links}</nav><form class="signout" method="post" action="/ui/sign-out">'
               f'<span class="tenant" title="tenant">{e(tenant_name)}</span>'
               '<button type="submit" class="link">Sign out</button></form>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} · LensQ</title>
<link rel="stylesheet" href="/ui/static/ui.css">
<script src="/ui/static/ui.js" defer></script>
</head><body>
<header class="bar"><a class="brand" href="/ui">LensQ</a>{nav}</header>
<main>{body}</main>
</body></html>"""


def sign_in_page(error: str | None = None) -> str:
    message = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    body = f"""<section class="card narrow">
<h1>Sign in</h1>
<p class="muted">Paste one of your tenant's API keys. It is checked once; the browser then keeps only a signed
session cookie, never the key.</p>{message}
<form method="post" action="/ui/session" class="stack">
<label>API key <input type="password" name="api_key" autocomplete="off" required placeholder="lq_..."></label>
<button type="submit">Sign in</button>
</form></section>"""
    return layout("Sign in", body)


def refused_page(tenant_name: str, scope: str, active: str) -> str:
    body = (f'<section class="card narrow"><h1>Not allowed</h1><p>This API key lacks the <code>{e(scope)}</code> '
            'scope this page needs. Sign out and sign in with a key that has it.</p></section>')
    return layout("Not allowed", body, tenant_name=tenant_name, active=active)


def _task_fields() -> str:
    return """<div class="task-field" data-task="vqa" hidden><label>Question
<input name="question" maxlength="500" placeholder="What colour is the shape?"></label></div>
<div class="task-field" data-task="sentiment" hidden><label>Text of the post
<textarea name="text" rows="2" maxlength="5000" placeholder="Best day ever!"></textarea></label></div>
<div class="task-field" data-task="classify" hidden>
<label><span>Labels <span class="muted">(comma-separated)</span></span>
<input name="labels" placeholder="cat, dog, rocket"></label></div>"""


def jobs_page(tenant_name: str, can_submit: bool) -> str:
    """The submit form and the live list of the tenant's jobs (filled by the event stream)."""
    options = "".join(f'<option value="{value}">{label}</option>' for value, label in TASKS)
    form = f"""<section class="card"><h2>New job</h2>
<form id="submit-form" class="stack" method="post" action="/ui/jobs" enctype="multipart/form-data">
<label>Image <input type="file" name="image" accept="image/*" required></label>
<label>Task <select name="task">{options}</select></label>
{_task_fields()}
<button type="submit">Submit</button>
<p id="submit-status" class="status-line" role="status" aria-live="polite"></p>
</form></section>""" if can_submit else (
        '<section class="card"><p class="muted">This key lacks the <code>submit</code> scope: '
        'it can watch jobs but not send them.</p></section>')
    body = f"""<div class="grid">{form}
<section class="card"><h2>Jobs <span id="live" class="live" title="live updates">live</span></h2>
<ul id="jobs" class="jobs" data-events="/ui/events"><li class="empty muted">No jobs yet.</li></ul>
</section></div>"""
    return layout("Jobs", body, tenant_name=tenant_name, active="jobs")


def progress_bar(counts: dict[str, int], total: int) -> str:
    """A bar with one segment per status, and its figures for screen readers."""
    done = sum(counts.get(status, 0) for status in ("succeeded", "failed", "cancelled"))
    segments = "".join(
        f'<span class="seg seg-{status}" data-status="{status}" '
        f'style="width:{100 * counts.get(status, 0) / total:.2f}%"></span>' for status in STATUS_ORDER if total)
    return (f'<div class="progress" role="progressbar" aria-valuemin="0" aria-valuemax="{total}" '
            f'aria-valuenow="{done}" data-total="{total}">{segments}</div>')


def _counts_line(counts: dict[str, int]) -> str:
    return "".join(f'<span class="count"><i class="dot dot-{status}"></i><span data-count="{status}">'
                   f'{counts.get(status, 0)}</span> {status}</span>' for status in STATUS_ORDER)


def batches_page(tenant_name: str, batches: list[tuple[Batch, dict[str, int]]]) -> str:
    rows = "".join(
        f"""<li class="batch-row"><a href="/ui/batch?{urlencode({'batch_id': batch.id})}">
<span class="batch-title">Batch <code>{e(str(batch.id)[:8])}</code></span>
<span class="muted"><time datetime="{batch.created_at.isoformat()}">{batch.created_at:%Y-%m-%d %H:%M} UTC</time>
· {sum(counts[s] for s in ('succeeded', 'failed', 'cancelled'))}/{batch.total} done</span>
{progress_bar(counts, batch.total)}</a></li>""" for batch, counts in batches)
    empty = '<li class="empty muted">No batches yet. Send one with POST /v1/batches or `lensq batch`.</li>'
    body = f'<section class="card"><h1>Batches</h1><ul class="batches">{rows or empty}</ul></section>'
    return layout("Batches", body, tenant_name=tenant_name, active="batches")


def batch_page(tenant_name: str, batch: Batch, counts: dict[str, int]) -> str:
    """One batch: its counts and progress bar, kept live from the event stream, and its jobs."""
    events = "/ui/events?" + urlencode({"batch_id": batch.id})
    body = f"""<section class="card" id="batch" data-total="{batch.total}">
<h1>Batch <code>{e(str(batch.id)[:8])}</code></h1>
<p class="muted">{batch.total} jobs · created {batch.created_at:%Y-%m-%d %H:%M} UTC ·
results as JSONL: <code>GET /v1/batches/{e(batch.id)}/results</code></p>
{progress_bar(counts, batch.total)}
<p class="counts">{_counts_line(counts)}</p></section>
<section class="card"><h2>Jobs</h2>
<ul id="jobs" class="jobs" data-events="{e(events)}" data-order="index"><li class="empty muted">Loading…</li></ul>
</section>"""
    return layout("Batch", body, tenant_name=tenant_name, active="batches")
