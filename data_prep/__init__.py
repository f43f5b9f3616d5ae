"""data_prep: raw corpora -> cleaned, deduplicated, key-split relevance pairs; hard-negative mining."""
