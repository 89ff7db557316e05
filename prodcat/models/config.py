"""``ModelConfig``: fusion, masking and head hyper-parameters of the hierarchical classifier.

The field defaults are what a preset leaves unset; the default model is the preset ``default``
(``prodcat/models/presets/default.yaml``, :mod:`prodcat.models.preset`), which configs name as
``model: {preset: default}`` and :class:`prodcat.train.config.TrainConfig` starts from.
A Tune search space overrides these fields by name (``model.fusion``, ``model.masking``, ...).
Fusion and masking names are checked against their registries (``prodcat.models.registry``:
``fusions``, ``masking_modes``; no torch is imported); an unknown name lists the valid ones.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from prodcat.core.config import StrictModel
from prodcat.models.registry import fusions, masking_modes

#: ``fusion`` of a decision-level fusion model (:mod:`prodcat.models.decision`): not a torch
#: module, so not in the ``fusions`` registry of feature-level fusion modules
DECISION = "decision"


class SelfTrainSettings(StrictModel):
    """Self-training on a target platform's own products when a decision-level model is adapted
    to it (:meth:`prodcat.models.decision.DecisionModel.adapt`): pseudo-labels from the model's
    own combination, a logistic regression on them (``self_trained`` component), added to the
    combination with ``weight``. Stop 40's candidate (chosen on validation only; docs/evaluation.md)."""

    scope: Literal["new_platforms", "always"] = Field(
        "new_platforms", description="which products it self-trains on: new_platforms, those of "
        "platforms the model was not trained on (none: nothing is added; stop 41's design, since "
        "in-platform it cost 0.0-0.3 hF points, docs/evaluation.md); always, every product adapted to "
        "(stop 40's option)")
    keep: Literal["confidence", "agree", "balanced"] = Field(
        "confidence", description="which pseudo-labels fit the regression: confidence, where the "
        "combination's top probability is at least `threshold`; agree, where the text and lexical "
        "components alone choose the same leaf as the combination; balanced, in each leaf the "
        "combination chooses, the `share` of its products it is surest of (class-balanced "
        "self-training, Zou et al. 2018), so frequent leaves do not crowd out rare ones")
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="keep: confidence: the least top "
                             "probability in [0, 1] of a kept product")
    share: float = Field(0.5, gt=0.0, le=1.0, description="keep: balanced: the share in (0, 1] of "
                         "each chosen leaf's products kept (at least one per leaf)")
    rounds: int = Field(1, ge=1, le=10, description="how many times the pseudo-labels are drawn: "
                        "round k > 1 relabels with the combination that includes round k - 1's "
                        "regression and refits it (iterated self-training)")
    features: list[str] | None = Field(None, min_length=1, description="embeddings the "
                                       "regression reads side by side (each L2-normalised; an absent "
                                       "one is zeros); each must be an input of the model; null: one "
                                       "text and one image embedding the model reads (`text`/`image`, "
                                       "else the first named `*_text`/`*_image`, e.g. hr_image; stop "
                                       "40's candidate), or where it reads neither, every embedding it reads")
    weight: float = Field(1.0, gt=0.0, description="weight of its log-probabilities in the combination")
    gate: Literal["none", "centroid"] = Field(
        "none", description="which products may be pseudo-labelled: none, every product of the "
        "new platform; centroid, only those that look like the label space: the largest cosine "
        "between the product's `gate_feature` embedding and a leaf's mean training embedding is at "
        "least its `gate_quantile` quantile over the training platforms' in-platform held-out "
        "products (out-of-distribution detection; a new catalogue holds categories the model "
        "never saw, and a product of one that the combination is sure of teaches the regression a "
        "wrong leaf; stop 45, benchmarks/open_set.py)")
    gate_feature: str = Field("text", description="gate: centroid: the embedding it compares")
    gate_quantile: float = Field(0.05, gt=0.0, lt=1.0, description="gate: centroid: the share in "
                                 "(0, 1) of in-space held-out products of the training platforms "
                                 "that the threshold rejects")
    smoothing: float = Field(0.05, ge=0.0, lt=1.0, description="share of its probability spread "
                             "uniformly over the leaves, so a leaf no kept product has is not ruled out")
    C: float = Field(1.0, gt=0.0, description="inverse L2 strength of the regression")
    max_iter: int = Field(300, ge=10, description="lbfgs iterations of the regression")
    views: Literal["joint", "cross"] = Field(
        "joint", description="joint: one regression on every self-training feature side by side, "
        "labelled by the whole combination; cross: co-training (Blum & Mitchell 1998; across "
        "domains, Chen, Weinberger & Blitzer 2011), one regression per input modality of the "
        "features (text; image), each labelled by the combination of the components that read "
        "the *other* modalities, where that combination is sure (`keep`), each added with "
        "`weight` (stop 51's candidate: a mistake the text components share is not taught back to "
        "the text, and the image can teach the text a new platform's vocabulary)")

    @model_validator(mode="after")
    def _cross_views(self) -> "SelfTrainSettings":
        if self.views == "cross" and self.rounds != 1:
            raise ValueError("self_train.views: cross draws its pseudo-labels once; set rounds: 1")
        if self.views == "cross" and self.keep == "agree":
            raise ValueError("self_train.views: cross labels each view by the other modalities' "
                             "components; keep: agree asks the text components, choose confidence "
                             "or balanced")
        return self


