"""Search use cases: text, picture and multimodal queries, "more like this", explanations, fusion.

Owns the path of a query from parsed request to ranked anime: embed (through the encoders), query the
store (one list per named vector), fuse (`fusion`: every fusion rule, whether Qdrant or the façade
executes it), explain and shape the results. No HTTP here: handlers in `service.api` call these.
May import schemas, runtime, cache, encoders, store, images, domain and platform.
"""
