"""wsigraph.viz"""
