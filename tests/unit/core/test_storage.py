"""How artifacts name what they need: references relative to their own folder, local or s3://;
and metric recording outside Ray (a no-op)."""

import pytest

from prodcat.cascade.spec import CascadeSpec, read_cascade, write_cascade
from prodcat.core import storage, telemetry

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("base, ref, expected", [
    ("s3://b/runs/cascade", "text_model", "s3://b/runs/cascade/text_model"),
    ("s3://b/runs/cascade/text_model", "../encoders/x", "s3://b/runs/cascade/encoders/x"),
    ("s3://b/runs/cascade", "s3://other/model", "s3://other/model"),
    ("/data/cascade", "/abs/model", "/abs/model"),
    ("/data/cascade/text_model", "../encoders/x", "/data/cascade/encoders/x"),
])
def test_resolve_ref(base, ref, expected):
    assert storage.resolve_ref(base, ref) == expected


def test_relative_ref_is_the_inverse_inside_the_folder(tmp_path):
    assert storage.relative_ref("s3://b/c", "s3://b/c/text_model") == "text_model"
    assert storage.relative_ref("s3://b/c", "s3://b/other") is None
    assert storage.relative_ref(str(tmp_path), str(tmp_path / "a" / "b")) == "a/b"
    assert storage.relative_ref(str(tmp_path / "a"), str(tmp_path / "b")) is None
    assert storage.relative_ref(str(tmp_path), "s3://b/c") is None
    assert storage.parent("s3://b/c/cascade.json") == "s3://b/c"


def test_write_cascade_names_inner_checkpoints_relatively_and_outer_ones_absolutely(tmp_path):
    (tmp_path / "c" / "text_model").mkdir(parents=True)
    spec = CascadeSpec(str(tmp_path / "c" / "text_model"), str(tmp_path / "elsewhere" / "mm"), 0.4)
    write_cascade(spec, str(tmp_path / "c"))
    text = (tmp_path / "c" / "cascade.json").read_text()
    assert '"text_model": "text_model"' in text and f'"multimodal_model": "{tmp_path}/elsewhere/mm"' in text
    again = read_cascade(str(tmp_path / "c"))
    assert again.text_model == spec.text_model and again.multimodal_model == spec.multimodal_model


def test_recording_metrics_outside_ray_is_a_no_op(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)   # other tests may have started Ray
    monkeypatch.setattr(telemetry, "_made", {})
    telemetry.inc("prodcat_serve_requests", status=200, mode="cascade")
    telemetry.set_gauge("prodcat_score_progress", 0.5, run="x")
    telemetry.observe("prodcat_serve_latency_ms", 12.0, stage="text")
    assert not telemetry._made


def test_bundling_copies_the_inference_files_with_the_lexical_model_and_leaves_training_state(tmp_path):
    """A checkpoint that reads the lexical feature needs its lexical model beside the weights;
    the optimizer and training state stay behind."""
    from prodcat.cascade.bundle import bundle_checkpoints

    names = ["config.json", "taxonomy.json", "model.safetensors", "metrics.json", "calibration.json",
             "lexical.json", "lexical.safetensors", "optimizer.safetensors", "train_state.json"]
    for stage in ("text", "mm"):
        for name in names:
            (tmp_path / stage / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / stage / name).write_text(f"{stage}/{name}")
    spec = CascadeSpec(str(tmp_path / "text"), str(tmp_path / "mm"), 0.4)
    moved = bundle_checkpoints(spec, str(tmp_path / "bundle"))
    for stage, folder in (("text", moved.text_model), ("mm", moved.multimodal_model)):
        copied = sorted(p.name for p in (tmp_path / "bundle" / folder.rsplit("/", 1)[-1]).iterdir())
        assert copied == sorted(names[:7])
        assert (tmp_path / "bundle" / folder.rsplit("/", 1)[-1] / "lexical.json").read_text() == f"{stage}/lexical.json"
