"""Values and pure functions every layer shares: the vocabulary of the service.

Owns the anime document, the collection's named vectors (`vectors`: the schema that store, ingest and
search all read), the export manifest (the contract between export and service), languages, text
composition, calibration maths, sparse vectors and the rules that pick a model version. No network, no
engines, no HTTP: a module here reads at most a manifest file. May import only `service.platform`.
"""