class DecisionSettings(StrictModel):
    """Decision-level fusion (``fusion: decision``): which components, how they are fitted and
    how their weights are chosen (:mod:`prodcat.train.decision`). Components follow the model's
    ``modalities`` (``lexical``: the TF-IDF + linear scores; any other: a logistic regression on
    that embedding) plus ``label`` when ``label_prior`` is not ``none``."""

    structure: Literal["flat", "per_level"] = Field(
        "flat", description="logistic-regression components: one softmax over the leaves (flat) "
        "or one per level masked to each parent's children (per-level heads)")
    linear_C: list[float] = Field([10.0], min_length=1, description="inverse L2 strength of the "
                                  "logistic regressions; several: chosen on held-out products")
    lexical_grid: list[dict] = Field(
        default_factory=list, description="TF-IDF + linear settings to choose from on held-out "
        "products (each a set of LexicalConfig overrides of `lexical`); empty: `lexical` as it is")
    combiner: Literal["weights", "equal"] = Field(
        "weights", description="weights: the candidates are equal weights, weights fitted on "
        "held-out products (log-likelihood) and each component alone, kept by `choice`; equal: "
        "all 1, nothing fitted")
    equal_weights: Literal["per_component", "per_modality"] = Field(
        "per_component", description="what the equal-weights candidate weighs equally: "
        "per_component, every component 1; per_modality, every input modality 1, shared among the "
        "components that read it (TF-IDF, the text regression and the label names all read the "
        "product's text: 1/3 each; the image regression 1). The product rule assumes conditionally "
        "independent experts (Kittler et al. 1998), and components that read the same input are "
        "not; prodcat.models.decision.input_modality")
    choice: Literal["paired", "max"] = Field(
        "paired", description="how the combination is chosen among the candidates (fitted weights, "
        "each component alone; combiner: weights): paired: equal weights unless a candidate beats "
        "them on the held-out products by a real difference (paired bootstrap over near-duplicate "
        "groups, 95 %, prodcat.core.uncertainty), then the best of those; max: the highest held-out "
        "hF, however small the margin")
    crossfit: bool = Field(
        True, description="score the fitted weights out of sample before the choice (either rule): each "
        "held-out set by weights fitted on the other held-out sets (cross-fitting); the final "
        "weights are then fitted on all of them. With one held-out set (one training platform) "
        "fitted weights cannot be tested out of sample and the paired rule does not keep them. "
        "false: tested in sample (stop 25's rule)")
    decodings: list[Literal["greedy", "best_path", "expected_hf"]] = Field(
        ["greedy", "best_path", "expected_hf"], min_length=1, description="valid-path decodings to "
        "choose from on held-out products: greedy (the child with the most subtree probability, "
        "level by level), best_path (the most probable leaf), expected_hf (the leaf with the highest "
        "expected hF under the combined probabilities; prodcat.models.decision)")
    priors: list[Literal["none", "once", "uniform", "adapt", "fitted"]] = Field(
        ["none"], min_length=1, description="how the combination counts the training label prior, "
        "chosen on held-out products like the decoding: none (once per logistic-regression "
        "component), once (as one component: the product of experts), uniform (not at all: a new "
        "shop's label distribution is unknown), adapt (the target platform's label distribution, "
        "estimated by EM from its unlabelled products: each held-out set from itself, a test fold "
        "from its test products, a deployment by `prodcat onboard adapt`), fitted (the share of the prior "
        "removed, between none and uniform, fitted by held-out log-likelihood as the temperatures "
        "are); prodcat.models.decision.Combiner")
    prior_base: Literal["none", "once", "uniform"] | None = Field(
        None, description="with choice: paired, the prior correction of `priors` kept unless an "
        "equal-weights candidate with another correction beats it on the held-out products by a real "
        "difference (as equal weights are kept against fitted ones); null: the correction with the "
        "highest mean held-out hF, like the decoding (stop 58)")
    agreement: Literal["pooled", "every_set"] = Field(
        "pooled", description="with choice: paired, what a candidate must show to replace the base "
        "(equal weights; with prior_base, with that correction): pooled, a real difference on the "
        "held-out products pooled over every held-out set; every_set, the base is left only if a "
        "candidate with that difference is a component alone or has an hF not below the base's on "
        "each held-out set by itself (no training platform's set, nor the validation split, argues "
        "against it), and then the choice is the pooled rule's: always the pooled rule's or the base "
        "(stop 62)")
    heldout: list[Literal["cross_platform", "in_platform"]] = Field(
        ["cross_platform", "in_platform"], min_length=1, description="what choices are made on: "
        "cross_platform: each training platform predicted by components fitted on the others "
        "(leave-one-platform-out inside the training platforms); in_platform: the validation "
        "split predicted by components fitted on the training split")
    heldout_per_platform: int = Field(2000, ge=10, description="at most this many held-out "
                                      "products per platform and held-out set (seeded)")
    max_iter: int = Field(100, ge=10, description="lbfgs iterations of the logistic regressions")
    parallel: bool = Field(True, description="fit the cross-platform held-out sets' components in "
                           "parallel Ray tasks (1 CPU each) when Ray is running")
    reweight: Literal["none", "dawid_skene"] = Field(
        "none", description="when the model is adapted to a platform it was not trained on: "
        "none, the weights stay as chosen; dawid_skene, each weighted component's accuracy on that "
        "platform's unlabelled products is estimated from how its top leaves agree with the others' "
        "(the one-coin Dawid-Skene model, by EM) and its weight scaled by its log-odds "
        "log(a (C - 1) / (1 - a)) relative to the weighted mean (the optimal weighted vote of "
        "independent voters, Nitzan and Paroush 1982), so the weights' sum is kept; before "
        "self-training, which then draws its pseudo-labels from the reweighted combination; "
        "prodcat.models.decision.dawid_skene")
    self_train: SelfTrainSettings | None = Field(
        None, description="self-train on a target platform's own products when the model is "
        "adapted to it (prodcat onboard adapt; prodcat evaluate adapts to each fold's test "
        "products, reading their inputs, never their labels); null: off")


