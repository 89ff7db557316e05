"""`prodcat onboard measure` on a slice of the real catalogues: the fold's model (the default,
which self-trains on a new platform) is adapted to the held-out platform's products before it is
measured, as a leave-one-platform-out fold of the evaluation is; `adapt: false` measures it as
trained. Both are reported, and the adapted checkpoint is what suggested the mappings."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real_slice(tmp_path_factory, shared):
    from tests.fixtures.catalog import real_catalogue, real_store

    root = tmp_path_factory.mktemp("measure")
    products = real_catalogue(root, records=150)
    return products, real_store(products, str(root / "embeddings"))


def _measure(products: str, store: str, output, adapt: bool) -> dict:
    from prodcat.onboard.config import MeasureConfig
    from prodcat.onboard.measure import measure

    config = MeasureConfig(
        products=products, embeddings=store, output=str(output), platforms=["myntra"], adapt=adapt,
        max_per_category=5, page=False,
        train_overrides=["model.decision.parallel=false", "model.decision.lexical_grid=[]",
                         "lexical.min_df=1", "model.decision.self_train={threshold: 0.3}",
                         "scaling.num_workers=0", "scaling.torch_threads=1"])
    return measure(config, log=lambda _m: None)


def test_measure_adapts_the_fold_model_to_the_held_out_platform(ray_session, real_slice, tmp_path):
    from prodcat.models.checkpoint import load_checkpoint

    products, store = real_slice
    out = _measure(products, store, tmp_path / "adapted", adapt=True)
    fold = out["folds"]["myntra"]
    adapted = fold["adapted"]
    assert adapted is not None and adapted["self_trained_on"] > 0
    assert adapted["products_used"] == json.loads(
        (tmp_path / "adapted/lopo_myntra/adapted/adapt.json").read_text())["products_used"]
    model = load_checkpoint(str(tmp_path / "adapted/lopo_myntra/adapted"))
    assert model.self_trained is not None and model.self_trained.settings["fitted_on"] == adapted["self_trained_on"]
    assert load_checkpoint(str(tmp_path / "adapted/lopo_myntra/model")).self_trained is None   # as trained
    assert fold["suggest"]["model"].rstrip("/").endswith("lopo_myntra/adapted")   # what suggested
    assert "adapted to the platform's" in (tmp_path / "adapted/report.md").read_text()

    plain = _measure(products, store, tmp_path / "plain", adapt=False)
    assert plain["folds"]["myntra"]["adapted"] is None
    assert not (tmp_path / "plain/lopo_myntra/adapted").exists()
    assert "measured as trained (not adapted)" in (tmp_path / "plain/report.md").read_text()
