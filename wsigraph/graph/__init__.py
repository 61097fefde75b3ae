"""wsigraph.graph"""