class ModelConfig(StrictModel):
    """Hyper-parameters of :class:`prodcat.models.HierarchicalClassifier`."""

    fusion: str = Field(
        "late", description="decision (decision-level fusion of calibrated per-modality "
        "classifiers) or a feature-level fusion module: early | late | attention | average | "
        "concat | linear")
    late_policy: Literal["mlp", "mean", "max"] = Field(
        "mlp", description="how late fusion combines per-modality logits (ignored by other fusions)")
    modalities: list[str] = Field(
        default_factory=lambda: ["text", "image"],
        description="feature names fed to the model (embedding store columns emb_<name>)")
    hidden_dim: int = Field(256, gt=0, description="H: width of projections, fusion MLPs and heads")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout probability in [0, 1)")
    num_attention_heads: int = Field(
        4, gt=0, description="heads of the attention fusion; must divide hidden_dim")
    masking: str = Field("hard", description="dynamic masking mode: none | hard | soft")
    decoding: Literal["greedy", "best_path"] = Field(
        "greedy", description="how a path is decoded at prediction time: greedy (best child of the "
        "chosen parent, level by level) or best_path (the most probable valid path over the whole "
        "tree under the per-parent softmax; training is unchanged)")
    teacher_forcing: float = Field(
        1.0, ge=0.0, le=1.0,
        description="probability (per product) of masking by the true parent during training")
    label_prior: Literal["none", "paths", "names"] = Field(
        "none", description="add scale * cos(text embedding, label embedding) to every level's "
        "logits (prodcat.models.prior): the embedded taxonomy paths or names; none: off")
    label_prior_feature: str = Field("text", description="the text-embedding modality the labels "
                                     "are compared with (its encoder embeds the labels)")
    label_prior_scale: float = Field(10.0, ge=0, description="multiplier of the cosine similarity")
    label_prior_learnable: bool = Field(False, description="learn the scale instead of fixing it")
    lexical_prior: bool = Field(False, description="also add the lexical model's scores to every "
                                "level's logits (best leaf below each class, a learned weight per "
                                "level): a decision-level input; needs 'lexical' in modalities")
    level_weights: list[float] | None = Field(
        None, description="loss weight per level (length L, >= 0, not all 0); None = all 1")
    decision: DecisionSettings = Field(default_factory=DecisionSettings,
                                       description="decision-level fusion (fusion: decision)")

    @field_validator("fusion")
    @classmethod
    def _known_fusion(cls, value: str) -> str:
        if value not in fusions and value != DECISION:
            raise ValueError(f"unknown fusion {value!r}; choose one of: "
                             f"{', '.join([DECISION, *fusions.names()])}")
        return value

    @field_validator("masking")
    @classmethod
    def _known_masking(cls, value: str) -> str:
        if value not in masking_modes:
            raise ValueError(f"unknown masking mode {value!r}; choose one of: "
                             f"{', '.join(masking_modes.names())}")
        return value

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("modalities is empty; name at least one feature, e.g. ['text']")
        if len(set(value)) != len(value) or any(not v.strip() for v in value):
            raise ValueError(f"modalities must be distinct non-empty names, got {value}")
        return value

    @field_validator("level_weights")
    @classmethod
    def _weights(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (any(w < 0 for w in value) or not any(w > 0 for w in value)):
            raise ValueError(f"level_weights must be >= 0 with at least one > 0, got {value}")
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> "ModelConfig":
        if self.lexical_prior and "lexical" not in self.modalities:
            raise ValueError("lexical_prior needs 'lexical' among the modalities")
        if self.label_prior != "none" and self.label_prior_feature not in self.modalities:
            raise ValueError(f"label_prior_feature={self.label_prior_feature!r} is not among the "
                             f"modalities {self.modalities}; add it or set label_prior=none")
        if self.fusion == "attention" and self.hidden_dim % self.num_attention_heads:
            raise ValueError(
                f"hidden_dim={self.hidden_dim} is not divisible by num_attention_heads="
                f"{self.num_attention_heads}; pick e.g. num_attention_heads="
                f"{_largest_divisor(self.hidden_dim, self.num_attention_heads)}")
        return self


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, at_most + 1) if n % d == 0)
