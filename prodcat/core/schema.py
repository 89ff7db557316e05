"""Arrow schemas of the data contracts in DESIGN.md (product table, predictions, rejects)."""

from __future__ import annotations

import pyarrow as pa

#: train: fitting; val: early stopping and model choice; calib: temperatures and the cascade's
#: threshold (never seen by early stopping); test: reported figures only
SPLITS = ("train", "val", "calib", "test")
#: the split assignment the product table records (metadata ``prodcat`` → ``split.version``);
#: tables of another version are refused by the stages that read splits
SPLIT_VERSION = "grouped-3"

PRODUCT_SCHEMA = pa.schema([
    pa.field("product_id", pa.string(), nullable=False),      # "<platform>:<source id>", unique
    pa.field("platform", pa.string(), nullable=False),
    pa.field("title", pa.string(), nullable=False),           # cleaned, capped
    pa.field("description", pa.string()),                     # cleaned plain text, nullable
    pa.field("title_raw", pa.string()),                       # as exported (never silently dropped)
    pa.field("description_raw", pa.string()),
    pa.field("image_uri", pa.string()),                       # absolute path or s3:// URI, nullable
    pa.field("has_image", pa.bool_(), nullable=False),        # False: text-only product
    pa.field("brand", pa.string()),
    pa.field("source_category", pa.string(), nullable=False), # the platform's own " > " path
    pa.field("category_id", pa.int64()),                      # unified taxonomy node, nullable
    pa.field("category_path", pa.string()),
    pa.field("group_id", pa.string(), nullable=False),        # near-duplicate group (its smallest product_id)
    pa.field("split", pa.string(), nullable=False),           # train / val / calib / test, by group
])

REJECT_SCHEMA = pa.schema([
    pa.field("platform", pa.string(), nullable=False),
    pa.field("source_id", pa.string()),                       # null when the row could not be parsed
    pa.field("location", pa.string()),                        # file:line or row number
    pa.field("reason", pa.string(), nullable=False),          # machine-readable reason code
    pa.field("detail", pa.string()),                          # human-readable explanation
    pa.field("raw", pa.string()),                             # the raw record, capped at 2,000 chars
])

PREDICTION_SCHEMA = pa.schema([
    pa.field("product_id", pa.string(), nullable=False),
    pa.field("category_id", pa.int64()),
    pa.field("category_path", pa.string()),                   # the output path's names, " > "-joined
    pa.field("level_ids", pa.list_(pa.int64())),              # the category id output at each level
    pa.field("valid_path", pa.bool_()),                       # a parent → child chain to a leaf
    pa.field("level_confidence", pa.list_(pa.float32())),     # probability in [0, 1] per level
    pa.field("stage", pa.string()),                           # "text" / "multimodal"
    pa.field("model_version", pa.string()),
    pa.field("error", pa.string()),                           # null when fine
    # partial paths (abstention, prodcat.cascade.abstain; null when the full path was asked for):
    # the last level kept (-1: none, category_id null) and why the answer stopped there
    pa.field("stopped_at_level", pa.int32()),
    pa.field("stop_reason", pa.string()),
])
