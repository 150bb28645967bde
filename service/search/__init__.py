"""Search use cases: text, picture, multimodal and "more like this" questions in, ranked anime out.

Owns the request path below the HTTP handlers: `search_service.SearchService` and
`similarity.SimilarityService` (what the routes call) -> `cached_answers.CachedAnswers` (the answer
cache, wrapped around each use case) -> `text_search`, `image_search`, `multimodal_search`,
`similarity` (the use cases) -> `query_encoders` (each encoder behind the embedding cache) and the
store. Beside them: `text_mode` (hybrid or dense, decided once), `text_lists` (the candidate lists of a
text query), `fusion`, `explain` and `results` (shaping every answer alike); `facets` (the values a
search can filter on, counted) asks the store alone.

May import runtime, schemas, cache, encoders, store, images, domain and platform; never the API layer.
"""
