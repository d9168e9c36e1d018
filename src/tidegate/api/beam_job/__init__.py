"""Beam's Job API (PortableRunner's), over the service layer."""
