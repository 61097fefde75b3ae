"""wsigraph.slide"""
