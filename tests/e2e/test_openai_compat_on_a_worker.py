"""The OpenAI-compatible surface on a real worker, through the real `openai` client: chat, moderation, batches —
each answer equal to what the worker's model gives for the same input."""
from __future__ import annotations

import json
import time
import uuid

import openai
import pytest

from db.models import ModerationDecision
from image_factory import data_url, photo_jpeg, shape_png

CHAT_URL = "/v1/chat/completions"


@pytest.fixture
def client(api, tenant, worker_pool) -> openai.OpenAI:
    worker_pool.ensure(1)
    return openai.OpenAI(base_url=api.url + "/v1", api_key=tenant.token, max_retries=0, timeout=120)


def image_message(png: bytes, text: str | None = None) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": data_url(png)}}]
    return [{"role": "user", "content": parts + ([{"type": "text", "text": text}] if text else [])}]


def decoded(png: bytes):
    from multimodal import decode_image

    return [decode_image(png)]


@pytest.mark.timeout(180)
def test_chat_caption_vqa_and_stream_match_the_model(client, api, tenant, reference_pipeline):
    png = shape_png(7)
    caption = client.chat.completions.create(model="any", messages=image_message(png, "Describe this image"))
    assert caption.object == "chat.completion" and caption.model == reference_pipeline.model_version
    assert caption.choices[0].message.role == "assistant" and caption.choices[0].finish_reason == "stop"
    assert caption.choices[0].message.content == reference_pipeline.caption(decoded(png))[0]
    job_id = caption.id.removeprefix("chatcmpl-")
    with api.client(tenant) as http:  # the same job the ledger holds, as /v1/jobs shows it
        assert http.get(f"/v1/jobs/{job_id}").json()["result"] == {"caption": caption.choices[0].message.content}

    answer = client.chat.completions.create(model="any", temperature=0, messages=image_message(png, "what shape is it?"))
    assert answer.choices[0].message.content == reference_pipeline.answer(decoded(png), ["what shape is it?"])[0]

    chunks = list(client.chat.completions.create(model="any", stream=True, messages=image_message(png)))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == caption.choices[0].message.content


@pytest.mark.timeout(180)
def test_moderation_scores_are_the_models_and_are_stored(client, session_factory, reference_pipeline):
    from db.moderation import DEFAULT_POLICY

    photo = photo_jpeg("rocket")
    result = client.moderations.create(input=[{"type": "text", "text": "I hate this, it is awful"},
                                              {"type": "image_url", "image_url": {"url": data_url(photo, "image/jpeg")}}])
    [item] = result.results
    scores, applied = item.category_scores.to_dict(), item.category_applied_input_types.to_dict()
    assert result.model == reference_pipeline.model_version and item.model_extra["failure"] is None

    with session_factory() as session:
        stored = session.get(ModerationDecision, uuid.UUID(item.model_extra["decision_id"]))
    from services.input_checks import check_image
    from services.config import ServiceSettings

    image = decoded(check_image(photo, ServiceSettings()).data)  # the stored canonical copy is what the worker reads
    violence = DEFAULT_POLICY["violence"]
    expected = reference_pipeline.classify(image, [violence["labels"] + violence["against"]])[0]["scores"]
    assert scores["violence"] == pytest.approx(sum(expected[label] for label in violence["labels"]), abs=1e-3)
    negative = reference_pipeline.sentiment(image, ["I hate this, it is awful"])[0]["probabilities"]["negative"]
    assert scores["negative_sentiment"] == pytest.approx(negative, abs=1e-3)
    assert applied == {"violence": ["image"], "sexual": ["image"], "hate": ["image"],
                       "negative_sentiment": ["image", "text"]}
    flags = {name: scores[name] >= DEFAULT_POLICY[name]["threshold"] for name in DEFAULT_POLICY}
    assert item.categories.to_dict() == flags and item.flagged == any(flags.values())
    assert (stored.flagged, stored.category_scores, stored.policy_version) == (item.flagged, scores, 0)
    assert stored.review_status == ("pending" if item.flagged else None) and len(stored.job_ids) == 4

    text_only = client.moderations.create(input=["have a lovely day"]).results[0]
    assert text_only.category_applied_input_types.to_dict() == {"violence": [], "sexual": [], "hate": [],
                                                                "negative_sentiment": ["text"]}
    assert text_only.model_extra["failure"] is None and 0 <= text_only.category_scores.to_dict()["negative_sentiment"] <= 1


def wait_for_batch(client: openai.OpenAI, batch_id: str, timeout: float = 150):
    deadline = time.monotonic() + timeout
    while (batch := client.batches.retrieve(batch_id)).status not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.5)
    return batch


@pytest.mark.timeout(240)
def test_a_batch_file_runs_to_output_and_error_files(client, reference_pipeline):
    pngs = [shape_png(20), shape_png(21)]
    lines = [{"custom_id": "cap", "method": "POST", "url": CHAT_URL, "body": {"messages": image_message(pngs[0])}},
             {"custom_id": "ask", "method": "POST", "url": CHAT_URL,
              "body": {"messages": image_message(pngs[1], "what color is the shape?"), "temperature": 0}},
             {"custom_id": "hot", "method": "POST", "url": CHAT_URL,
              "body": {"messages": image_message(pngs[1]), "temperature": 1}}]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    input_file = client.files.create(file=("requests.jsonl", data), purpose="batch")
    batch = client.batches.create(input_file_id=input_file.id, endpoint=CHAT_URL, completion_window="24h")
    batch = wait_for_batch(client, batch.id)

    assert batch.status == "completed"
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (3, 2, 1)
    output = {o["custom_id"]: o for o in map(json.loads, client.files.content(batch.output_file_id).text.splitlines())}
    assert set(output) == {"cap", "ask"} and all(o["response"]["status_code"] == 200 for o in output.values())
    contents = {k: o["response"]["body"]["choices"][0]["message"]["content"] for k, o in output.items()}
    assert contents == {"cap": reference_pipeline.caption(decoded(pngs[0]))[0],
                        "ask": reference_pipeline.answer(decoded(pngs[1]), ["what color is the shape?"])[0]}
    [error] = map(json.loads, client.files.content(batch.error_file_id).text.splitlines())
    assert error["custom_id"] == "hot" and error["error"]["param"] == "body.temperature"
    assert client.batches.retrieve(batch.id).output_file_id == batch.output_file_id  # written once
