"""Recategorization without Ray: the clustering scores, NT-Xent and the views, the noise rule, the
cascade step, c-TF-IDF names, and the whole per-category method recovering planted sub-clusters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from prodcat.core.config import load_config
from prodcat.recategorize.clustering import NOISE, cascade_cluster, hdbscan_level
from prodcat.recategorize.config import ClusterSettings, RecategorizeConfig, SimCLRSettings, UMAPSettings
from prodcat.recategorize.naming import top_terms
from prodcat.recategorize.scores import cluster_scores, matched_accuracy, per_platform_scores, purity
from prodcat.recategorize.simclr import augment, make_inputs, nt_xent
from prodcat.recategorize.task import recategorize_category
from tests.fixtures.planted import planted_category

pytestmark = pytest.mark.unit

SMALL = ["simclr.epochs=30", "simclr.batch_size=64", "simclr.hidden_dim=64",
         "simclr.representation_dim=16", "simclr.projection_dim=16", "clustering.min_cluster_size=10"]


# ---------------------------------------------------------------------- scores
def test_purity_and_matched_accuracy_by_hand():
    clusters = [0, 0, 0, 1, 1, 2]
    labels = ["a", "a", "b", "b", "b", "b"]
    assert purity(clusters, labels) == pytest.approx(5 / 6)          # 2 + 2 + 1
    # one-to-one: cluster 0 → a (2), cluster 1 → b (2); cluster 2 has no label left
    assert matched_accuracy(clusters, labels) == pytest.approx(4 / 6)
    # splitting every product into its own cluster: purity 1, accuracy only 2 / 6
    assert purity(range(6), labels) == 1.0 and matched_accuracy(range(6), labels) == pytest.approx(2 / 6)


def test_cluster_scores_leave_noise_out_and_report_it():
    s = cluster_scores([0, 0, 1, 1, NOISE, NOISE], ["x", "x", "y", "y", "x", "y"])
    assert s["noise_share"] == pytest.approx(1 / 3) and s["assigned"] == 4
    assert s["clusters"] == 2 and s["labels"] == 2
    assert s["purity"] == s["accuracy"] == s["nmi"] == s["ari"] == 1.0
    empty = cluster_scores([NOISE, NOISE], ["x", "y"])
    assert empty["noise_share"] == 1.0 and np.isnan(empty["purity"])
    with pytest.raises(ValueError):
        cluster_scores([0, 1], ["x"])


def test_scores_are_per_platform_against_each_platforms_own_labels():
    # one cluster holds alpha's "Casual" and beta's "Sneakers": right for both
    clusters = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    labels = np.array(["Casual", "Casual", "Sneakers", "Sneakers", "Formal", "Formal", "Boots", "Boots"])
    platforms = np.array(["alpha", "alpha", "beta", "beta", "alpha", "alpha", "beta", "beta"])
    s = per_platform_scores(clusters, labels, platforms)
    assert s["alpha"]["purity"] == s["beta"]["purity"] == s["all"]["purity"] == 1.0
    assert s["all"]["labels"] == 2 and s["all"]["labels_total"] == 4 and s["all"]["clusters"] == 2
    pooled = cluster_scores(clusters, labels)  # pooling the labels would call it impure
    assert pooled["purity"] == 0.5
    nmi = normalized_mutual_info_score(labels[platforms == "alpha"], clusters[platforms == "alpha"])
    assert s["alpha"]["nmi"] == pytest.approx(nmi)


# ---------------------------------------------------------------------- SimCLR
def test_nt_xent_is_low_for_matching_views_and_high_for_shuffled_ones():
    torch.manual_seed(0)
    z = torch.randn(32, 8)
    matched = nt_xent(z, z + 0.01 * torch.randn(32, 8), 0.1)
    shuffled = nt_xent(z, z[torch.randperm(32)], 0.1)
    assert matched["loss"] < 0.5 < 2.0 < shuffled["loss"]
    assert matched["pair_accuracy"] == 1.0 and set(matched) >= {"nt_xent_loss", "loss"}


def test_views_drop_modalities_but_keep_one_and_never_invent_a_missing_one():
    features = {"text": np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32),
                "image": np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)}
    present = {"text": np.ones(64, bool), "image": np.arange(64) % 2 == 0}
    inputs = make_inputs(features, present)
    assert np.allclose(np.linalg.norm(inputs.x[:, :6], axis=1), 1.0)           # unit blocks
    assert np.all(inputs.x[1::2, 6:] == 0)                                       # missing stays zero
    settings = SimCLRSettings(modality_dropout=0.9, feature_dropout=0.0, noise_std=0.0)
    view = augment(torch.from_numpy(inputs.x), torch.from_numpy(inputs.present), inputs.slices,
                   settings, torch.Generator().manual_seed(0)).numpy()
    kept = np.stack([np.abs(view[:, :6]).sum(1) > 0, np.abs(view[:, 6:]).sum(1) > 0], axis=1)
    assert kept.any(axis=1).all()                  # every product keeps a modality
    assert not kept[1::2, 1].any()                 # a missing image is never made up
    assert (~kept).any()                           # and modalities do get dropped
    centred = make_inputs(features, present, groups=np.arange(64) % 4)
    assert centred.x.shape == inputs.x.shape and not np.allclose(centred.x, inputs.x)


# ---------------------------------------------------------------------- clustering
def _groups_of_subclusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two far-apart groups of three close sub-clusters (50 points each), 10-D."""
    rng = np.random.default_rng(seed)
    groups = rng.normal(size=(2, 10)) * 8
    centres = np.repeat(groups, 3, axis=0) + rng.normal(size=(6, 10)) * 0.8
    truth = np.repeat(np.arange(6), 50)
    return centres[truth] + rng.normal(size=(300, 10)) * 0.4, truth


