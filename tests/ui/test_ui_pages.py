"""The /ui page in Chromium: sign in, submit a job and see it finish live, follow a batch, review a flagged item."""
from __future__ import annotations

import re

import httpx
from playwright.sync_api import expect

from image_factory import data_url, photo_jpeg, shape_png
from moderation_rows import seed_decision

WORK_TIMEOUT_MS = 90_000  # a job through a real worker: the first one waits for the model to load


def wait_for_picture(image) -> None:
    """Waits until the <img> has loaded a real picture (scrolled to first: thumbnails load lazily)."""
    image.scroll_into_view_if_needed()
    image.page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())


def test_sign_in_keeps_only_a_signed_httponly_cookie_and_signs_out(api, page, sign_in, screenshot, make_ui_tenant):
    tenant = make_ui_tenant()
    page.goto(f"{api.url}/ui")
    expect(page).to_have_url(f"{api.url}/ui/sign-in")
    page.fill("input[name=api_key]", "lq_not-a-real-key")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("unknown or revoked API key")
    screenshot("sign-in-refused")

    sign_in(tenant.token)
    [cookie] = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert tenant.token not in cookie["value"] and tenant.token[3:] not in page.content()
    expect(page.locator(".tenant")).to_be_visible()

    page.click("text=Sign out")
    expect(page).to_have_url(f"{api.url}/ui/sign-in")
    assert page.context.cookies() == []
    page.goto(f"{api.url}/ui/batches")
    expect(page).to_have_url(f"{api.url}/ui/sign-in")


def seed_flagged(session_factory, tenant_id, *, failure: str | None = None) -> str:
    """A flagged decision with its stored image, as the moderation endpoint writes them."""
    from db.queries import store_image
    from services.config import ServiceSettings
    from services.input_checks import check_image

    image = check_image(photo_jpeg("astronaut"), ServiceSettings())
    with session_factory.begin() as session:
        store_image(session, tenant_id=tenant_id, image=image)
    return str(seed_decision(
        session_factory, tenant_id, image_sha256=image.sha256, text="look what I found",
        model_version="lensq-tiny@ui-test", policy_version=4, categories={"violence": True, "weapons": True, "spam": False},
        category_scores={"violence": 0.91, "weapons": 0.77, "spam": 0.12},
        category_applied_input_types={"violence": ["image"]}, failure=failure))


def test_a_reviewer_overturns_a_flagged_item_and_the_audit_trail_records_it(api, page, sign_in, screenshot,
                                                                            make_ui_tenant, session_factory):
    tenant = make_ui_tenant()
    decision_id = seed_flagged(session_factory, tenant.id)
    seed_flagged(session_factory, tenant.id, failure="the model could not read the image")
    sign_in(tenant.token)
    page.click("nav >> text=Moderation")
    card = page.locator(f"#decision-{decision_id}")
    expect(card.locator(".chip")).to_have_text(["violence", "weapons"])
    expect(card).to_contain_text("policy v4")
    expect(card.locator(".score.hit")).to_have_count(2)
    expect(page.locator(".failure")).to_contain_text("the model could not read the image")
    wait_for_picture(card.locator("img.thumb"))
    screenshot("moderation-queue")

    card.locator("input[name=note]").fill("a film still, not real violence")
    card.locator("button[value=overturn]").click()
    expect(page.locator(".notice")).to_contain_text("Overturned")
    expect(page.locator(f"#decision-{decision_id}")).to_have_count(0)  # gone from the pending queue
    page.click("text=Overturned")
    expect(page.locator(f"#decision-{decision_id}")).to_contain_text("a film still, not real violence")
    screenshot("moderation-overturned")

    with httpx.Client(base_url=api.url, headers=tenant.headers) as http:
        [event] = http.get("/v1/audit/events").json()["data"]
        decision = next(d for d in http.get("/v1/moderation/decisions").json()["data"] if d["id"] == decision_id)
    assert event["subject_id"] == decision_id and event["actor"] == tenant.prefix
    assert event["detail"] == {"verdict": "overturn", "review_status": "overturned", "previous_status": "pending",
                               "reviewer": f"reviewer ({tenant.prefix})", "note": "a film still, not real violence"}
    assert decision["review_status"] == "overturned" and decision["reviewed_at"]


