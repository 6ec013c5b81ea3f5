"""What the encoder decides as it goes: when a new key frame is needed (``watch``) and how
many bits each part may spend (``rate``)."""