def test_cascade_step_re_clusters_too_large_clusters_one_level_down():
    x, truth = _groups_of_subclusters()
    settings = ClusterSettings(min_cluster_size=15, max_share=0.25)
    reduction = UMAPSettings(metric="euclidean")
    result = cascade_cluster(x, x, settings, reduction)
    first = len(np.unique(result.first_level[result.first_level != NOISE]))
    final = len(np.unique(result.labels[result.labels != NOISE]))
    assert first < final == 6
    assert normalized_mutual_info_score(truth, result.labels) > 0.95
    assert normalized_mutual_info_score(truth, result.first_level) < 0.8
    assert all("too large" in s["reason"] for s in result.splits.values())
    assert set(result.parent.values()) <= set(np.unique(result.first_level).tolist())
    # without the cascade step, the level-1 clusters are the result
    flat = cascade_cluster(x, x, settings.model_copy(update={"cascade": False}), reduction)
    assert np.array_equal(flat.labels == NOISE, flat.first_level == NOISE) and not flat.splits


def test_far_outliers_stay_unassigned_unless_the_soft_threshold_lets_them_in():
    rng = np.random.default_rng(0)
    blobs = np.concatenate([rng.normal(size=(60, 2)) * 0.3, rng.normal(size=(60, 2)) * 0.3 + 6])
    outliers = np.array([[3.0, 30.0], [-25.0, 3.0], [30.0, -20.0]])
    points = np.concatenate([blobs, outliers])
    strict = hdbscan_level(points, ClusterSettings(min_cluster_size=10, soft_threshold=0.9))
    assert (strict.labels[-3:] == NOISE).all() and (strict.probability[-3:] == 0).all()
    lenient = hdbscan_level(points, ClusterSettings(min_cluster_size=10, soft_threshold=0.0))
    assert (lenient.labels != NOISE).all() and lenient.rescued.sum() >= 3


