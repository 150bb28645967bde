"""Client pictures, from bytes to the encoder's tensor: checks, decoding, preprocessing, a decode pool.

Owns everything Pillow does in the service. `checks` works on bytes only (limits, base64, format
sniffing, the `ImageError` family); `decoding` turns bytes into an upright RGB picture; `preprocessing`
turns a picture into the exact tensor the manifest's `ImageSpec` describes; `pool` bounds how many
decodes run at once. May import `service.platform` and `service.domain`; nothing above them.
"""
