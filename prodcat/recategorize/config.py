"""``RecategorizeConfig``: which categories, which features, and the three steps' settings.

One typed source of truth (no torch, no Ray on import): ``simclr`` (the contrastive projection
network), ``umap`` (the reduction), ``clustering`` (HDBSCAN, the cascade step, noise handling).
The defaults follow common practice: SimCLR (Chen et al., 2020: NT-Xent, temperature 0.1–0.5,
cluster the representation before the projection head) and BERTopic's UMAP settings (15
neighbours, 5 components, ``min_dist`` 0, cosine).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from prodcat.core.config import StrictModel

#: the variants a category is clustered with (the method and its ablations), as reports name them
VARIANTS = {"simclr+cascade": "SimCLR + cascade (the method)",
            "simclr": "SimCLR, no cascade step",
            "raw+cascade": "raw embeddings + cascade (no SimCLR)",
            "raw": "raw embeddings, no cascade step"}


#: the cluster label of a product no cluster took (HDBSCAN noise / below the soft threshold)
NOISE = -1

class SimCLRSettings(StrictModel):
    """The projection network trained contrastively on two augmented views of each product."""

    enabled: bool = Field(True, description="False: cluster the raw embeddings (the ablation)")
    hidden_dim: int = Field(512, ge=8, description="hidden width of the encoder MLP")
    representation_dim: int = Field(128, ge=2, description="h: the representation that is clustered")
    projection_dim: int = Field(64, ge=2, description="z: the projection head's output (NT-Xent runs on it)")
    temperature: float = Field(0.1, gt=0, le=10, description="NT-Xent temperature tau")
    epochs: int = Field(60, ge=1, description="passes over the category's products")
    batch_size: int = Field(256, ge=4, description="products per step (2x views)")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    feature_dropout: float = Field(0.2, ge=0, lt=1, description="probability each input dimension "
                                   "is zeroed in a view (inverted-dropout scaling)")
    noise_std: float = Field(0.5, ge=0, description="Gaussian noise per dimension, in units of the "
                             "block's RMS per dimension (1/sqrt(D_f) for a unit vector)")
    modality_dropout: float = Field(0.3, ge=0, le=1, description="probability a whole modality is "
                                    "zeroed in a view (a product always keeps one present modality)")
    seed: int = Field(0, description="seeds initialisation, batches and augmentations")
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads inside a category task")


class UMAPSettings(StrictModel):
    """umap-learn's reduction before clustering (and a 2-D one for the scatter plot)."""

    n_neighbors: int = Field(15, ge=2, description="local neighbourhood size")
    n_components: int = Field(5, ge=2, description="dimensions HDBSCAN clusters in")
    min_dist: float = Field(0.0, ge=0, description="0 packs clusters tightly (for clustering)")
    metric: str = Field("cosine", description="input metric (a umap-learn metric name)")
    seed: int = Field(0, description="random_state (makes UMAP single-threaded and repeatable)")


class ClusterSettings(StrictModel):
    """HDBSCAN, the cascade step, and what happens to noise points."""

    min_cluster_size: int = Field(15, ge=2, description="HDBSCAN min_cluster_size (products); a "
                                  "category of fewer than 10x as many products uses a tenth of "
                                  "its size (at least 5)")
    min_samples: int | None = Field(None, ge=1, description="HDBSCAN min_samples (None: = min_cluster_size)")
    selection: Literal["eom", "leaf"] = Field("eom", description="HDBSCAN cluster_selection_method")
    cascade: bool = Field(True, description="re-cluster too large or too spread clusters one level down")
    max_share: float = Field(0.6, gt=0, le=1, description="a cluster holding more than this share "
                             "of the category's products is too large")
    max_spread: float = Field(1.5, gt=0, description="a cluster whose mean cosine distance to its "
                              "centroid (in the representation) exceeds this multiple of the "
                              "median cluster's is too mixed")
    max_depth: int = Field(1, ge=1, le=3, description="levels of re-clustering below the first")
    soft_threshold: float = Field(0.1, ge=0, le=1, description="a noise point joins the cluster of "
                                  "its largest HDBSCAN soft-membership probability when it is at "
                                  "least this; otherwise it stays unassigned (1.0: never)")


class RecategorizeConfig(StrictModel):
    """``prodcat recategorize propose``: categories of a catalogue → proposed subcategories."""

    products: str = Field("runs/catalog/products.parquet", description="product table (Parquet)")
    taxonomy: str | None = Field(None, description="taxonomy.json; default: beside the product table")
    embeddings: str = Field("runs/embeddings", description="embedding store folder")
    output: str = Field("runs/recategorize", description="proposal folder (local path)")
    categories: list[int | str] = Field(
        default_factory=list, description="category ids or ' > ' paths; empty: every category with "
        "at least min_products embedded products")
    min_products: int = Field(200, ge=10, description="smallest category that is recategorized")
    max_products_per_platform: int | None = Field(
        None, ge=10, description="cap per (category, platform), chosen by a hash of product_id")
    features: list[str] = Field(default_factory=lambda: ["text", "image"],
                                description="embedding store features used (emb_<f> columns)")
    center_platforms: bool = Field(True, description="centre each feature on its platform's mean "
                                   "within the category (removes platform style; label-free)")
    simclr: SimCLRSettings = Field(default_factory=SimCLRSettings)
    umap: UMAPSettings = Field(default_factory=UMAPSettings)
    clustering: ClusterSettings = Field(default_factory=ClusterSettings)
    ablations: bool = Field(True, description="also cluster without SimCLR and without the cascade "
                            "step, and report the same metrics for each")
    num_cpus: float = Field(0.5, gt=0, description="CPUs per category task (Ray; fractions allowed)")
    examples: int = Field(8, ge=1, le=64, description="representative products shown per cluster")
    name_terms: int = Field(3, ge=1, le=10, description="c-TF-IDF terms in a suggested name")

    @model_validator(mode="after")
    def _check(self) -> "RecategorizeConfig":
        if not self.features:
            raise ValueError("features must name at least one embedding store feature, e.g. [text]")
        return self
