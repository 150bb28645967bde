"""Domain fine-tuning of the text model: LoRA adapters trained on pairs mined from the catalogue.

Owns: mining training pairs from anime documents (`pairs`), the split by franchise that keeps every
evaluated anime out of training (`split`), the contrastive training loop (`train`), and the run record
that says what was trained on what (`record`). The merged checkpoint it writes is exported by the normal
`python -m export text` path as the next version of `text_embedder`; nothing here touches the service.

May import: `export` (checkpoint reading, the embedding module), `service.domain.documents`,
`service.domain.composition` and `service.domain.languages` (the same texts the service embeds),
and the relevance harness's franchise grouping, so that "held out" means the same anime in training
and in evaluation.
"""
