"""prodcat: multimodal hierarchical product categorization on Ray.

Follows Gross et al., "Cross-Platform E-Commerce Product Categorization and Recategorization:
A Multimodal Hierarchical Classification Approach" (arXiv 2508.20013).

Importing this package has no side effects: no ``ray.init``, no folders created, no logging set up.
"""

__version__ = "0.1.0"
