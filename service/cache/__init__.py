"""Caching: where entries live (`backends`: in-process LRU, shared Redis, fail-open) and what is cached.

`policy` holds the wrappers that cache from outside: an encoder wrapped so repeated query texts and
pictures skip the model, a search use case wrapped so repeated requests skip the whole pipeline. The
wrapped object never knows it is cached. May import encoders, domain and platform; never a use case.
"""
