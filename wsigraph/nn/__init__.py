"""wsigraph.nn"""
