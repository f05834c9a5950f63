"""The service answers every task as the API and the CLI's --json do, from endpoints built from
the task registry, plus the OpenAI-compatible chat endpoint, health, readiness, metrics and docs."""

from __future__ import annotations

from openofa.tasks import TASKS


def test_every_registered_task_has_an_endpoint_documented_with_its_fields(client):
    paths = client.get("/openapi.json").json()["paths"]
    for name, spec in TASKS.items():
        body = paths[f"/v1/{name}"]["post"]["requestBody"]["content"]
        for kind in ("application/json", "multipart/form-data"):
            props = body[kind]["schema"]["properties"]
            assert set(props) == {f.name for f in spec.inputs + spec.options}, (name, kind)
    assert paths["/v1/vqa"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"][
        "image"]["format"] == "binary"
    assert "/v1/chat/completions" in paths
    assert client.get("/docs").status_code == 200


def test_tasks_answer_as_the_api_does(client, mini, example_png, example_b64):
    from PIL import Image
    import io

    image = Image.open(io.BytesIO(example_png)).convert("RGB")
    r = client.post("/v1/caption", files={"image": ("scene.png", example_png, "image/png")})
    assert r.status_code == 200
    assert r.json() == {"input": "scene.png", **mini.run("caption", [{"image": image}])[0]}
    assert r.headers["x-batch-size"] == "1"

    question = "what shape is the blue object?"
    r = client.post("/v1/vqa", json={"image": example_b64, "question": question})
    assert r.json() == mini.run("vqa", [{"image": image, "question": question}])[0]
    r = client.post("/v1/vqa", data={"question": question, "answers": "circle,square", "mode": "allcand"},
                    files={"image": ("scene.png", example_png, "image/png")})
    assert r.json()["answer"] == mini.vqa(image, question, answers=["circle", "square"])

    r = client.post("/v1/ground", json={"image": "data:image/png;base64," + example_b64, "text": "the blue circle"})
    box = r.json()["box"]
    assert box == mini.ground(image, "the blue circle") and 140 < box[0] < 152  # the circle spans x 146..238
    r = client.post("/v1/detect", files={"image": ("scene.png", example_png, "image/png")})
    assert sorted(o["label"] for o in r.json()["objects"]) == ["large blue circle", "large red square"]


def test_chat_completions_map_to_captioning_and_vqa(client, mini, example_b64):
    url = "data:image/png;base64," + example_b64

    def ask(*parts, model="openofa"):
        r = client.post("/v1/chat/completions", json={"model": model, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [*parts, {"type": "image_url", "image_url": {"url": url}}]}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
        return body["choices"][0]["message"]["content"]

    import base64

    image = base64.b64decode(example_b64)
    assert ask() == mini.caption(image)
    assert ask({"type": "text", "text": "Describe this image."}) == mini.caption(image)
    assert ask({"type": "text", "text": "what shape is the red object?"}) == mini.vqa(image, "what shape is the red object?")
    assert ask({"type": "text", "text": "what shape is the red object?"}, model="caption") == mini.caption(image)
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "no image here"}]})
    assert r.status_code == 422 and "image_url" in r.json()["error"]


def test_a_task_the_model_does_not_run_is_refused_with_a_reason(client, example_b64):
    r = client.post("/v1/entail", json={"image": example_b64, "hypothesis": "two shapes"})
    assert r.status_code == 422
    assert r.json()["error"].startswith("entail: this model does not run entail")
    listed = client.get("/v1/tasks").json()
    assert listed["caption"]["runs"] and not listed["entail"]["runs"]
    assert [f["name"] for f in listed["vqa"]["fields"]] == ["image", "question", "objects", "answers", "mode"]


def test_health_ready_and_metrics(client, example_png):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and "caption" in ready["tasks"]
    client.post("/v1/caption", files={"image": ("a.png", example_png, "image/png")})
    text = client.get("/metrics").text
    for name in ("openofa_requests_total", "openofa_request_seconds_bucket", "openofa_batch_size_bucket",
                 "openofa_queue_depth"):
        assert name in text
    assert 'openofa_requests_total{endpoint="/v1/caption",status="200"}' in text
    client.get("/no/such/path")
    assert 'endpoint="other",status="404"' in client.get("/metrics").text
