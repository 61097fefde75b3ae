"""wsigraph.features"""
