"""`refseg serve`'s HTTP API through FastAPI's test client, on tiny random-weight models: what a
run streams and writes equals what the methods give when driven directly, reruns after a
correction equal a run from scratch, and every rejection has its status and one-line message."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile

import numpy as np
import pytest
from conftest import random_sam2
from fastapi.testclient import TestClient
from PIL import Image
from test_evf import tiny_evf
from test_samwise import tiny_samwise

from refseg.engine import Session
from refseg.io import VideoWriter, frames
from refseg.io.rle import decode_rle
from refseg.prompts import Points
from refseg.serve import Methods, ServeConfig, create_app
from refseg.serve import runner as runner_module

DISK_CLICK = [30.0, 48.0, 1]  # on the disk of moving_shapes' first frame


@pytest.fixture(scope="module")
def models():
    return {"samwise": tiny_samwise(cme=False), "evf": tiny_evf(), "sam2": random_sam2(0)}


@pytest.fixture
def client(models, tmp_path):
    config = ServeConfig(jobs_dir=tmp_path / "jobs", max_upload_mb=1, max_frames=20, snapshot_every=2,
                         allow_paths=(tmp_path / "allowed",))
    (tmp_path / "allowed").mkdir()
    app = create_app(Methods.of(list(models.values())), config)
    with TestClient(app) as test_client:
        yield test_client


def upload(client: TestClient, path, name: str | None = None):
    return client.post("/api/jobs", files={"file": (name or path.name, path.read_bytes())})


def run_to_end(client: TestClient, job: str, **body) -> list[dict]:
    """Start a run and read its server-sent events until the end event."""
    response = client.post(f"/api/jobs/{job}/run", json=body)
    assert response.status_code == 202, response.text
    events = []
    with client.stream("GET", f"/api/jobs/{job}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["type"] == "end"
    return events


def job_masks(client: TestClient, job: str) -> dict[int, dict[int, np.ndarray]]:
    """object id -> frame -> mask, from the masks.zip download."""
    response = client.get(f"/api/jobs/{job}/download/masks.zip")
    assert response.status_code == 200, response.text
    out: dict[int, dict[int, np.ndarray]] = {}
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        for name in archive.namelist():
            _, obj, file = name.split("/")
            out.setdefault(int(obj), {})[int(file[:5])] = np.asarray(Image.open(archive.open(name))) > 0
    return out


def click_session_masks(sam, video, prompts: list[tuple[int, int, Points]]) -> dict[int, dict[int, np.ndarray]]:
    session = Session(sam)
    for obj, frame, prompt in prompts:
        session.add_prompt(obj, prompt, frame=frame)
    out: dict[int, dict[int, np.ndarray]] = {}
    for frame in frames(video):
        for obj, mask in session.push(frame).masks().items():
            out.setdefault(obj, {})[session.frame_index - 1] = mask
    return out


def test_upload_text_and_click_objects_stream_and_download_what_the_methods_give(client, models, video):
    job = upload(client, video).json()
    assert (job["frames"], job["width"], job["height"]) == (8, 128, 96)
    assert client.post(f"/api/jobs/{job['id']}/objects", json={"text": "the disk"}).status_code == 201
    clicked = client.post(f"/api/jobs/{job['id']}/objects", json={"points": [DISK_CLICK], "frame": 0}).json()
    assert clicked["id"] == 2
    events = run_to_end(client, job["id"])
    assert [e["index"] for e in events if e["type"] == "frame"] == list(range(8))
    assert events[-1]["state"] == "done" and events[-1]["message"] == "8 frames"
    assert [e["done"] for e in events if e["type"] == "frame"] == list(range(1, 9))

    got = job_masks(client, job["id"])
    stream = models["samwise"].stream(["the disk"])
    decoded = list(frames(video))
    expected_text = [r for f in decoded for r in stream.push(f)] + stream.flush()
    expected_click = click_session_masks(models["sam2"], video, [(2, 0, Points([DISK_CLICK[:2]]))])
    for t in range(8):
        assert np.array_equal(got[1][t], expected_text[t].objects[1].mask)
        assert np.array_equal(got[2][t], expected_click[2][t])
    document = json.loads(client.get(f"/api/jobs/{job['id']}/download/masks.json").content)
    assert document["objects"] == {"1": "the disk", "2": "object 2"}
    assert np.array_equal(decode_rle(document["frames"][3]["masks"]["2"]), got[2][3])
    overlay_video = client.get(f"/api/jobs/{job['id']}/download/overlay.mp4")
    assert overlay_video.status_code == 200 and overlay_video.headers["content-type"] == "video/mp4"
    frame = np.asarray(Image.open(io.BytesIO(client.get(f"/api/jobs/{job['id']}/frames/0").content)))
    shown = np.asarray(Image.open(io.BytesIO(client.get(f"/api/jobs/{job['id']}/overlays/0").content)))
    assert frame.shape == shown.shape == (96, 128, 3)
    inside = got[2][0]
    assert np.abs(shown[inside].astype(int) - frame[inside]).mean() > 20  # the mask is drawn over the object


def test_a_correction_click_reruns_from_a_snapshot_and_equals_a_run_from_scratch(client, models, video):
    job = upload(client, video).json()["id"]
    client.post(f"/api/jobs/{job}/objects", json={"points": [DISK_CLICK], "frame": 0})
    run_to_end(client, job)
    before = job_masks(client, job)
    response = client.post(f"/api/jobs/{job}/objects/1/prompts", json={"frame": 5, "points": [[60, 30, 0], [32, 50, 1]]})
    assert response.status_code == 200
    started = client.post(f"/api/jobs/{job}/run", json={}).json()
    assert started["from"] == 4  # snapshots every 2 frames: the last one before frame 5
    with client.stream("GET", f"/api/jobs/{job}/events") as stream:
        indices = [json.loads(line[6:]).get("index") for line in stream.iter_lines() if line.startswith("data: ")]
    assert [i for i in indices if i is not None] == [4, 5, 6, 7]
    after = job_masks(client, job)
    scratch = click_session_masks(models["sam2"], video, [(1, 0, Points([DISK_CLICK[:2]])),
                                                          (1, 5, Points([[60, 30], [32, 50]], [0, 1]))])
    for t in range(8):
        assert np.array_equal(after[1][t], scratch[1][t])
    assert all(np.array_equal(after[1][t], before[1][t]) for t in range(5))
    assert not all(np.array_equal(after[1][t], before[1][t]) for t in range(5, 8))  # the correction changed them
    again = run_to_end(client, job)  # nothing changed: nothing reruns
    assert [e["type"] for e in again] == ["start", "end"] and again[-1]["message"] == "nothing changed since the last run"
    assert client.get(f"/api/jobs/{job}/download/masks.zip").status_code == 200


def hold_at_frame_3(monkeypatch) -> tuple[threading.Event, object]:
    """Make click runs wait at frame 3 until the returned event is set; also returns the real push."""
    gate = threading.Event()
    original = runner_module._SessionStream.push

    def slow_push(self, frame):
        if self.session.frame_index == 3:
            gate.wait(10)
        return original(self, frame)

    monkeypatch.setattr(runner_module._SessionStream, "push", slow_push)
    return gate, original


def test_a_stopped_run_continues_to_the_masks_of_an_uninterrupted_one(client, models, video, monkeypatch):
    job = upload(client, video).json()["id"]
    client.post(f"/api/jobs/{job}/objects", json={"points": [DISK_CLICK], "frame": 0})
    gate, original = hold_at_frame_3(monkeypatch)
    assert client.post(f"/api/jobs/{job}/run", json={}).status_code == 202
    time.sleep(0.3)
    assert client.post(f"/api/jobs/{job}/run", json={}).status_code == 409  # running
    assert client.post(f"/api/jobs/{job}/objects", json={"text": "x"}).status_code == 409
    client.post(f"/api/jobs/{job}/stop")
    gate.set()
    with client.stream("GET", f"/api/jobs/{job}/events") as stream:
        events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]
    assert events[-1]["state"] == "stopped"
    assert client.get(f"/api/jobs/{job}/download/masks.zip").status_code == 409  # incomplete
    monkeypatch.setattr(runner_module._SessionStream, "push", original)
    resumed = run_to_end(client, job)
    first = [e["index"] for e in resumed if e["type"] == "frame"][0]
    assert 0 < first <= 3
    scratch = click_session_masks(models["sam2"], video, [(1, 0, Points([DISK_CLICK[:2]]))])
    got = job_masks(client, job)
    assert all(np.array_equal(got[1][t], scratch[1][t]) for t in range(8))


def test_a_job_deleted_while_it_runs_loses_its_folder_when_the_run_ends(client, video, monkeypatch):
    job = upload(client, video).json()["id"]
    client.post(f"/api/jobs/{job}/objects", json={"points": [DISK_CLICK], "frame": 0})
    record = client.app.state.store.jobs[job]
    gate, _ = hold_at_frame_3(monkeypatch)
    assert client.post(f"/api/jobs/{job}/run", json={}).status_code == 202
    time.sleep(0.3)
    assert record.running and record.folder.is_dir()
    assert client.delete(f"/api/jobs/{job}").json() == {"removed": job}
    assert client.get(f"/api/jobs/{job}").status_code == 404
    assert record.folder.is_dir()  # the run still writes there
    gate.set()
    deadline = time.time() + 30
    while (record.running or record.folder.exists()) and time.time() < deadline:
        time.sleep(0.05)
    assert record.state == "stopped" and not record.folder.exists()


def test_evf_sam_takes_a_text_and_a_correction_click_on_one_object(client, models, video):
    job = upload(client, video).json()["id"]
    client.post(f"/api/jobs/{job}/objects", json={"text": "the red disk", "frame": 2})
    assert client.post(f"/api/jobs/{job}/objects/1/prompts", json={"frame": 2, "points": [[40, 40, 1]]}).status_code == 200
    response = client.post(f"/api/jobs/{job}/run", json={"text_method": "samwise"})
    assert response.status_code == 400 and "samwise reads its text alone" in response.json()["detail"]
    run_to_end(client, job, text_method="evf-sam")
    got = job_masks(client, job)
    stream = models["evf"].stream(["the red disk"], frame=2)
    stream.add_prompt(1, Points([[40, 40]]))
    expected = [r for f in frames(video) for r in stream.push(f)]
    assert sorted(got[1]) == list(range(2, 8))  # tracked from the text's frame on, as `refseg segment --frame 2`
    for t in range(2, 8):
        assert np.array_equal(got[1][t], expected[t].objects[1].mask)


def detail(response) -> str:
    body = response.json()
    assert isinstance(body["detail"], str) and "\n" not in body["detail"]
    return body["detail"]


def test_every_rejection_has_its_status_and_one_line(client, video, tmp_path):
    assert upload(client, video, "clip.gif").status_code == 415
    assert "unsupported file type .gif" in detail(upload(client, video, "clip.gif"))
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (1 << 20 | 1))
    response = upload(client, big)
    assert response.status_code == 413 and "larger than 1 MB" in detail(response)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    response = upload(client, corrupt)
    assert response.status_code == 400 and "corrupt.mp4" in detail(response)
    long_video = tmp_path / "long.mp4"
    with VideoWriter(long_video, fps=10) as writer:
        for _ in range(21):
            writer.write(np.zeros((32, 32, 3), np.uint8))
    response = upload(client, long_video)
    assert response.status_code == 413 and "longer than 20 frames" in detail(response)
    assert list((tmp_path / "jobs").iterdir()) == []  # rejected uploads leave nothing

    job = upload(client, video).json()["id"]
    cases = [
        (client.post(f"/api/jobs/{job}/objects", json={"text": "   "}), 400, "the text is empty"),
        (client.post(f"/api/jobs/{job}/objects", json={}), 400, "needs a text, clicks or a box"),
        (client.post(f"/api/jobs/{job}/objects", json={"points": [[500, 10, 1]]}), 400, "outside the 128x96 frame"),
        (client.post(f"/api/jobs/{job}/objects", json={"points": [[5, 10, 1]], "frame": 8}), 400, "frames 0..7"),
        (client.post(f"/api/jobs/{job}/objects", json={"box": [50, 10, 20, 30]}), 400, "x0 < x1"),
        (client.post(f"/api/jobs/{job}/objects/9/prompts", json={"frame": 0, "points": [[5, 5, 1]]}), 404, "object 9"),
        (client.post(f"/api/jobs/{job}/run", json={}), 400, "add an object"),
        (client.get(f"/api/jobs/{job}/frames/8"), 404, "frames 0..7"),
        (client.get(f"/api/jobs/{job}/overlays/0"), 404, "no masks yet"),
        (client.get(f"/api/jobs/{job}/download/masks.zip"), 409, "not ready"),
        (client.get(f"/api/jobs/{job}/download/input.mp4"), 404, "no such download"),
        (client.get("/api/jobs/0123456789abcdef0123456789abcdef"), 404, "no such job"),
    ]
    for response, status, words in cases:
        assert response.status_code == status, (words, response.text)
        assert words in detail(response)
    client.post(f"/api/jobs/{job}/objects", json={"points": [DISK_CLICK]})
    response = client.post(f"/api/jobs/{job}/run", json={"click_method": "sam-i2v"})
    assert response.status_code == 400 and "click method 'sam-i2v': not loaded" in detail(response)


def test_nothing_outside_a_job_folder_can_be_read(client, video, tmp_path):
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(video.read_bytes())
    job = upload(client, video).json()["id"]
    for url in [f"/api/jobs/{job}/download/..%2F..%2Fsecret.mp4", f"/api/jobs/..%2F{job}",
                "/api/jobs/..%2F..%2Fsecret.mp4/frames/0", f"/api/jobs/{job}/download/%2e%2e%2finput.mp4",
                "/static/..%2F..%2F..%2Fpyproject.toml", "/static/../app.py", f"/api/jobs/{job}/frames/-1"]:
        response = client.get(url)
        assert response.status_code in (404, 422), url
        assert response.content != secret.read_bytes()
    outside = [str(secret), str(tmp_path / "allowed" / ".." / "secret.mp4"), "/etc/passwd"]
    for path in outside:
        response = client.post("/api/jobs/from-path", json={"path": path})
        assert response.status_code == 403 and "outside the folders" in detail(response)
    (tmp_path / "allowed" / "link.mp4").symlink_to(secret)
    assert client.post("/api/jobs/from-path", json={"path": str(tmp_path / "allowed" / "link.mp4")}).status_code == 403
    (tmp_path / "allowed" / "clip.mp4").write_bytes(video.read_bytes())
    opened = client.post("/api/jobs/from-path", json={"path": str(tmp_path / "allowed" / "clip.mp4")})
    assert opened.status_code == 201 and opened.json()["frames"] == 8


def test_a_failing_run_leaves_the_server_serving_and_old_jobs_expire(client, video, monkeypatch):
    job = upload(client, video).json()["id"]
    client.post(f"/api/jobs/{job}/objects", json={"points": [DISK_CLICK]})

    def broken(self, frame):
        raise RuntimeError("out of memory\nsomewhere")

    monkeypatch.setattr(runner_module._SessionStream, "push", broken)
    events = run_to_end(client, job)
    assert events[-1]["state"] == "failed" and events[-1]["message"] == "RuntimeError: out of memory somewhere"
    assert client.get(f"/api/jobs/{job}").json()["state"] == "failed"
    monkeypatch.undo()
    assert run_to_end(client, job)[-1]["state"] == "done"  # the same job runs again
    store = client.app.state.store
    folder = store.jobs[job].folder
    assert store.expire(now=time.monotonic() + store.ttl + 1) == [job]
    assert not folder.exists() and client.get(f"/api/jobs/{job}").status_code == 404


def test_the_page_and_the_api_description_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="view"' in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/api/jobs", "/api/jobs/{job_id}/run", "/api/jobs/{job_id}/events",
            "/api/jobs/{job_id}/download/{name}"} <= set(schema["paths"])
    methods = client.get("/api/config").json()["methods"]
    assert [(m["name"], m["kind"]) for m in methods] == [("samwise", "text"), ("evf-sam", "text"), ("sam2", "click")]


@pytest.mark.parametrize("args, words", [
    (["--allow-paths", "/no/such/dir"], "--allow-paths /no/such/dir: no such folder"),
    (["--port", "0"], "--port 0: give a port between 1 and 65535"),
    (["--model", "./no/such/model"], "--model ./no/such/model: no such model folder or file"),
    (["--sam2", "/no/such/sam2.pt"], "--sam2 /no/such/sam2.pt: no such SAM 2 model folder or .pt file"),
])
def test_serve_refuses_bad_arguments_in_one_line_before_loading(args, words, capsys):
    from refseg.cli import main

    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"refseg: error: {words}"]


def test_sam_i2v_as_the_click_method_reruns_a_correction_as_a_run_from_scratch(video, tmp_path):
    """SAM-I2V's sessions carry a window of past frames: a snapshot must carry it too."""
    from refseg.methods.sam_i2v import SamI2VConfig, upgrade

    model = upgrade(random_sam2(0), SamI2VConfig(tapped_dims=(64, 128, 256), temporal_dim=16), memory_layers=1).eval()
    app = create_app(Methods.of([model]), ServeConfig(jobs_dir=tmp_path / "jobs", snapshot_every=3))
    with TestClient(app) as client:
        job = upload(client, video).json()["id"]
        client.post(f"/api/jobs/{job}/objects", json={"points": [DISK_CLICK], "frame": 0})
        run_to_end(client, job, click_method="sam-i2v")
        client.post(f"/api/jobs/{job}/objects/1/prompts", json={"frame": 7, "points": [[70, 40, 0]]})
        assert client.post(f"/api/jobs/{job}/run", json={}).json()["from"] == 6
        with client.stream("GET", f"/api/jobs/{job}/events") as stream:
            assert any('"end"' in line for line in stream.iter_lines())
        got = job_masks(client, job)
    session = model.session()
    session.add_prompt(1, Points([DISK_CLICK[:2]]), frame=0)
    session.add_prompt(1, Points([[70, 40]], [0]), frame=7)
    for t, frame in enumerate(frames(video)):
        assert np.array_equal(got[1][t], session.push(frame).objects[1].mask), t
