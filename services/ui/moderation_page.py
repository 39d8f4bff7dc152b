"""The moderation queue's HTML: flagged decisions with their scores and versions, and the reviewer's form."""
from __future__ import annotations

from urllib.parse import urlencode

from db.models import ModerationDecision
from services.ui.pages import REVIEW_FILTERS, e, layout, thumbnail_url

TOP_SCORES = 6


def _scores(decision: ModerationDecision) -> str:
    scores = sorted((decision.category_scores or {}).items(), key=lambda item: -float(item[1] or 0))[:TOP_SCORES]
    flagged = decision.categories or {}
    rows = "".join(
        f'<li class="score{" hit" if flagged.get(name) else ""}"><span class="score-name">{e(name)}</span>'
        f'<span class="meter"><span style="width:{100 * min(max(float(value or 0), 0), 1):.1f}%"></span></span>'
        f'<span class="score-value">{float(value or 0):.2f}</span></li>' for name, value in scores)
    return f'<ul class="scores">{rows}</ul>' if rows else ""


def _review_form(decision: ModerationDecision, can_review: bool) -> str:
    if not can_review:
        return '<p class="muted small">Reviewing needs a key with the <code>admin</code> scope.</p>'
    return f"""<form class="review" method="post" action="/ui/moderation/review">
<input type="hidden" name="decision_id" value="{e(decision.id)}">
<label class="small"><span>Note <span class="muted">(optional)</span></span>
<input name="note" maxlength="2000" placeholder="Why"></label>
<div class="actions"><button type="submit" name="verdict" value="uphold">Uphold</button>
<button type="submit" name="verdict" value="overturn" class="secondary">Overturn</button></div>
</form>"""


def _reviewed(decision: ModerationDecision) -> str:
    if decision.review_status in (None, "pending"):
        return ""
    note = f" — “{e(decision.review_note)}”" if decision.review_note else ""
    when = f"{decision.reviewed_at:%Y-%m-%d %H:%M} UTC" if decision.reviewed_at else ""
    return f'<p class="small">{e(decision.review_status)} by {e(decision.reviewer)} {when}{note}</p>'


def decision_card(decision: ModerationDecision, can_review: bool) -> str:
    """One flagged item: thumbnail, text, flagged categories, scores, versions, failure, review."""
    image = (f'<img class="thumb big" src="{e(thumbnail_url(decision.image_sha256))}" alt="flagged image" '
             'loading="lazy">' if decision.image_sha256 else '<div class="thumb big none">text</div>')
    chips = "".join(f'<span class="chip">{e(name)}</span>' for name, hit in (decision.categories or {}).items() if hit)
    failure = (f'<p class="failure"><strong>Not scored:</strong> {e(decision.failure)}</p>'
               if decision.failure else "")
    text = f'<p class="quote">{e(decision.text[:400])}</p>' if decision.text else ""
    return f"""<li class="decision card" id="decision-{e(decision.id)}"
data-review-status="{e(decision.review_status)}">
<div class="decision-head">{image}<div>
<p><span class="badge review-{e(decision.review_status)}">{e(decision.review_status)}</span> {chips}</p>
{text}
<p class="muted small">policy v{e(decision.policy_version)} · model {e(decision.model_version or "—")} ·
<time datetime="{decision.created_at.isoformat()}">{decision.created_at:%Y-%m-%d %H:%M} UTC</time></p>
</div></div>
{failure}{_scores(decision)}{_reviewed(decision)}
{_review_form(decision, can_review) if decision.review_status is not None else ""}
</li>"""


def moderation_page(tenant_name: str, decisions: list[ModerationDecision], *, review_filter: str,
                    can_review: bool, notice: str | None = None) -> str:
    tabs = "".join(
        f'<a href="/ui/moderation?{urlencode({"review_status": value})}"'
        f'{" aria-current=page" if value == review_filter else ""}>{label}</a>' for value, label in REVIEW_FILTERS)
    cards = "".join(decision_card(decision, can_review) for decision in decisions)
    empty = '<li class="empty muted card">Nothing here.</li>'
    message = f'<p class="notice" role="status">{e(notice)}</p>' if notice else ""
    body = f"""<section><h1>Moderation queue</h1><nav class="tabs">{tabs}</nav>{message}
<ul class="decisions">{cards or empty}</ul></section>"""
    return layout("Moderation", body, tenant_name=tenant_name, active="moderation")
