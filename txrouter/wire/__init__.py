"""Sans-IO codecs: bytes in, values or errors out. Nothing here imports Twisted."""