# ---------------------------------------------------------------------- names
def test_class_tfidf_names_come_from_the_distinguishing_words_not_brands():
    titles = ["Puma Men Black Sports Shoes", "Nike Men Running Sports Shoes", "Nike Sports Shoes",
              "Laura sneaker", "Mimmi sneaker low", "Nike sneaker", "Wilda boot flat", "Kobe chelsea boot",
              "Evers cap"]
    clusters = [0, 0, 0, 1, 1, 1, 2, 2, -1]
    brands = ["Puma", "Nike", "Nike", None, None, "Nike", None, None, None]
    terms = top_terms(titles, clusters, brands, n=2)
    assert set(terms) == {0, 1, 2}                  # the unassigned class gets no name
    assert "sports" in terms[0] and terms[1][0] == "sneaker" and terms[2][0] == "boot"
    assert not any("nike" in t or "puma" in t for ts in terms.values() for t in ts)


# ---------------------------------------------------------------------- the method
def test_planted_sub_clusters_are_recovered_with_every_variant_scored():
    data, truth = planted_category(per_subtype=40, subtypes=4)
    config = load_config(RecategorizeConfig, None, SMALL)
    result = recategorize_category(data, config)
    assert set(result.scores) == {"simclr+cascade", "simclr", "raw+cascade", "raw"}
    method = result.scores["simclr+cascade"]["all"]
    assert method["labels"] == 4 and 4 <= method["clusters"] <= 8        # both platforms: <= 2x
    assert method["purity"] >= 0.9 and method["nmi"] >= 0.8 and method["ari"] >= 0.7
    assert method["accuracy"] >= 0.8 and method["noise_share"] <= 0.2
    assert normalized_mutual_info_score(truth[result.labels != NOISE],
                                        result.labels[result.labels != NOISE]) >= 0.8
    # each proposal: a name from its titles' subtype word, examples from its own members
    named = sum(c.terms[0] in {"polo", "tee", "henley", "tank"} for c in result.clusters)
    assert named >= len(result.clusters) - 1
    for c in result.clusters:
        assert c.size == (result.labels == c.cluster).sum() and len(c.examples) == min(8, c.size)
        assert all(result.labels[i] == c.cluster for i in c.examples)
    assert result.coords.shape == (len(data), 2) and result.simclr["last_loss"] < result.simclr["first_loss"]
    # a broken representation (shuffled rows) must not pass the same bar
    rng = np.random.default_rng(0)
    broken, _ = planted_category(per_subtype=40, subtypes=4)
    broken.features = {f: v[rng.permutation(len(v))] for f, v in broken.features.items()}
    bad = recategorize_category(broken, config.model_copy(update={"ablations": False}))
    assert bad.scores["simclr+cascade"]["all"]["nmi"] < 0.3


# ---------------------------------------------------------------------- choosing categories
def test_categories_by_id_path_or_size_and_the_skipped_ones_said(tmp_path):
    from prodcat.recategorize.data import load_categories
    from tests.fixtures.planted import write_planted_catalogue

    cat = write_planted_catalogue(tmp_path, category_id=5, per_subtype=30, subtypes=3, others=30)
    base = [f"products={cat['products']}", f"embeddings={cat['embeddings']}"]
    every, _, skipped = load_categories(load_config(RecategorizeConfig, None, base + ["min_products=100"]))
    assert [d.category_id for d in every] == [5] and len(every[0]) == 180
    assert "fewer than min_products=100" in skipped[0]["reason"]
    data = every[0]
    assert set(data.features) == {"text", "image"} and data.features["text"].shape == (180, 32)
    assert (~data.present["image"]).sum() == 180 // 7                  # missing images stay missing
    assert data.finer_label[0].startswith("Tops > ") and data.not_embedded == 0
    capped, _, skipped = load_categories(load_config(RecategorizeConfig, None, base + [
        "categories=['Apparel > Shirts', 8]", "max_products_per_platform=50"]))
    assert [d.category_id for d in capped] == [5] and len(capped[0]) == 100 and capped[0].capped == 80
    assert skipped[0]["category_id"] == 8 and "embedded products (< 10)" in skipped[0]["reason"]
    with pytest.raises(KeyError):
        load_categories(load_config(RecategorizeConfig, None, base + ["categories=['Apparel > Nope']"]))