def test_a_read_only_key_sees_the_queue_but_no_review_or_submit_form(api, page, sign_in, make_ui_tenant,
                                                                     session_factory):
    tenant = make_ui_tenant(scopes=["read"])
    seed_flagged(session_factory, tenant.id)
    sign_in(tenant.token)
    expect(page.locator("#submit-form")).to_have_count(0)
    page.click("nav >> text=Moderation")
    expect(page.locator(".decision")).to_have_count(1)
    expect(page.locator("form.review")).to_have_count(0)
    expect(page.locator(".decision")).to_contain_text("needs a key with the admin scope")


# --- through a real worker (its boot, started by the first page, overlapped the tests above) ---------------

def test_submit_a_job_and_see_it_finish_in_the_live_list(api, booting_worker, page, sign_in, screenshot,
                                                          make_ui_tenant):
    booting_worker()
    tenant = make_ui_tenant()
    sign_in(tenant.token)
    expect(page.locator("#live")).to_have_class("live on")

    # A bad request is refused with the field named, and nothing is queued.
    page.select_option("select[name=task]", "classify")
    page.set_input_files("input[name=image]", files=[{"name": "a.png", "mimeType": "image/png",
                                                      "buffer": shape_png(5)}])
    page.fill("input[name=labels]", "circle")
    page.click("#submit-form button[type=submit]")
    expect(page.locator("#submit-status")).to_contain_text("labels: labels has 1 items")
    expect(page.locator("input[name=labels]")).to_have_class("invalid")

    page.fill("input[name=labels]", "circle, square, triangle")
    page.click("#submit-form button[type=submit]")
    expect(page.locator("#submit-status")).to_contain_text("Queued: classify job")
    row = page.locator(".job").first
    expect(row.locator(".status")).to_have_text("succeeded", timeout=WORK_TIMEOUT_MS)
    expect(row.locator(".result")).to_have_text(re.compile(r"^(circle|square|triangle) \(\d+%\)$"))
    expect(row.locator(".asked")).to_have_text("circle, square, triangle")
    wait_for_picture(row.locator("img.thumb"))
    screenshot("job-finished")

    with httpx.Client(base_url=api.url, headers=tenant.headers) as http:
        jobs = http.get("/v1/jobs").json()["data"]
    assert [(job["task"], job["status"]) for job in jobs] == [("classify", "succeeded")]


def test_a_batch_shows_its_progress_bar(api, booting_worker, page, sign_in, screenshot, make_ui_tenant):
    booting_worker()
    tenant = make_ui_tenant()
    items = [{"image": data_url(shape_png(20 + i)), "ref": f"shape-{i}"} for i in range(3)]
    with httpx.Client(base_url=api.url, headers=tenant.headers, timeout=60) as http:
        batch = http.post("/v1/batches", json={"task": "caption", "items": items}).json()
    sign_in(tenant.token)
    page.click("nav >> text=Batches")
    expect(page.locator(".batch-row")).to_have_count(1)
    expect(page.locator(".batch-row .progress")).to_have_attribute("aria-valuemax", "3")

    page.click(".batch-row a")
    expect(page).to_have_url(f"{api.url}/ui/batch?batch_id={batch['id']}")
    expect(page.locator("#jobs .job")).to_have_count(3)
    expect(page.locator('[data-count="succeeded"]')).to_have_text("3", timeout=WORK_TIMEOUT_MS)
    bar = page.locator("#batch .progress")
    expect(bar).to_have_attribute("aria-valuenow", "3")
    assert bar.locator(".seg-succeeded").evaluate("seg => seg.style.width") == "100%"
    assert [text.strip() for text in page.locator("#jobs .job .muted.small").all_inner_texts()] == ["#0", "#1", "#2"]
    screenshot("batch-done")
    page.click("nav >> text=Batches")
    expect(page.locator(".batch-row")).to_contain_text("3/3 done")
