"""Stage 7, recategorization: the finer categories a taxonomy lacks, found in the data.

For a category (or several, as Ray tasks side by side) of a catalogue with an embedding store:
``simclr.py`` trains a projection network contrastively (NT-Xent) on two augmented views of each
product's stored embeddings, ``reduce.py`` reduces its representation with UMAP, ``clustering.py``
clusters with HDBSCAN and re-clusters too large or too mixed clusters one level down (noise kept
apart unless its soft membership is high enough), ``scores.py`` measures the clusters against each
platform's own finer labels (purity, NMI, ARI, Hungarian accuracy), ``naming.py`` suggests names
by class-based TF-IDF, ``task.py`` runs one category with its ablations, ``propose.py`` is the
driver (``prodcat recategorize propose``: report, PNGs, the review file ``accept.yaml``),
``extension.py`` turns the accepted subcategories into a new taxonomy version and a relabelled
product table (``prodcat recategorize apply``) that :mod:`prodcat.train` trains on.

Reads the product table (catalog) and the embedding store (embed); uses ``prodcat.train`` only
for its feature join. Imported by nothing but :mod:`prodcat.pipeline` and :mod:`prodcat.cli`.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "config": ["RecategorizeConfig", "SimCLRSettings", "UMAPSettings", "ClusterSettings"],
        "propose": ["propose"],
        "task": ["recategorize_category", "CategoryResult"],
        "scores": ["cluster_scores", "per_platform_scores", "purity", "matched_accuracy"],
        "extension": ["AcceptFile", "ApplyConfig", "apply_extension", "map_predictions"],
        "data": ["CategoryData", "load_categories"],
    },
)
